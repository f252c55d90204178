"""The latency figures of ``tokensim plot``: the task latency CDF (identical curves drawn once and named so)
and the mean latency split into its terms, as stacked bars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from sim.plot_base import (
    COLUMN_WIDTH_IN,
    DASHES,
    MARKERS,
    SCHEDULER_KEY,
    STYLE,
    Table,
    _float,
    per_user_rows,
    plt,
    read_csv,
    save_figure,
)


def latency_groups(table: Table) -> tuple[str, dict[str, np.ndarray]]:
    """Task latencies (ms) pooled per line of the latency CDF, and the legend's title."""
    if not table.is_sweep:
        tasks = read_csv(table.run_dirs["run"] / "per_task.csv")
        groups = dict.fromkeys(t["group"] for t in tasks)
        return "group", {g: np.array([_float(t["latency_ms"]) for t in tasks if t["group"] == g]) for g in groups}
    rows = table.overall()
    if SCHEDULER_KEY in table.keys:
        series, title = table.series(rows, [SCHEDULER_KEY]), "scheduler"
    elif table.series_keys:
        series, title = table.series(rows), table.legend_title()
    else:
        series, title = table.series(rows, [table.snr_key]), ""
    pooled = {}
    for label, members in series.items():
        runs = [h for r in members for h in r.get("points", r["point"]).split()]  # every seed's tasks
        latencies = [read_csv(table.run_dirs[h] / "per_task.csv") for h in runs]
        pooled[label] = np.array([_float(t["latency_ms"]) for tasks in latencies for t in tasks])
    return title, pooled


def coinciding(curves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Curves whose samples are the same multiset merged into one, labelled ``"a = b (identical)"``."""
    merged: dict[bytes, tuple[list[str], np.ndarray]] = {}
    for label, values in curves.items():
        x = np.sort(np.asarray(values, dtype=float))
        merged.setdefault(x.tobytes(), ([], x))[0].append(label)
    return {(" = ".join(ls) + " (identical)" if len(ls) > 1 else ls[0]): x for ls, x in merged.values()}


def plot_latency_cdf(table: Table, path: Path) -> plt.Figure:
    """Empirical CDF of the task latency per line of :func:`latency_groups`; identical ones drawn once."""
    title, groups = latency_groups(table)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.3))
        for i, (label, x) in enumerate(coinciding(groups).items()):
            marks = {"marker": MARKERS[i % len(MARKERS)], "markevery": max(1, len(x) // 6), "ms": 3}
            y = np.arange(1, len(x) + 1) / len(x)
            ax.plot(x, y, DASHES[i % len(DASHES)], drawstyle="steps-post", label=label, **marks)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.set_xlabel("task latency (ms)")
        ax.set_ylabel("CDF")
        ax.set_ylim(0, 1.02)
        ax.legend(title=title or None, loc="lower right")
        save_figure(fig, path)
    return fig


BREAKDOWN_LABELS = {
    "device_queueing": "device queue",
    "device_compute": "device compute",
    "uplink_queueing": "uplink queue",
    "airtime": "airtime",
    "harq_wait": "HARQ wait",
    "edge_queueing": "edge queue",
    "edge_compute": "edge compute",
}


def latency_breakdowns(table: Table) -> tuple[str, dict[str, dict[str, float]]]:
    """Mean latency terms (ms) per bar: each group of a run, or each series of a sweep (its overall
    breakdown, at the point :func:`per_user_rows` shows); and what the bars are."""
    if not table.is_sweep:
        metrics = json.loads((table.run_dirs["run"] / "metrics.json").read_text())
        return "group", {g["id"]: g["breakdown"] for g in metrics["groups"]}
    where, series = per_user_rows(table)
    bars = {}
    for label, members in series.items():
        seeds = members[0].get("points", members[0]["point"]).split()  # a replicated point: mean over its seeds
        terms = [json.loads((table.run_dirs[h] / "metrics.json").read_text())["latency_ms"]["breakdown"] for h in seeds]
        bars[label or where] = {k: float(np.mean([t[k] for t in terms])) for k in terms[0]}
    return where, bars


def plot_latency_breakdown(table: Table, path: Path) -> plt.Figure:
    """The mean task latency as stacked terms, one horizontal bar per group (run) or series (sweep)."""
    title, bars = latency_breakdowns(table)
    labels = list(bars)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, max(1.6, 0.9 + 0.28 * len(labels))))
        left = np.zeros(len(labels))
        for i, (term, name) in enumerate(BREAKDOWN_LABELS.items()):
            widths = np.nan_to_num([bars[b].get(term, 0.0) for b in labels])  # a term never measured: none
            ax.barh(labels, widths, left=left, label=name, color=f"C{i}", height=0.6)
            left += widths
        for y, total in enumerate(left):
            ax.annotate(f"{total:.2f}", (total, y), xytext=(2, 0), textcoords="offset points", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, left.max() * 1.12 if len(left) else 1)
        ax.set_xlabel("mean task latency (ms)")
        where = None
        if title == "group":
            ax.set_ylabel(title)
        else:  # a sweep's point, in words: too long for an axis label, it heads the legend
            where = title + (" (mean over seeds)" if table.replicated else "")
        ax.grid(axis="y", visible=False)
        ax.legend(ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=7, columnspacing=0.8, title=where)
        save_figure(fig, path)
    return fig
