"""Figures of a run or a sweep (matplotlib Agg, no display needed), sized for a paper column.

``plot_directory(DIR)`` (``tokensim plot DIR``) writes PNG and PDF into ``DIR/plots/``, each atomically:

- ``accuracy_vs_snr``: test accuracy vs SNR, one line per compression ratio (and per value of any other
  swept key), with 95 % error bars (over the seeds of a replicated sweep, else Wilson over tasks). A
  sweep over ``snr_db`` (or one ``users.<id>.snr_db``) puts its values on the x axis; otherwise, and for
  a run, each user is a point at its own SNR.
- ``rate_accuracy`` (sweeps): accuracy vs bits per task of every point, and the frontier of points no
  other point beats with fewer bits.
- ``latency_cdf``: CDF of the task latency (``per_task.csv``), one line per ``scheduler.policy`` when the
  sweep varies it, else per series of the accuracy plot (per SNR when only the SNR is swept); for a
  run, per group of users.
- ``loss_vs_step``: training loss per step of each distinct checkpoint (stage 1 alignment and stage 2
  fine-tuning panels), thin per step and bold as a running mean.
- ``per_user``: accuracy (bars) and mean and p95 latency (markers, on an axis fitted to them) per user;
  for a sweep one bar per series at one SNR (the middle swept value), which the title names.
- ``latency_breakdown``: the mean task latency split into its terms (``latency_ms.breakdown``), one
  stacked bar per group of a run, or per series of a sweep at the point ``per_user`` shows.

Curves that coincide (a CDF of identical latencies) are drawn once, their labels joined with "=" and
marked "(identical)"; the others get distinct markers and dashes, so no line hides another unsaid.

Every ``plot_*`` function returns the closed figure, so its lines and bars can be read back.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from models.paths import atomic_path  # noqa: E402
from sim.plot_base import (  # noqa: E402
    BITS_LABEL,
    COLUMN_WIDTH_IN,
    MARKERS,
    STAGE_LABELS,
    STYLE,
    Table,
    _float,
    per_user_rows,
    read_csv,
    running_mean,
    save_figure,
)
from sim.plots_latency import plot_latency_breakdown, plot_latency_cdf  # noqa: E402


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
        ax.plot(steps, running_mean(losses, window), lw=1.4, color="C0", label=f"running mean ({window} steps)")
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


# --------------------------------------------------------------------------------------- figures


def plot_accuracy_vs_snr(table: Table, path: Path) -> plt.Figure:
    """Accuracy vs SNR, one line per series (compression ratio first)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.5))
        if table.snr_key:
            rows, x_key, x_label = table.overall(), table.snr_key, f"SNR of {_snr_name(table.snr_key)} (dB)"
            series, style, title = table.series(rows), "o-", table.legend_title()
        else:  # users at their own SNRs: points, not a curve, marked by what each user sends
            rows, x_key, x_label = table.users(), "user_snr_db", "user SNR (dB)"
            series, style, title = _by_modalities(rows), None, "users sending"
        for i, (label, members) in enumerate(series.items()):
            members = sorted(members, key=lambda r: _float(r[x_key]))
            x = [_float(r[x_key]) for r in members]
            y = [_float(r["accuracy"]) for r in members]
            if style:
                (line,) = ax.plot(x, y, style, label=label)
            else:
                (line,) = ax.plot(x, y, MARKERS[i % len(MARKERS)], ls="none", label=label, color=f"C{i}")
            _draw_error_bars(ax, x, members, line.get_color())
        ax.set_xlabel(x_label)
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.legend(title=title or None, loc="lower right")
        save_figure(fig, path)
    return fig


def _by_modalities(rows: list[dict]) -> dict[str, list[dict]]:
    """User rows grouped by what each user sends (``image+audio``), in a fixed order of modalities."""
    order = {"text": 0, "image": 1, "audio": 2}
    groups: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: [order.get(m, 3) for m in r["modalities"].split("+")]):
        groups.setdefault(r["modalities"], []).append(r)
    return groups


