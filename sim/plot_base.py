"""What every figure of ``tokensim plot`` shares: the rows it reads (a sweep's ``results.csv`` or a run's
``metrics.json`` as tidy rows, with the swept keys, where each point's run directory is, and how points form
series), the point a per-user figure shows, the paper-column style, and the atomic save."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,F401

from models.paths import atomic_path  # noqa: E402

ALL_USERS = "all"  # sim.sweep_results.ALL_USERS, without importing the engine
SCHEDULER_KEY = "scheduler.policy"
REPLICATE_KEY = "seed"  # sim.sweep.REPLICATE_KEY


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
BITS_LABEL = {"coded": "coded bits per task", "shannon-equivalent": "Shannon-equivalent bits per task"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")


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
