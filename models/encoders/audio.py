"""A small log-mel CNN as the audio tokenizer, trained by tokensim.

No pretrained audio weights are installable on the lab machines, so tokensim
trains this encoder once on the data set's training speech (spoken item
names) and caches it; afterwards it is frozen like the other encoders.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.cache import load_or_build
from models.encoders import AUDIO_DIM, AUDIO_TOKENS
from models.paths import cache_dir
from models.progress import progress_bar


class LogMel(nn.Module):
    """Log-mel spectrogram; the filter bank is ``transformers.audio_utils.mel_filter_bank``.

    :input waves: [batch_size, num_samples], float.
    :output log_mel: [batch_size, num_mels, num_frames], float.
    """

    def __init__(self, sample_rate_hz: int = 16000, n_fft: int = 512, hop: int = 256, num_mels: int = 32):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        bank = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=num_mels,
            min_frequency=20.0,
            max_frequency=sample_rate_hz / 2,
            sampling_rate=sample_rate_hz,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("bank", torch.tensor(bank.T, dtype=torch.float32))
        self.register_buffer("window", torch.hann_window(n_fft))
        self.n_fft, self.hop = n_fft, hop

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(waves, self.n_fft, self.hop, window=self.window, return_complex=True).abs().square()
        return torch.log(self.bank @ spec + 1e-6)


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class LogMelCNN(nn.Module):
    """Audio tokens: a 4-block CNN over the log-mel image, pooled over frequency.

    :input waves: [batch_size, num_samples], float in [-1, 1], 16 kHz.
    :output tokens: [batch_size, 8, 128], float (time-ordered).

    >>> tokens = LogMelCNN()(waves)
    """

    def __init__(self, sample_rate_hz: int = 16000):
        super().__init__()
        self.frontend = LogMel(sample_rate_hz)
        self.convs = nn.Sequential(
            _block(1, 16, True), _block(16, 32, True), _block(32, 64, True), _block(64, AUDIO_DIM, False)
        )

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        x = self.frontend(waves)
        # per-clip normalisation: loudness and microphone gain carry no meaning here
        x = (x - x.mean((1, 2), keepdim=True)) / (x.std((1, 2), keepdim=True) + 1e-5)
        x = self.convs(x[:, None]).mean(2)  # [batch, 128, frames]
        return nn.functional.adaptive_avg_pool1d(x, AUDIO_TOKENS).transpose(1, 2)


def train_audio_encoder(waves, labels, settings, seed, sample_rate_hz, device, progress) -> LogMelCNN:
    """Train :class:`LogMelCNN` with a linear classifier on top to name the spoken item.

    :param waves: [num_clips, num_samples], float
    :param labels: [num_clips], int
    :param settings: ``models.config.AudioEncoderTraining``
    :param seed: seed of the initial weights, the batches and the augmentation
    :param sample_rate_hz: the clips' sample rate
    :param device: torch device it trains on
    :param progress: show a progress bar

    On the CPU it trains on one thread: the sums in a convolution's backward pass are split by thread,
    so with another thread count the rounding, and from it the whole run, differs. Measured: the same
    speech on 1 and on 2 threads gave encoders after which the default scenario scored 0.798 and 0.767.
    One thread makes the encoder the same on any core count (it is trained once and cached).
    """
    with one_thread(device):
        return _train_audio_encoder(waves, labels, settings, seed, sample_rate_hz, device, progress)


@contextmanager
def one_thread(device: torch.device | str):
    """Run a block on one CPU thread (on a GPU: as it is), the thread count put back afterwards."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train_audio_encoder(waves, labels, settings, seed, sample_rate_hz, device, progress) -> LogMelCNN:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoder = LogMelCNN(sample_rate_hz).to(device)
    head = nn.Linear(AUDIO_DIM, int(labels.max()) + 1).to(device)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.lr)
    steps_per_epoch = -(-len(waves) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, settings.lr, total_steps=settings.epochs * steps_per_epoch
    )
    x_all, y_all = torch.from_numpy(waves).to(device), torch.from_numpy(labels).long().to(device)
    max_shift = sample_rate_hz // 10
    encoder.train()
    bar = progress_bar(total=settings.epochs * steps_per_epoch, enabled=progress, desc="training the log-mel CNN")
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(x_all), generator=generator).split(settings.batch_size):
            # random time shift and gain: the encoder must not key on where or how loud the word is
            shift = int(torch.randint(-max_shift, max_shift + 1, (1,), generator=generator))
            gain = torch.empty(len(batch), 1).uniform_(0.5, 1.5, generator=generator).to(device)
            batch = batch.to(device)
            x = torch.roll(x_all[batch], shift, dims=1) * gain
            loss = nn.functional.cross_entropy(head(encoder(x).mean(1)), y_all[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            bar.update()
    bar.close()
    return encoder.eval().requires_grad_(False)


@torch.no_grad()
def audio_encoder_accuracy(encoder: LogMelCNN, train: tuple, test: tuple) -> float:
    """Nearest-class-mean accuracy of frozen, time-averaged tokens on ``test``,
    class means from ``train``; each is ``(waves, labels)``. A check of the
    cached encoder, not used for training."""

    device = next(encoder.parameters()).device

    def embed(waves):
        chunks = np.array_split(waves, -(-len(waves) // 256))
        return torch.cat([encoder(torch.from_numpy(w).to(device)).mean(1).cpu() for w in chunks])

    train_tokens, train_labels = embed(train[0]), torch.from_numpy(train[1]).long()
    classes = train_labels.unique()
    means = torch.stack([train_tokens[train_labels == c].mean(0) for c in classes])
    predicted = classes[torch.cdist(embed(test[0]), means).argmin(1)]
    return float((predicted == torch.from_numpy(test[1]).long()).float().mean())


def load_or_train_audio_encoder(
    key: str,
    load_training_speech,
    load_validation_speech,
    settings,
    seed: int,
    sample_rate_hz: int = 16000,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> LogMelCNN:
    """The cached encoder for ``key`` (which names the speech and the settings), trained first if missing.

    :param load_training_speech: callable returning ``(waves, labels)`` of the training split
    :param load_validation_speech: the same for the validation split (voices in neither train nor test);
        its nearest-class-mean accuracy is recorded in the cached file's metadata (``tokensim info`` shows it)
    """
    path = cache_dir() / "encoders" / f"logmel-cnn-{key}.safetensors"

    def build(tmp: Path) -> None:
        waves, labels = load_training_speech()
        encoder = train_audio_encoder(waves, labels, settings, seed, sample_rate_hz, device, progress)
        accuracy = audio_encoder_accuracy(encoder, (waves, labels), load_validation_speech())
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
            str(tmp),
            metadata={
                "settings": json.dumps(settings.model_dump()),
                "seed": str(seed),
                "validation_nearest_mean_accuracy": f"{accuracy:.4f}",
            },
        )

    # trained once (under a lock shared by processes), saved, and then loaded like a cached one: a run
    # that trains it and one that loads it use the same tensors
    encoder = LogMelCNN(sample_rate_hz)
    encoder.load_state_dict(load_or_build(path, lambda p: load_file(str(p)), build))
    return encoder.to(device).eval().requires_grad_(False)
