"""The paper's claims as tables and figures: ``OUT/index.md`` and its figures, from the records of
``tokensim reproduce`` (:mod:`sim.reproduce` runs them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.reproduce_plan import (
    ARMS,
    CHANNEL_LABELS,
    DEFAULT_TEMPERATURE,
    PAPER_SCENARIOS,
    RETRIEVAL_SNR_DB,
    TOKEN_IMAGE_SIZE_PX,
    Plan,
)


def _mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return "–"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def steps_to(validation: list, target: float) -> int | None:
    """First fine-tuning step (counted from 1) whose validation accuracy reaches ``target``, or ``None``."""
    return next((step + 1 for step, accuracy in validation if accuracy >= target), None)


def summarise(records: list[dict], plan: Plan, out: Path, wall_s: float | None = None) -> str:
    """``out/index.md`` (tables) and figures from the run records; returns the markdown."""
    from sim.results import write_text

    by = {}
    for r in records:
        by.setdefault(r["experiment"], []).append(r)
    lines = [
        "# The paper's claims on the paper set",
        "",
        "Made by `tokensim reproduce` from the run records in `runs/` (one JSON per training run). "
        "Accuracy is over every test task of the paper set's one group (3 users: question text, image, speech), "
        "mean ± sample std over seeds where there are several.",
        "",
    ]
    if "snr" in by:
        lines += _snr_section(by["snr"], plan, out)
    if "temperature" in by or "temperature" in plan.experiments:
        same = [r for r in by.get("snr", []) if r["channel"] == "awgn" and r["info"]["aligned"]]
        lines += _temperature_section(
            by.get("temperature", [])
            + [{**r, "info": {**r["info"], "temperature": DEFAULT_TEMPERATURE}} for r in same],
            plan,
        )
    if "tokens" in by:
        lines += _tokens_section(by["tokens"], plan)
    if "per-snr" in by:
        lines += _per_snr_section(by["per-snr"], by.get("snr", []), plan)
    train_s = sum(r["train_s"] for r in records if r.get("trained_now"))
    total_s = sum(r["total_s"] for r in records)
    lines += [
        "## Cost",
        "",
        f"{len(records)} runs; their training and evaluation took {total_s / 3600:.2f} CPU-process hours "
        f"({train_s / 3600:.2f} h of it training)"
        + (f", {wall_s / 60:.0f} min of wall time for this invocation" if wall_s else "")
        + ".",
        "",
    ]
    text = "\n".join(lines)
    write_text(Path(out) / "index.md", text)
    return text


def _snr_section(records, plan, out) -> list[str]:
    snrs = plan.snrs_db
    lines = ["## Accuracy vs SNR, with and without alignment (one model over −10…25 dB)", ""]
    curves, val_curves = {}, {}
    for channel in PAPER_SCENARIOS:
        lines += [f"**{CHANNEL_LABELS[channel]}**", ""]
        lines += ["| SNR dB | " + " | ".join(f"{s:g}" for s in snrs) + " |", "|---|" + "---:|" * len(snrs)]
        acc = {}
        for aligned in (True, False):
            runs = [r for r in records if r["channel"] == channel and r["info"]["aligned"] == aligned]
            acc[aligned] = np.array([[r["accuracy"][f"{s:g}"] for s in snrs] for r in runs])
            val_curves[channel, aligned] = [r["validation"] for r in runs]
            lines.append(
                f"| {ARMS[aligned]} ({len(runs)} seeds) | "
                + " | ".join(_mean_std(acc[aligned][:, i]) for i in range(len(snrs)))
                + " |"
            )
        if len(acc[True]) == len(acc[False]) and len(acc[True]):
            diff = acc[True] - acc[False]
            lines.append("| aligned − baseline | " + " | ".join(_mean_std(diff[:, i]) for i in range(len(snrs))) + " |")
        lines.append("")
        curves[channel] = acc

    def accuracy(ax, channel):
        for aligned, style in ((True, "o-"), (False, "s--")):
            a = curves[channel][aligned]
            if len(a):
                ax.errorbar(
                    snrs,
                    a.mean(0),
                    yerr=a.std(0, ddof=1) if len(a) > 1 else None,
                    fmt=style,
                    ms=4,
                    capsize=2,
                    label=f"{ARMS[aligned]} ({len(a)} seeds)",
                )

    _channel_panels(accuracy, "SNR (dB)", "test accuracy", Path(out) / "accuracy_vs_snr.png")
    lines += ["![accuracy vs SNR](accuracy_vs_snr.png)", ""]

    def validation(ax, channel):
        for aligned, style in ((True, "-"), (False, "--")):
            runs = val_curves[channel, aligned]
            if runs:
                steps = [s + 1 for s, _ in runs[0]]
                ax.plot(steps, np.mean([[a for _, a in v] for v in runs], 0), style, label=ARMS[aligned])
        for target in plan.accuracy_targets:
            ax.axhline(target, color="0.6", lw=0.8)

    _channel_panels(validation, "fine-tuning step", "validation accuracy", Path(out) / "validation_vs_step.png")
    lines += [
        "Validation accuracy (held-out tasks, SNR drawn over the training range) during fine-tuning, "
        "mean over seeds; grey lines: the targets of the token-length table "
        f"({', '.join(f'{t:g}' for t in plan.accuracy_targets)}).",
        "",
        "![validation accuracy vs step](validation_vs_step.png)",
        "",
    ]
    return lines


def _temperature_section(records, plan) -> list[str]:
    snrs = plan.snrs_db
    lines = [
        "## InfoNCE temperature (AWGN, aligned)",
        "",
        f"Caption retrieval right after stage 1 on held-out images and clips at {RETRIEVAL_SNR_DB:g} dB: top-1 over "
        "the 10 class captions, and the cosine similarity of matched minus mismatched pairs. "
        "Then the test accuracy after stage 2.",
        "",
        "| τ | seeds | image top-1 | image cos margin | speech top-1 | speech cos margin | "
        + " | ".join(f"acc {s:g} dB" for s in snrs)
        + " |",
        "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(snrs),
    ]
    for tau in plan.temperatures:
        runs = [r for r in records if r["info"]["temperature"] == tau]
        if not runs:
            continue
        cells = []
        for m in ("image", "audio"):
            cells.append(_mean_std([r["after_alignment"][m]["top1"] for r in runs]))
            cells.append(
                _mean_std(
                    [
                        r["after_alignment"][m]["matched_cosine"] - r["after_alignment"][m]["mismatched_cosine"]
                        for r in runs
                    ]
                )
            )
        cells += [_mean_std([r["accuracy"][f"{s:g}"] for r in runs]) for s in snrs]
        lines.append(f"| {tau:g} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _tokens_section(records, plan) -> list[str]:
    targets = plan.accuracy_targets
    shown = plan.token_snrs_db
    lines = [
        f"## Token length (AWGN, images at {TOKEN_IMAGE_SIZE_PX} px, seed {plan.seeds[0]})",
        "",
        "Every modality sends L tokens of 32 values (speech at most 8, its encoder's output). "
        "These runs train on half the paper set's budget (stage 1: 100 steps, stage 2: 150, validated every 15). "
        "Steps to a: the first fine-tuning step whose validation accuracy reaches a "
        "(checked at each validation; – never in the run).",
        "",
        "| L (text/image/speech) | symbols per task | "
        + " | ".join(f"{ARMS[a]} acc {s:g} dB" for s in shown for a in (True, False))
        + "".join(f" | {ARMS[a]} steps to {t:g}" for t in targets for a in (True, False))
        + " |",
        "|---|---:|" + "---:|" * (2 * len(shown) + 2 * len(targets)),
    ]
    for length in plan.token_lengths:
        runs = {r["info"]["aligned"]: r for r in records if r["info"]["length"] == length}
        if not runs:
            continue
        lengths = next(iter(runs.values()))["info"]["lengths"]
        cells = [f"{runs[a]['accuracy'][f'{s:g}']:.3f}" if a in runs else "–" for s in shown for a in (True, False)]
        cells += [
            str(steps_to(runs[a]["validation"], t) or "–") if a in runs else "–" for t in targets for a in (True, False)
        ]
        symbols = sum(lengths.values()) * 16  # 32 real values a token, two a complex symbol
        lines.append(
            f"| {lengths['text']}/{lengths['image']}/{lengths['audio']} | {symbols} | " + " | ".join(cells) + " |"
        )
    return lines + [""]


def _per_snr_section(records, single, plan) -> list[str]:
    lines = [
        "## One model across SNRs vs one model per SNR (AWGN)",
        "",
        "Per-SNR models train both stages at that SNR only; the single model is the `snr` experiment's "
        "(trained over −10…25 dB), mean over its seeds.",
        "",
        "| SNR dB | one model, aligned | one model, baseline | per-SNR, aligned | per-SNR, baseline |",
        "|---:|---:|---:|---:|---:|",
    ]
    for snr in plan.per_snr_db:
        cells = []
        for aligned in (True, False):
            cells.append(
                _mean_std(
                    [
                        r["accuracy"][f"{snr:g}"]
                        for r in single
                        if r["channel"] == "awgn" and r["info"]["aligned"] == aligned
                    ]
                )
            )
        for aligned in (True, False):
            cells.append(
                _mean_std(
                    [
                        r["accuracy"][f"{snr:g}"]
                        for r in records
                        if r["info"]["trained_snr_db"] == snr and r["info"]["aligned"] == aligned
                    ]
                )
            )
        lines.append(f"| {snr:g} | " + " | ".join(cells) + " |")
    return lines + [""]


def _channel_panels(draw, xlabel: str, ylabel: str, path: Path) -> None:
    """A figure of one panel per channel of :data:`~sim.reproduce_plan.PAPER_SCENARIOS`, side by side on a shared y
    axis, each drawn by ``draw(ax, channel)`` and titled with the channel; saved as ``path`` (PNG and PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), sharey=True)
    for ax, channel in zip(axes, PAPER_SCENARIOS):
        draw(ax, channel)
        ax.set_title(CHANNEL_LABELS[channel], fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    from matplotlib import pyplot as plt

    from models.paths import atomic_path

    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=150, format=suffix[1:])
    plt.close(fig)
