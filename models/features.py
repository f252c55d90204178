"""Frozen encoder outputs, computed once per (encoder, data split) and cached on disk.

Training and evaluation never run an encoder on the hot path: they gather
rows of these tensors by the indices a task holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from models.cache import load_or_build
from models.paths import cache_dir, digest
from models.progress import progress_bar

FEATURES_VERSION = 1  # bump when an encoder's preprocessing changes


# Which task column indexes each modality's rows.
TASK_INDEX = {"text": "question_index", "image": "image_index", "audio": "clip_index"}


@dataclass
class SplitFeatures:
    """Encoder tokens of every item of one split, per modality.

    ``tokens[m]``: [num_items, L_m, D_m] (the split's images, clips, or question texts
    ``dataset.questions(split)``, in the data set's order); ``lengths[m]``: [num_items] valid tokens
    (padded text) or ``None``; ``encoder_flops[m]``: FLOPs to encode one item.
    """

    tokens: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor | None]
    encoder_flops: dict[str, int]

    def gather(self, index: dict[str, torch.Tensor]) -> dict:
        """Features of ``n`` tasks from their rows ``index[m]`` [n]:
        ``{modality: {"tokens": [n, L, D], "lengths": [n] or None}}``."""
        return {
            m: {"tokens": self.tokens[m][i], "lengths": None if self.lengths[m] is None else self.lengths[m][i]}
            for m, i in index.items()
        }


def audio_encoder_key(dataset, settings) -> str:
    """Key of the audio encoder trained on ``dataset``'s train clips with ``settings``."""
    return digest(
        {
            "speech": dataset.speech_key("train"),
            "training": settings.model_dump(),
            "version": FEATURES_VERSION,
        }
    )


def load_features(
    dataset, modalities, models, audio_training, split: str, device: torch.device, progress: bool = True
) -> SplitFeatures:
    """Encoder outputs of ``split`` for ``modalities``, from the cache or computed (and cached) now.

    Each cache entry is keyed by the encoder and by what the data set says decides the items
    (``image_key``, ``speech_key``, the question texts): other data, other features.

    :param dataset: a data set of :data:`models.data.DATASETS`
    :param models: ``models.config.ModelsConfig``
    :param audio_training: ``models.config.AudioEncoderTraining``
    """
    computed = {}
    if "image" in modalities:
        computed["image"] = _cached(
            "image",
            {"encoder": models.image_encoder, "px": models.image_size_px, **dataset.image_key(split)},
            lambda: _encode_images(dataset, models.image_size_px, split, device, progress),
        )
    if "audio" in modalities:
        audio_key = audio_encoder_key(dataset, audio_training)
        computed["audio"] = _cached(
            "audio",
            {"encoder": audio_key, "split": split, "speech": dataset.speech_key(split)},
            lambda: _encode_speech(dataset, audio_key, audio_training, split, device, progress),
        )
    if "text" in modalities:
        questions = dataset.questions(split)
        computed["text"] = _cached(
            "text",
            {"encoder": models.text_encoder, "max_tokens": models.text_max_tokens, "questions": questions},
            lambda: _encode_questions(models.text_encoder, models.text_max_tokens, questions, device),
        )
    return SplitFeatures(
        tokens={m: c["tokens"].to(device) for m, c in computed.items()},
        lengths={m: c["lengths"].to(device) if "lengths" in c else None for m, c in computed.items()},
        encoder_flops={m: int(c["flops"]) for m, c in computed.items()},
    )


def count_flops(fn, *args) -> int:
    """FLOPs of one call, as ``torch.utils.flop_counter`` counts them (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def _cached(kind: str, key: dict, compute) -> dict[str, torch.Tensor]:
    """``compute()``'s tensors, from the cache or computed now and cached. Floats are stored as float16
    (half the disk; the tokens are projected and sent through noise anyway) and returned as float32 from
    the stored values either way, so a run that computes them and one that loads them agree to the bit."""
    path = cache_dir() / "features" / f"{kind}-{digest({**key, 'version': FEATURES_VERSION})}.safetensors"

    def build(tmp: Path) -> None:
        stored = {k: (v.half() if v.is_floating_point() else v).cpu().contiguous() for k, v in compute().items()}
        save_file(stored, str(tmp))

    loaded = load_or_build(path, lambda p: load_file(str(p)), build)
    return {k: v.float() if v.is_floating_point() else v for k, v in loaded.items()}


@torch.no_grad()
def _encode_images(dataset, image_size_px, split, device, progress) -> dict[str, torch.Tensor]:
    from models.encoders.image import EfficientNetLite0Encoder

    encoder = EfficientNetLite0Encoder(image_size_px).to(device)
    images, _ = dataset.images(split)
    batches = np.array_split(images, -(-len(images) // 256))
    tokens = [
        encoder(torch.tensor(b, device=device)).cpu()
        for b in progress_bar(batches, enabled=progress, desc=f"EfficientNet-Lite0 on {split} images")
    ]
    return {
        "tokens": torch.cat(tokens),
        "flops": torch.tensor(count_flops(encoder, torch.tensor(images[:1], device=device))),
    }


@torch.no_grad()
def _encode_speech(dataset, audio_key, audio_training, split, device, progress) -> dict[str, torch.Tensor]:
    from models.encoders.audio import load_or_train_audio_encoder

    with torch.enable_grad():
        encoder = load_or_train_audio_encoder(
            audio_key,
            lambda: dataset.speech("train"),
            lambda: dataset.speech("validation"),
            audio_training,
            seed=dataset.seed,
            sample_rate_hz=dataset.config.sample_rate_hz,
            device=device,
            progress=progress,
        )
    waves, _ = dataset.speech(split)
    tokens = [encoder(torch.from_numpy(b).to(device)).cpu() for b in np.array_split(waves, -(-len(waves) // 256))]
    return {
        "tokens": torch.cat(tokens),
        "flops": torch.tensor(count_flops(encoder, torch.from_numpy(waves[:1]).to(device))),
    }


@torch.no_grad()
def _encode_questions(name, max_tokens, questions, device) -> dict[str, torch.Tensor]:
    from models.encoders.text import HFTextEncoder

    encoder = HFTextEncoder(name, max_tokens).to(device)
    out = encoder(list(questions))
    return {
        "tokens": out["tokens"].cpu(),
        "lengths": out["lengths"].cpu(),
        "flops": torch.tensor(count_flops(encoder, list(questions[:1]))),
    }
