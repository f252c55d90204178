"""Stage 1, cross-modal alignment: received tokens pulled towards text, with the channel in the loop.

Each non-text modality's received tokens (after its receiver, in the
backbone's embedding space) are mean-pooled and pulled towards the pooled
backbone embedding of their caption by InfoNCE (fashion-avqa: the class's; a
folder set: the task's, where it has one); the received question
tokens are kept close to the backbone's own embedding of the question by a
normalised MSE. Only the transmitters and receivers train; the backbone is
not run, only its (frozen) input embedding table is read.
"""

from __future__ import annotations

import torch
from torch import nn

from models.progress import progress_bar
from models.system import Channel, SplitModel
from models.training import TaskSampler, adamw_with_schedule


class InfoNCELoss(nn.Module):
    """InfoNCE over a batch of (query, key) pairs on cosine similarity.

    ``loss = -mean_i log softmax_j(cos(q_i, k_j) / tau)[i]``: each query's
    positive is the key of its own row, every other key of the batch is a
    negative. With ``symmetric`` the key-to-query direction is averaged in
    (CLIP's loss); the paper uses the query-to-key direction only.

    When ``labels`` are given, keys with the query's label other than its own
    are left out of its softmax: with ten classes a batch repeats captions, and
    a repeat of the right caption is no negative.

    :param temperature: tau > 0
    :param symmetric: average both directions

    :input queries: [batch_size, dim], float.
    :input keys: [batch_size, dim], float.
    :input labels: [batch_size], int, or ``None``.
    :output loss: [], float.

    >>> InfoNCELoss(0.07)(torch.randn(8, 16), torch.randn(8, 16)).shape
    torch.Size([])
    """

    def __init__(self, temperature: float, symmetric: bool = False):
        super().__init__()
        self.temperature = temperature
        self.symmetric = symmetric

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = nn.functional.normalize(queries, dim=-1) @ nn.functional.normalize(keys, dim=-1).T
        logits = logits / self.temperature
        if labels is not None:
            repeat = (labels[:, None] == labels[None, :]) & ~torch.eye(
                len(labels), dtype=torch.bool, device=labels.device
            )
            logits = logits.masked_fill(repeat, float("-inf"))
        target = torch.arange(len(logits), device=logits.device)
        loss = nn.functional.cross_entropy(logits, target)
        if self.symmetric:
            loss = (loss + nn.functional.cross_entropy(logits.T, target)) / 2
        return loss


def normalised_mse(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the target's mean power: scale-free, 1 for an all-zero estimate."""
    return (estimate - target).square().mean() / target.square().mean().clamp_min(1e-12)


def align_transceivers(
    model: SplitModel,
    channel: Channel,
    sampler: TaskSampler,
    captions: list[str],
    questions: list[str],
    settings,
    seed: int,
    progress: bool = True,
) -> list[dict]:
    """Stage 1: train ``model``'s transmitters and receivers to put received tokens where the text is.

    :param captions: the texts the sampler's ``label`` columns index (a class's caption in fashion-avqa,
        a task's in a folder set); label -1 marks an item without one
    :param questions: the texts the text transmitter carries, in ``sampler``'s question order
    :param settings: ``models.config.AlignmentConfig``
    :output history: one ``{"stage", "step", "loss", "infonce_<m>"..., "reconstruction"}`` per step
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    text_length = model.transmitters["text"].length if "text" in model.transmitters else 1
    with torch.no_grad():  # [num_captions, d_model]; a data set may have none (then no InfoNCE term)
        caption_targets = model.backbone.embed_text(captions, 1)[:, 0] if captions else None
        question_targets = model.backbone.embed_text(questions, text_length)  # [num_questions, L, d_model]
    infonce = InfoNCELoss(settings.temperature, settings.symmetric)
    params = [p for part in (model.transmitters, model.receivers) for p in part.parameters()]
    optimizer, schedule = adamw_with_schedule(params, settings)
    num_slots = max(1, settings.batch_size // sampler.num_groups)
    history = []
    model.train()
    bar = progress_bar(range(settings.steps), enabled=progress, desc="alignment")
    for step in bar:
        batch = sampler.sample(num_slots, generator)
        received = channel(model.transmit(batch["features"]))
        terms = {}
        for m in model.modalities:
            sent = batch["present"][m]
            if m != "text":  # an item without a caption (label -1) is not aligned
                sent = sent & (batch["label"][m] >= 0)
            if not sent.any():
                continue
            embedded = model.receivers[m](received[m][sent])  # [n, L, d_model]
            if m == "text":
                target = question_targets[batch["item"]["text"][sent]]
                terms["reconstruction"] = settings.reconstruction_weight * normalised_mse(embedded, target)
            else:
                labels = batch["label"][m][sent]
                terms[f"infonce_{m}"] = infonce(embedded.mean(1), caption_targets[labels], labels)
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append({"stage": "align", "step": step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return history


@torch.no_grad()
def caption_similarity(
    model: SplitModel, channel: Channel, sampler: TaskSampler, captions: list[str], modalities: tuple[str, ...]
) -> dict[str, dict]:
    """Cosine similarity of each received token set (pooled) of ``modalities`` to every class caption,
    from one pass of ``sampler``'s tasks through ``channel``.

    :output: per modality, ``"similarity"`` [n, num_classes] and ``"label"`` [n] over every task of
        ``sampler`` whose group sends that modality.
    """
    model.eval()
    targets = nn.functional.normalize(model.backbone.embed_text(captions, 1)[:, 0], dim=-1)
    found = {m: {"similarity": [], "label": []} for m in modalities}
    for batch in sampler.in_order(256):
        received = channel(model.transmit(batch["features"]))
        for m in modalities:
            sent = batch["present"][m]
            pooled = nn.functional.normalize(model.receivers[m](received[m][sent]).mean(1), dim=-1)
            found[m]["similarity"].append(pooled @ targets.T)
            found[m]["label"].append(batch["label"][m][sent])
    return {m: {k: torch.cat(v) for k, v in f.items()} for m, f in found.items()}
