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

import csv
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from models.paths import atomic_path  # noqa: E402

STAGE_LABELS = {"align": "stage 1: alignment", "finetune": "stage 2: fine-tuning"}
COLUMN_WIDTH_IN = 3.5  # one column of a two-column paper
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.bbox": "tight",
}
ALL_USERS = "all"  # sim.sweep_results.ALL_USERS, without importing the engine
SCHEDULER_KEY = "scheduler.policy"
REPLICATE_KEY = "seed"  # sim.sweep.REPLICATE_KEY
BITS_LABEL = {"coded": "coded bits per task", "shannon-equivalent": "Shannon-equivalent bits per task"}


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


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each step (fewer at the start)."""
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return np.convolve(values, np.ones(window))[: len(values)] / counts


def save_figure(fig, path: Path) -> list[Path]:
    """``path`` as PNG and PDF (its suffix is replaced), each written atomically; closes the figure."""
    written = []
    for suffix in (".png", ".pdf"):
        target = Path(path).with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=200, format=suffix[1:])
        written.append(target)
    plt.close(fig)
    return written


# --------------------------------------------------------------------------------------- reading


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(value) -> float:
    return float("nan") if value in ("", None) else float(value)


class Table:
    """The tidy rows of a sweep (``results.csv``) or of a run (made alike from ``metrics.json``), with
    the swept keys, where each point's run directory is, and how points form series."""

    def __init__(self, rows: list[dict], keys: list[str], run_dirs: dict[str, Path]):
        self.rows, self.keys, self.run_dirs = rows, keys, run_dirs
        snr_keys = [k for k in keys if k == "snr_db" or k.endswith(".snr_db")]
        self.snr_key = snr_keys[0] if len(snr_keys) == 1 else None
        self.series_keys = [k for k in keys if k != self.snr_key]

    @classmethod
    def read(cls, directory: Path) -> Table:
        directory = Path(directory)
        if (directory / "results.csv").is_file():
            import yaml

            spec = yaml.safe_load((directory / "sweep.yaml").read_text())
            keys = [k for k in (*spec["zip"], *spec["grid"]) if k != REPLICATE_KEY]  # rows are across seeds
            rows = [r for r in read_csv(directory / "results.csv") if not r.get("error")]  # failed points
            dirs = {h: directory / "points" / h for r in rows for h in r.get("points", r["point"]).split()}
            return cls(rows, keys, dirs)
        if (directory / "metrics.json").is_file():
            metrics = json.loads((directory / "metrics.json").read_text())
            checkpoint = json.loads((directory / "manifest.json").read_text())["checkpoint"]
            common = {"point": "run", "compression_ratio": metrics["compression_ratio"], "checkpoint": checkpoint}
            common["scenario"] = metrics.get("scenario", directory.name)
            common["bits_kind"] = metrics["bits_kind"]
            rows = [{**common, "user": ALL_USERS, "accuracy": metrics["accuracy"]}]
            rows += [
                {
                    **common,
                    "user": u["id"],
                    "group": u["group"],
                    "modalities": "+".join(u["modalities"]),
                    "user_snr_db": u["snr_db"],
                    "accuracy": u["accuracy"],
                    "bits_per_task": u["bits_per_task"],
                    "latency_mean_ms": u["latency_ms"]["mean"],
                    "latency_p95_ms": u["latency_ms"]["p95"],
                }
                for u in metrics["users"]
            ]
            return cls([{k: str(v) for k, v in r.items()} for r in rows], [], {"run": directory})
        raise FileNotFoundError(f"{directory}: neither a sweep directory (results.csv) nor a run (metrics.json)")

    @property
    def replicated(self) -> bool:
        """Whether each row is a mean over model seeds (a sweep with ``replicates``)."""
        return any(len(r.get("points", r["point"]).split()) > 1 for r in self.rows)

    @property
    def is_sweep(self) -> bool:
        return bool(self.keys) or "run" not in self.run_dirs

    def overall(self) -> list[dict]:
        return [r for r in self.rows if r["user"] == ALL_USERS]

    def users(self) -> list[dict]:
        return [r for r in self.rows if r["user"] != ALL_USERS]

    def series(self, rows: list[dict], keys: list[str] | None = None) -> dict[str, list[dict]]:
        """Rows grouped by the values of ``keys`` (default: every swept key but the SNR), labelled by
        compression ratio and by the keys the compression ratio does not already fix."""
        keys = self.series_keys if keys is None else keys
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault(tuple(r[k] for k in keys) + (r["compression_ratio"],), []).append(r)
        ratios = {g[-1] for g in groups}
        extra = [
            i
            for i, k in enumerate(keys)
            if len(ratios) == 1 or any(len({g[i] for g in groups if g[-1] == cr}) > 1 for cr in ratios)
        ]
        labels = {}
        for g, members in groups.items():
            parts = [] if len(ratios) == 1 and extra else [f"{float(g[-1]):.3g}:1"]
            parts += [_value_label(keys[i], g[i]) for i in extra]
            labels[", ".join(parts)] = members
        return labels

    def legend_title(self) -> str:
        ratios = {r["compression_ratio"] for r in self.rows}
        return "compression ratio" if len(ratios) > 1 or not self.series_keys else ""


def _value_label(key: str, value: str) -> str:
    if key == "training.alignment.enabled":
        return "with alignment" if value.lower() == "true" else "without alignment"
    return f"{key.split('.')[-1] if key == SCHEDULER_KEY else key}={value}"


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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")


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


def per_user_rows(table: Table) -> tuple[str, dict[str, list[dict]]]:
    """The user rows shown per series (at the middle swept SNR when the SNR is swept), and which point
    (or run) they are, in words."""
    users = table.users()
    if not table.is_sweep:
        return f"run {users[0]['scenario']}" if users else "run", {"": users}
    where = "sweep"
    if table.snr_key:
        snrs = sorted({_float(r[table.snr_key]) for r in users})
        middle = snrs[(len(snrs) - 1) // 2]
        users = [r for r in users if _float(r[table.snr_key]) == middle]
        where = f"{table.snr_key} = {middle:g} dB (of {', '.join(f'{v:g}' for v in snrs)})"
    return where, table.series(users)


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
