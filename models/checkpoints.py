"""Checkpoints of what training changes, keyed by the configuration that shapes them."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.paths import atomic_path, cache_dir
from models.system import SplitModel


def checkpoint_path(key: str) -> Path:
    return cache_dir() / "checkpoints" / f"{key}.safetensors"


def save_checkpoint(model: SplitModel, key: str, shaped_by: dict, summary: dict) -> Path:
    """Write the trainable tensors; the metadata records the config and a training summary
    (with the per-step history, so every run from this checkpoint can show its training log)."""
    path = checkpoint_path(key)
    with atomic_path(path) as tmp:
        save_file(
            {k: v.cpu() for k, v in model.trainable_state().items()},
            str(tmp),
            metadata={"shaped_by": json.dumps(shaped_by, sort_keys=True), "summary": json.dumps(summary)},
        )
    return path


def load_checkpoint(model: SplitModel, key: str) -> dict | None:
    """Load the checkpoint ``key`` into ``model``; its training summary, or ``None`` if absent."""
    path = checkpoint_path(key)
    if not path.is_file():
        return None
    state = load_file(str(path), device=str(next(model.parameters()).device))
    expected = set(model.trainable_state())
    if set(state) != expected:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: "
            f"{len(expected ^ set(state))} tensors differ; delete it to retrain"
        )
    model.load_state_dict(state, strict=False)
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata().get("summary", "{}"))
