"""A sweep's tables: ``results.csv`` (one row per point and user, an overall row per point) and, with
replicates, the rows across model seeds (mean, std, Student's t interval) and ``replicates.csv``."""

from __future__ import annotations

import json
from pathlib import Path

from sim.errors import ScenarioError
from sim.rundir import FINISHED
from sim.sweep import REPLICATE_KEY, Point

ALL_USERS = "all"
RESULT_COLUMNS = (
    "user",
    "group",
    "modalities",
    "user_snr_db",
    "accuracy",
    "accuracy_ci95_low",
    "accuracy_ci95_high",
    "tasks",
    "token_nmse",
    "bits_per_task",
    "bits_kind",
    "channel_uses_per_task",
    "compression_ratio",
    "latency_mean_ms",
    "latency_p95_ms",
    "deadline_miss_rate",
    "checkpoint",
)


def point_rows(run_dir: Path, values: dict) -> list[dict]:
    """The tidy rows of one run directory: an overall row (``user`` = ``all``), then one per user;
    ``values`` (the swept keys) lead every row."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    checkpoint = json.loads((Path(run_dir) / FINISHED).read_text())["checkpoint"]
    common = {
        "bits_kind": metrics["bits_kind"],
        "compression_ratio": metrics["compression_ratio"],
        "checkpoint": checkpoint,
    }
    overall = {"id": ALL_USERS, "group": "", "modalities": "", "snr_db": ""}
    rows = [_result_row(values, overall | metrics, metrics["deadline_miss_rate"]) | common]
    rows += [_result_row(values, u | {"modalities": "+".join(u["modalities"])}, "") | common for u in metrics["users"]]
    return [{k: row[k] for k in [*values, *RESULT_COLUMNS]} for row in rows]


def _result_row(values: dict, record: dict, deadline_miss_rate) -> dict:
    """One row of results.csv from ``metrics.json``'s overall record or one of its ``users``."""
    return {
        **values,
        "user": record["id"],
        "group": record["group"],
        "modalities": record["modalities"],
        "user_snr_db": record["snr_db"],
        **measured_columns(record),
        "deadline_miss_rate": deadline_miss_rate,
    }


def measured_columns(record: dict) -> dict:
    """What a ``metrics.json`` record (the whole run's or one user's) measured, as flat columns: accuracy with
    its Wilson interval and task count, token NMSE, bits and channel uses per task, mean and p95 latency."""
    return {
        "accuracy": record["accuracy"],
        "accuracy_ci95_low": record["accuracy_ci95"][0],
        "accuracy_ci95_high": record["accuracy_ci95"][1],
        "tasks": record["tasks"],
        "token_nmse": record["token_nmse"],
        "bits_per_task": record["bits_per_task"],
        "channel_uses_per_task": record["channel_uses_per_task"],
        "latency_mean_ms": record["latency_ms"]["mean"],
        "latency_p95_ms": record["latency_ms"]["p95"],
    }


def write_results(out: Path, points: list[Point], keys: list[str], errors: dict[str, str] | None = None) -> None:
    """``out/results.csv`` from every finished point, in the sweep's order; the swept keys lead.
    With the seed swept, one row per point across seeds (:func:`across_seeds`), and every seed's row
    in ``out/replicates.csv``. A point in ``errors`` (hash -> message) gets a row with its values and
    the message in the ``error`` column."""
    from sim.results import write_csv

    clash = [k for k in keys if k in (*RESULT_COLUMNS, *SEED_COLUMNS, "point", "points")]
    if clash:
        raise ScenarioError(f"sweep key {clash[0]}", None, "clashes with a results.csv column")
    rows = []
    for p in points:
        run_dir = Path(out) / "points" / p.hash
        if (run_dir / FINISHED).is_file():
            rows += [{"point": p.hash, **row} for row in point_rows(run_dir, p.values)]
    failed = [{"point": p.hash, **p.values, "error": errors[p.hash]} for p in points if p.hash in (errors or {})]
    if not rows and not failed:
        return
    if REPLICATE_KEY in keys and rows:
        write_csv(Path(out) / "replicates.csv", rows)
        rows = across_seeds(rows, [k for k in keys if k != REPLICATE_KEY])
    else:
        rows = [{**row, "replicates": 1, **dict.fromkeys(SEED_COLUMNS[1:], ""), "points": row["point"]} for row in rows]
    write_csv(Path(out) / "results.csv", rows + failed)


SEED_COLUMNS = ("replicates", "accuracy_std", "token_nmse_std", "latency_p95_ms_std")
_NOT_AVERAGED = ("point", "user", "group", "modalities", "bits_kind", "checkpoint", "compression_ratio")


def across_seeds(rows: list[dict], keys: list[str]) -> list[dict]:
    """One row per point and user across the seeds: means, sample standard deviations and Student's t
    95 % interval of the mean accuracy over the seeds (``points``: the seeds' run directories)."""
    import numpy as np
    from scipy import stats

    merged: dict[tuple, list[dict]] = {}
    for row in rows:
        merged.setdefault(tuple(json.dumps(row[k]) for k in keys) + (row["user"],), []).append(row)
    out = []
    for members in merged.values():
        first = members[0]
        row = {k: first[k] for k in keys}
        n = len(members)
        for column in ("point", *RESULT_COLUMNS):
            values = [m[column] for m in members]
            if column in _NOT_AVERAGED or any(v == "" or isinstance(v, str) for v in values):
                row[column] = first[column]
            else:
                row[column] = float(np.mean(values))
        accuracy = np.array([m["accuracy"] for m in members], dtype=float)
        std = float(accuracy.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
        row["accuracy_ci95_low"], row["accuracy_ci95_high"] = row["accuracy"] - half, row["accuracy"] + half
        row["replicates"] = n
        row["accuracy_std"] = std
        for column in ("token_nmse", "latency_p95_ms"):
            values = np.array([m[column] for m in members], dtype=float)
            row[f"{column}_std"] = float(values.std(ddof=1)) if n > 1 else float("nan")
        row["points"] = " ".join(m["point"] for m in members)
        out.append(row)
    return out
