"""A run directory: written whole or not at all, by ``tokensim run`` and by every point of a sweep.

It appears at its final path only when complete (:func:`staged_directory`), with ``manifest.json`` written
last, which marks it finished (a sweep skips finished points); a folder that is not a run directory is
refused before any work starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from sim.errors import ScenarioError

FINISHED = "manifest.json"  # written last by write_run


def write_run(scenario, out: Path, progress: bool = True, retrain: bool = False) -> dict:
    """Train (or load the checkpoint), evaluate and write one run directory, as ``tokensim run`` does.
    The directory appears whole (:func:`staged_directory`) with ``manifest.json``, which marks a finished
    run. Returns the metrics."""
    from sim.engine import Simulation
    from sim.metrics import build_results

    started = time.perf_counter()
    check_run_directory(out)  # before the work, not after it
    simulation = Simulation(scenario, progress=progress)
    summary = simulation.train(force=retrain)
    history = summary.pop("history", None)
    metrics, per_user, per_task, per_tb = build_results(scenario, simulation.evaluate())
    metrics["training"] = {k: v for k, v in summary.items() if k != "loaded"}  # the manifest says trained_now
    final = Path(out)
    with staged_directory(final) as out:
        _write_run_files(out, scenario, simulation, summary, history, metrics, per_user, per_task, per_tb, started)
    return metrics


def check_run_directory(final: Path) -> Path:
    """``final`` resolved, if a run directory may be written there: it is missing, empty, or a finished
    run directory (which the new run replaces). Anything else (a sweep's folder, a folder of other files)
    is refused before any work starts."""
    final = Path(final).resolve()
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / FINISHED).is_file())):
        raise ScenarioError(
            "--out",
            str(final),
            "exists and is not a run directory (no manifest.json); a run replaces its --out as a whole",
            "a new or empty folder, or an earlier run's",
        )
    try:  # a folder that cannot be written is found now, not after the training
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=final.parent):
            pass
    except OSError as err:
        raise ScenarioError("--out", str(final), f"cannot be written ({err.strerror or err})") from None
    return final


@contextmanager
def staged_directory(final: Path):
    """Yield a hidden sibling of ``final`` to write a run directory into; when the block ends it replaces
    ``final`` (an earlier run's directory goes). Stopped part-way, ``final`` is as it was and the partial
    directory is removed, so a directory under the final name is always complete. The two renames of the
    swap run with SIGINT and SIGTERM held back (delivered right after)."""
    final = check_run_directory(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in (*final.parent.glob(f".{final.name}.*.partial"), *final.parent.glob(f".{final.name}.*.old")):
        shutil.rmtree(stale, ignore_errors=True)  # left by a process killed outright (a Dask worker, say)
    partial = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    try:
        yield partial
        with _signals_held():
            if final.exists():
                old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
                os.replace(final, old)
                os.replace(partial, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


@contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM back for the block (on POSIX); they are delivered when it ends."""
    import signal

    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _write_run_files(out, scenario, simulation, summary, history, metrics, per_user, per_task, per_tb, started) -> None:
    from sim.results import manifest, write_csv, write_json, write_text
    from sim.scenario_yaml import resolved_yaml

    write_text(out / "scenario.yaml", resolved_yaml(scenario))
    write_json(out / "metrics.json", metrics)
    write_csv(out / "per_user.csv", per_user)
    write_csv(out / "per_task.csv", per_task)
    if per_tb:
        write_csv(out / "tbs.csv", per_tb)
    write_training_log(out, history, scenario.name)
    write_json(
        out / FINISHED,
        manifest(
            scenario,
            simulation.device,
            time.perf_counter() - started,
            simulation.checkpoint,
            {"checkpoint_path": str(simulation.checkpoint_path), "trained_now": not summary["loaded"]},
        ),
    )


def write_training_log(out: Path, history: list[dict], name: str) -> None:
    """``training_log.csv`` (one row per step of every stage) and ``convergence.png``."""
    from sim.plots import plot_convergence
    from sim.results import write_csv

    write_csv(Path(out) / "training_log.csv", history)
    plot_convergence(history, Path(out) / "convergence.png", title=name)