def _draw_error_bars(ax, x: list[float], rows: list[dict], color) -> None:
    """Each row's 95 % accuracy interval at ``x`` (over the seeds of a replicated sweep, else Wilson over
    tasks); nothing where the rows carry none."""
    if not rows or any(r.get("accuracy_ci95_low") in (None, "") for r in rows):
        return
    accuracy = np.array([_float(r["accuracy"]) for r in rows])
    low = np.array([_float(r["accuracy_ci95_low"]) for r in rows])
    high = np.array([_float(r["accuracy_ci95_high"]) for r in rows])
    ax.errorbar(x, accuracy, np.stack([accuracy - low, high - accuracy]), fmt="none", ecolor=color, capsize=2, lw=0.8)


def _snr_name(key: str) -> str:
    return "every user" if key == "snr_db" else f"user {key.split('.')[1]}"


def plot_rate_accuracy(table: Table, path: Path) -> plt.Figure:
    """Accuracy vs bits per task of every point (markers per series) and the rate-accuracy frontier:
    the points no other point beats in accuracy with as few bits."""
    rows = table.overall()
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.5))
        for label, members in table.series(rows).items():
            members = sorted(members, key=lambda r: _float(r["bits_per_task"]))
            x = [_float(r["bits_per_task"]) for r in members]
            (line,) = ax.plot(x, [_float(r["accuracy"]) for r in members], "o", ls="none", label=label)
            _draw_error_bars(ax, x, members, line.get_color())
        bits, accuracy = frontier([_float(r["bits_per_task"]) for r in rows], [_float(r["accuracy"]) for r in rows])
        ax.plot(bits, accuracy, "-", color="0.2", lw=0.9, drawstyle="steps-post", label="frontier", zorder=1)
        if bits and max(bits) / max(min(bits), 1e-9) > 20:
            ax.set_xscale("log")
        kinds = {r["bits_kind"] for r in rows}
        ax.set_xlabel(BITS_LABEL.get(kinds.pop(), "bits per task") if len(kinds) == 1 else "bits per task")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.legend(title=table.legend_title() or None, loc="upper left")
        save_figure(fig, path)
    return fig


def frontier(bits: list[float], accuracy: list[float]) -> tuple[list[float], list[float]]:
    """The points (sorted by bits) whose accuracy beats every point with fewer or equal bits."""
    xs, ys, best = [], [], -np.inf
    for b, a in sorted(zip(bits, accuracy), key=lambda p: (p[0], -p[1])):
        if a > best:
            xs.append(b)
            ys.append(a)
            best = a
    return xs, ys


def training_logs(table: Table) -> dict[str, list[dict]]:
    """The training log of each distinct checkpoint, labelled by the series it trained for."""
    series = table.series(table.overall()) if table.is_sweep else {"loss": table.overall()}
    logs, seen = {}, set()
    for label, members in series.items():
        for checkpoint in dict.fromkeys(r["checkpoint"] for r in members):
            log = table.run_dirs[next(r["point"] for r in members if r["checkpoint"] == checkpoint)]
            if checkpoint in seen or not (log / "training_log.csv").is_file():
                continue
            seen.add(checkpoint)
            logs[label if label not in logs else f"{label} ({checkpoint[:6]})"] = read_csv(log / "training_log.csv")
    return logs


