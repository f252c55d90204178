"""Figures of a run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from models.paths import atomic_path  # noqa: E402

STAGE_LABELS = {"align": "stage 1: alignment", "finetune": "stage 2: fine-tuning"}


def plot_convergence(history: list[dict], path: Path, title: str = "") -> Path:
    """Loss vs step for each training stage, one panel per stage, with the validation
    accuracy of fine-tuning on a second axis. Steps count from the start of each stage."""
    stages = [s for s in STAGE_LABELS if any(h["stage"] == s for h in history)]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.5 * len(stages), 2.8), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = [h for h in history if h["stage"] == stage]
        steps = [h["step"] for h in rows]
        losses = np.array([h["loss"] for h in rows])
        ax.plot(steps, losses, lw=0.6, color="0.6", label="loss per step")
        window = max(1, len(rows) // 30)
        # mean of the last ``window`` steps (fewer at the start)
        counts = np.minimum(np.arange(1, len(losses) + 1), window)
        smooth = np.convolve(losses, np.ones(window))[: len(losses)] / counts
        ax.plot(steps, smooth, lw=1.4, color="C0", label=f"running mean ({window} steps)")
        ax.set_xlabel("step")
        ax.set_ylabel("InfoNCE + text NMSE" if stage == "align" else "cross-entropy")
        ax.set_title(STAGE_LABELS[stage], fontsize=9)
        validated = [h for h in rows if h.get("val_accuracy") not in (None, "")]
        if validated:
            twin = ax.twinx()
            twin.plot([h["step"] for h in validated], [h["val_accuracy"] for h in validated], "o-", ms=3, color="C3")
            twin.set_ylabel("validation accuracy", color="C3")
            twin.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format=path.suffix.lstrip("."))
    plt.close(fig)
    return path
