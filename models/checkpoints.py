"""Checkpoints of what training changes, keyed by the configuration that shapes them."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.cache import load_intact, sealed
from models.paths import cache_dir
from models.system import SplitModel


def checkpoint_path(key: str) -> Path:
    return cache_dir() / "checkpoints" / f"{key}.safetensors"


def _state(model: SplitModel, modules: tuple[str, ...] | None) -> dict:
    state = model.trainable_state()
    return state if modules is None else {k: v for k, v in state.items() if k.split(".")[0] in modules}


def save_checkpoint(
    model: SplitModel, key: str, shaped_by: dict, summary: dict, modules: tuple[str, ...] | None = None
) -> Path:
    """Write the trainable tensors (of the top-level ``modules`` only, if given); the metadata records
    the config and a training summary (with the per-step history, so every run from this checkpoint
    can show its training log)."""
    path = checkpoint_path(key)
    with sealed(path) as tmp:
        save_file(
            {k: v.cpu() for k, v in _state(model, modules).items()},
            str(tmp),
            metadata={"shaped_by": json.dumps(shaped_by, sort_keys=True), "summary": json.dumps(summary)},
        )
    return path


def load_checkpoint(model: SplitModel, key: str, modules: tuple[str, ...] | None = None) -> dict | None:
    """Load the checkpoint ``key`` (of the top-level ``modules`` only, if given) into ``model``;
    its training summary, or ``None`` if absent (or corrupt: then it is moved aside, see ``models.cache``)."""
    path = checkpoint_path(key)
    state = load_intact(path, lambda p: load_file(str(p), device=str(next(model.parameters()).device)))
    if state is None:
        return None
    expected = set(_state(model, modules))
    if set(state) != expected:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: "
            f"{len(expected ^ set(state))} tensors differ; delete it to retrain"
        )
    model.load_state_dict(state, strict=False)
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata().get("summary", "{}"))
