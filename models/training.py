"""Stage 2, task-oriented fine-tuning end to end with the channel in the loop; the task sampler both stages use."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from models.features import TASK_INDEX, SplitFeatures
from models.progress import progress_bar
from models.system import Channel, SplitModel


class TaskSampler:
    """Task slots as the cell runs them: one task of every group per slot.

    Rows are ordered slot-major, ``row = slot * num_groups + group``, which is
    the order the PHY's channel function expects.

    :param tables: per group, the arrays of a data set's ``tasks()`` (equal lengths)
    :param present: ``{modality: [num_groups] bool}``, which group sends what
    :param features: encoder outputs of the split the tables index
    """

    def __init__(self, tables: list[dict], present: dict[str, torch.Tensor], features: SplitFeatures):
        device = next(iter(features.tokens.values())).device

        def stack(column):  # [num_tasks, num_groups]
            return torch.as_tensor(np.stack([column(t) for t in tables], 1), device=device)

        self.rows = {m: stack(lambda t, column=TASK_INDEX[m]: t[column]) for m in features.tokens}
        self.answer = stack(lambda t: t["answer"])
        self.question_type = stack(lambda t: t["question_type"])
        self.labels = {"image": stack(lambda t: t["image_label"]), "audio": stack(lambda t: t["clip_label"])}
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
            "item": {m: r[rows, group].flatten() for m, r in self.rows.items()},
            "label": {m: lab[rows, group].flatten() for m, lab in self.labels.items()},
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


def adamw_with_schedule(params, settings):
    """AdamW with a linear warm-up over the first 5 % of ``settings.steps``, then cosine decay to zero.

    ``params``: parameters, or parameter groups (dicts with ``params`` and a ``lr`` each).
    """
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, settings.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / settings.steps))))
    )
    return optimizer, schedule


def parameter_groups(model: SplitModel, settings) -> list[dict]:
    """Stage 2's trainable parameters in three groups, each at ``settings.lr`` times its multiplier:
    the transceivers (aligned in stage 1), the LoRA adapters and the answer head."""
    groups: dict[str, list] = {"transceivers": [], "lora": [], "head": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            kind = "lora" if "lora_" in name else "head" if name.startswith("backbone.") else "transceivers"
            groups[kind].append(p)
    multipliers = settings.lr_multipliers.model_dump()
    return [{"params": ps, "lr": settings.lr * multipliers[k], "name": k} for k, ps in groups.items() if ps]


@torch.no_grad()
def task_accuracy(model: SplitModel, channel: Channel, sampler: TaskSampler, batch_size: int = 256) -> float:
    """Share of ``sampler``'s tasks answered right through ``channel``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in sampler.in_order(max(1, batch_size // sampler.num_groups)):
        logits = model(batch["features"], channel, batch["present"])["logits"]
        correct += (logits.argmax(-1) == batch["answer"]).sum().item()
        total += len(batch["answer"])
    model.train(was_training)
    return correct / total


def finetune_split_model(
    model: SplitModel,
    channel: Channel,
    sampler: TaskSampler,
    settings,
    seed: int,
    progress: bool = True,
    validate: Callable[[], float] | None = None,
    validation_every: int = 0,
    patience: int = 0,
) -> list[dict]:
    """Stage 2: fine-tune ``model`` on tasks from ``sampler`` through ``channel``.

    Every trainable parameter (transceivers, LoRA adapters, head) is trained, each group at its own
    learning rate (:func:`parameter_groups`). With ``validate``, the model ends at the weights of its
    best validation accuracy (the latest of equals), and training stops early once ``patience``
    validations in a row (0: never) have not beaten the best.

    :param settings: ``models.config.FinetuneConfig``
    :param validate: returns a held-out accuracy; called every ``validation_every`` steps and after the last
    :output history: one ``{"stage", "step", "loss", "accuracy"[, "val_accuracy"]}`` per step; the row of
        the weights kept has ``"selected": True``
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout in the LoRA adapters draws from the global generator
    optimizer, schedule = adamw_with_schedule(parameter_groups(model, settings), settings)
    num_slots = max(1, settings.batch_size // sampler.num_groups)
    history = []
    best, best_row, best_state, stale = -math.inf, None, None, 0
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
        history.append({"stage": "finetune", "step": step, "loss": loss.item(), "accuracy": accuracy})
        last = step + 1 == settings.steps
        if validate is not None and ((validation_every and (step + 1) % validation_every == 0) or last):
            val = history[-1]["val_accuracy"] = validate()
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val:.3f}", refresh=False)
            stale = 0 if val > best else stale + 1  # an equal accuracy is no new best for the stopping rule
            if val >= best:  # but its (later) weights are kept
                best, best_row = val, history[-1]
                best_state = {k: v.clone() for k, v in model.trainable_state().items()}
            if patience and stale >= patience:
                break
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}", refresh=False)
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
        best_row["selected"] = True
    model.eval()
    return history
