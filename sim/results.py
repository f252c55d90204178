"""The run directory: every file written atomically, so a crash never leaves half a result."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from models.paths import atomic_path

PACKAGES = ("tokensim", "torch", "sionna-no-rt", "transformers", "peft")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(_finite(obj), indent=2) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows may hold different keys (training stages log different losses): the columns are their union,
    in order of first appearance, and a row's missing values are empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    return found


def git_commit() -> str:
    """Commit of the tokensim checkout (``+dirty`` if it has uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def manifest(scenario, device, wall_time_s: float, checkpoint: str, extra: dict | None = None) -> dict:
    return {
        "versions": versions(),
        "git_commit": git_commit(),
        "seed": scenario.seed,
        "device": str(device),
        "wall_time_s": wall_time_s,
        "checkpoint": checkpoint,
        "command": sys.argv,
        **(extra or {}),
    }


def _finite(obj):
    """JSON has no NaN: write ``null`` where a metric has no tasks."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
