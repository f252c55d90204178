"""The two training stages of a scenario's split model, through its uplink: align (stage 1) and fine-tune
(stage 2), each saved under the checkpoint key of what shapes it. :meth:`sim.engine.Simulation.train` decides
which run and which load."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from models.alignment import align_transceivers
from models.cache import exclusive
from models.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from models.training import finetune_split_model, task_accuracy
from sim.checkpoint_plan import ALIGNED_MODULES, checkpoint_key
from sim.runtime import sionna_rng_at

if TYPE_CHECKING:
    from sim.engine import Simulation


def align(simulation: Simulation, force: bool) -> dict:
    """Stage 1: align the transceivers (or load the aligned checkpoint, which fine-tuning variants share)."""
    key, shaped_by = checkpoint_key(simulation.scenario, "align")
    if not force:
        summary = load_checkpoint(simulation.model, key, modules=ALIGNED_MODULES)
        if summary is not None:
            return {**summary, "loaded": True}
    with exclusive(checkpoint_path(key)):  # fine-tuning variants share it: one aligns, the others wait
        return _align_locked(simulation, key, shaped_by, force)


def _align_locked(simulation: Simulation, key: str, shaped_by: dict, force: bool) -> dict:
    if not force:
        summary = load_checkpoint(simulation.model, key, modules=ALIGNED_MODULES)
        if summary is not None:
            return {**summary, "loaded": True}
    s = simulation.scenario
    sampler = simulation.sampler("train", s.training.train_tasks_per_group)
    generator = simulation.runtime.enter("align")
    channel = simulation.uplink.training_channel(s.training.alignment.snr_db_range, generator)
    history = align_transceivers(
        simulation.model,
        channel,
        sampler,
        simulation.dataset.captions(),
        simulation.dataset.questions("train"),
        s.training.alignment,
        s.seed,
        simulation.progress,
    )
    summary = {"stage": "align", **_tail_means(history, ("loss",)), "history": history}
    save_checkpoint(simulation.model, key, shaped_by, summary, modules=ALIGNED_MODULES)
    return {**summary, "loaded": False}


def finetune(simulation: Simulation, aligned_history: list[dict]) -> dict:
    """Stage 2: fine-tune the split model through the uplink, validating as it goes; saves the checkpoint."""
    s = simulation.scenario
    sampler = simulation.sampler("train", s.training.train_tasks_per_group)
    validation = simulation.sampler("validation", s.training.validation_tasks_per_group)
    generator = simulation.runtime.enter("finetune")
    channel = simulation.uplink.training_channel(s.training.finetune.snr_db_range, generator)

    def validate() -> float:
        # common random numbers: each validation draws the same SNRs, fading and noise, so two of them
        # differ by the weights alone, and the training's draws do not depend on when it validates
        seed = simulation.runtime.seed_of("validation")
        with sionna_rng_at(seed), torch.random.fork_rng(devices=[]):
            snr_generator = torch.Generator().manual_seed(seed)
            channel = simulation.uplink.training_channel(s.training.finetune.snr_db_range, snr_generator)
            return task_accuracy(simulation.model, channel, validation, s.evaluation.batch_size)

    history = finetune_split_model(
        simulation.model,
        channel,
        sampler,
        s.training.finetune,
        s.seed,
        simulation.progress,
        validate=validate,
        validation_every=s.training.validation_every,
        patience=s.training.patience,
    )
    selected = next(h for h in history if h.get("selected"))
    summary = {
        "stage": "finetune",
        **_tail_means(history, ("loss", "accuracy")),
        "final_val_accuracy": history[-1]["val_accuracy"],
        "selected_step": selected["step"],
        "selected_val_accuracy": selected["val_accuracy"],
        "steps_run": len(history),
        "history": aligned_history + history,
    }
    save_checkpoint(simulation.model, simulation.checkpoint, simulation.shaped_by, summary)
    return {**summary, "loaded": False}


def _tail_means(history: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """``final_<key>``: mean over the last tenth of the steps (one step is noisy)."""
    tail = history[-max(1, len(history) // 10) :]
    return {f"final_{k}": float(np.mean([h[k] for h in tail])) for k in keys}