def plot_loss_vs_step(table: Table, path: Path) -> plt.Figure | None:
    """Training loss per step (thin) and its running mean (bold) for each checkpoint, one panel per stage."""
    logs = training_logs(table)
    stages = [s for s in STAGE_LABELS if any(h["stage"] == s for log in logs.values() for h in log)]
    if not stages:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(stages), 1, figsize=(COLUMN_WIDTH_IN, 1.9 * len(stages)), squeeze=False)
        for ax, stage in zip(axes[:, 0], stages):
            for i, (label, log) in enumerate(logs.items()):
                rows = [h for h in log if h["stage"] == stage]
                if not rows:
                    continue
                steps = np.array([int(h["step"]) for h in rows])
                loss = np.array([_float(h["loss"]) for h in rows])
                ax.plot(steps, loss, lw=0.5, alpha=0.35, color=f"C{i}", label=f"{label}, each step")
                ax.plot(steps, running_mean(loss, max(1, len(rows) // 20)), color=f"C{i}", label=label)
            ax.set_title(STAGE_LABELS[stage])
            ax.set_ylabel("InfoNCE + text NMSE" if stage == "align" else "cross-entropy")
            bold = [line for line in ax.get_lines() if not line.get_label().endswith(", each step")]
            thin = plt.Line2D([], [], lw=0.5, color="0.5", label="each step (thin); bold: running mean")
            ax.legend(handles=[*bold, thin], title=table.legend_title() or None, loc="upper right")
        axes[-1, 0].set_xlabel("training step")
        for ax in axes[:, 0]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def plot_per_user(table: Table, path: Path) -> plt.Figure:
    """Accuracy (top, one bar per series) and mean task latency with its p95 (bottom, markers on an axis
    fitted to them: latencies a few percent apart stay apart) per user; the title names the point."""
    where, series = per_user_rows(table)
    ids = list(dict.fromkeys(r["user"] for members in series.values() for r in members))
    width = 0.8 / len(series)
    with plt.rc_context(STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(COLUMN_WIDTH_IN, 3.6), sharex=True)
        for i, (label, members) in enumerate(series.items()):
            by_id = {r["user"]: r for r in members}
            x = np.arange(len(ids)) + (i - (len(series) - 1) / 2) * width
            name = label or "accuracy"
            top.bar(x, [_float(by_id[u]["accuracy"]) for u in ids], width, label=name, color=f"C{i}")
            suffix = f" ({label})" if label else ""
            mean = [_float(by_id[u]["latency_mean_ms"]) for u in ids]
            bottom.plot(x, mean, "o", ls="none", color=f"C{i}", label=f"mean{suffix}")
            bottom.plot(x, [_float(by_id[u]["latency_p95_ms"]) for u in ids], "_", color=f"C{i}", ms=6,
                        mew=1.5, label=f"p95{suffix}")  # fmt: skip
        top.set_ylabel("test accuracy")
        top.set_ylim(0, 1)
        fig.suptitle(where, fontsize=8)
        if len(series) > 1:
            top.legend(title=table.legend_title() or None, ncols=min(3, len(series)), loc="lower center",
                       bbox_to_anchor=(0.5, 1.0))  # fmt: skip
        bottom.margins(y=0.25)  # the axis fits the markers; it does not start at 0 ...
        bottom.set_ylim(bottom=max(0.0, bottom.get_ylim()[0]))  # ... nor below it
        bottom.legend(ncols=2, loc="best")
        bottom.set_ylabel("task latency (ms)")
        bottom.set_xticks(np.arange(len(ids)), ids, rotation=45, ha="right")
        for ax in (top, bottom):
            ax.grid(axis="x", visible=False)
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def plot_directory(directory: Path) -> dict[str, plt.Figure]:
    """Every figure of a run or sweep directory into ``directory/plots/`` (PNG and PDF); the figures."""
    table = Table.read(directory)
    out = Path(directory) / "plots"
    figures = {
        "accuracy_vs_snr": plot_accuracy_vs_snr(table, out / "accuracy_vs_snr"),
        "latency_cdf": plot_latency_cdf(table, out / "latency_cdf"),
        "per_user": plot_per_user(table, out / "per_user"),
        "latency_breakdown": plot_latency_breakdown(table, out / "latency_breakdown"),
    }
    if table.is_sweep:
        figures["rate_accuracy"] = plot_rate_accuracy(table, out / "rate_accuracy")
    loss = plot_loss_vs_step(table, out / "loss_vs_step")
    if loss is not None:
        figures["loss_vs_step"] = loss
    return figures
