"""Task-oriented fine-tuning, end to end with the channel in the loop."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from models.features import TASK_INDEX, SplitFeatures, question_index
from models.progress import progress_bar
from models.system import Channel, SplitModel


class TaskSampler:
    """Task slots as the cell runs them: one task of every group per slot.

    Rows are ordered slot-major, ``row = slot * num_groups + group``, which is
    the order the PHY's channel function expects.

    :param tables: per group, the arrays of ``FashionAVQA.tasks`` (equal lengths)
    :param present: ``{modality: [num_groups] bool}``, which group sends what
    :param features: encoder outputs of the split the tables index
    """

    def __init__(self, tables: list[dict], present: dict[str, torch.Tensor], features: SplitFeatures):
        device = next(iter(features.tokens.values())).device

        def stack(column):  # [num_tasks, num_groups]
            return torch.as_tensor(np.stack([column(t) for t in tables], 1), device=device)

        tables = [{**t, "question_index": question_index(t["question"])} for t in tables]
        self.rows = {m: stack(lambda t, column=TASK_INDEX[m]: t[column]) for m in features.tokens}
        self.answer = stack(lambda t: t["answer"])
        self.question_type = stack(lambda t: t["question_type"])
        self.present = {m: p.to(device) for m, p in present.items()}
        self.features = features
        self.num_tasks, self.num_groups = self.answer.shape

    def batch(self, rows: torch.Tensor) -> dict:
        """Tasks at ``rows`` [num_slots, num_groups] (row of each group's table)."""
        group = torch.arange(self.num_groups, device=rows.device).expand_as(rows)
        num_slots = rows.shape[0]
        return {
            "features": self.features.gather({m: r[rows, group].flatten() for m, r in self.rows.items()}),
            "present": {m: p.repeat(num_slots) for m, p in self.present.items()},
            "answer": self.answer[rows, group].flatten(),
            "question_type": self.question_type[rows, group].flatten(),
            "group": group.flatten(),
        }

    def sample(self, num_slots: int, generator: torch.Generator) -> dict:
        rows = torch.randint(0, self.num_tasks, (num_slots, self.num_groups), generator=generator)
        return self.batch(rows.to(self.answer.device))

    def in_order(self, num_slots: int):
        """Every task once: batches of up to ``num_slots`` slots."""
        for start in range(0, self.num_tasks, num_slots):
            rows = torch.arange(start, min(start + num_slots, self.num_tasks), device=self.answer.device)
            yield self.batch(rows[:, None].expand(-1, self.num_groups))


def train_split_model(
    model: SplitModel, channel: Channel, sampler: TaskSampler, settings, seed: int, progress: bool = True
) -> list[dict]:
    """Fine-tune ``model`` on tasks from ``sampler`` through ``channel``.

    AdamW on the trainable parameters (transceivers, LoRA adapters, head), a
    short linear warm-up then cosine decay.

    :param settings: ``models.config.TrainingConfig``
    :output history: one ``{"step", "loss", "accuracy"}`` per step
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout in the LoRA adapters draws from the global generator
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, settings.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / settings.steps))))
    )
    num_slots = max(1, settings.batch_size // sampler.num_groups)
    history = []
    model.train()
    bar = progress_bar(range(settings.steps), enabled=progress, desc="fine-tuning")
    for step in bar:
        batch = sampler.sample(num_slots, generator)
        out = model(batch["features"], channel, batch["present"])
        loss = nn.functional.cross_entropy(out["logits"], batch["answer"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        accuracy = (out["logits"].argmax(-1) == batch["answer"]).float().mean().item()
        history.append({"step": step, "loss": loss.item(), "accuracy": accuracy})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}", refresh=False)
    model.eval()
    return history
