"""Running a sweep: the points' tasks (data, each checkpoint once, evaluation), sequential or on Dask.

Checkpoints are shared: points are grouped by :func:`sim.checkpoint_plan.checkpoint_key`; each missing stage-1 and
stage-2 checkpoint is trained by exactly one task (distinct keys in parallel) before its points are
evaluated, after one task per distinct encoder setting has made the data and features. A point that fails
is recorded (its error in ``results.csv``) and the others complete.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from models.cache import record_kept
from sim.errors import ScenarioError, ScenarioErrors
from sim.rundir import FINISHED, write_run
from sim.runner import Work, run_work
from sim.sweep import Point, Sweep
from sim.sweep_results import write_results


def _limit_threads(threads: int) -> None:
    """A task's setup in a worker process: its torch threads, and the libraries' bars and notes off."""
    from sim.runtime import quiet_libraries

    quiet_libraries()
    if threads:
        import torch

        torch.set_num_threads(threads)


def prepare_task(raw: dict, threads: int = 0, after=None) -> dict:
    """Make the data and encoder features of a scenario (cached for every later task)."""
    from sim.engine import Simulation
    from sim.scenario import validate_scenario

    _limit_threads(threads)
    started = time.perf_counter()
    simulation = Simulation(validate_scenario(copy.deepcopy(raw)), progress=False)
    simulation.features("train"), simulation.features("validation"), simulation.features("test")
    return {"kind": "prepare", "seconds": time.perf_counter() - started}


def train_task(raw: dict, stage: str, threads: int = 0, progress: bool = False, after=None) -> dict:
    """Train the checkpoint of ``stage`` (``align`` or ``finetune``) unless it exists."""
    from sim.checkpoint_plan import checkpoint_key
    from sim.engine import Simulation
    from sim.scenario import model_source, validate_scenario

    _limit_threads(threads)
    scenario = validate_scenario(copy.deepcopy(raw))
    started = time.perf_counter()
    summary = Simulation(scenario, progress=progress).train(stage=stage)
    return {
        "kind": stage,
        "key": checkpoint_key(model_source(scenario) or scenario, stage)[0],
        "trained": not summary["loaded"],
        "pid": os.getpid(),
        "started": time.time() - (time.perf_counter() - started),
        "seconds": time.perf_counter() - started,
    }


def point_task(raw: dict, out: str, threads: int = 0, progress: bool = False, after=None) -> dict:
    """Evaluate one point into its run directory (its checkpoint is there by now)."""
    from sim.scenario import validate_scenario

    _limit_threads(threads)
    started = time.perf_counter()
    metrics = write_run(validate_scenario(copy.deepcopy(raw)), Path(out), progress=progress)
    return {"kind": "point", "accuracy": metrics["accuracy"], "seconds": time.perf_counter() - started}


def plan_tasks(points: list[Point], out: Path) -> list[Work]:
    """Tasks for the unfinished points, depth first by checkpoint: prepare data and features (one task per
    encoder setting, chained so two never build one cache entry), train stage 1 and stage 2 where their
    checkpoint is missing (one task per key), then evaluate each point."""
    from models.checkpoints import checkpoint_path
    from sim.checkpoint_plan import checkpoint_key, data_key
    from sim.scenario import model_source

    tasks: list[Work] = []
    names: set[str] = set()
    last_prepare = None
    by_key: dict[str, list[Point]] = {}
    for p in points:  # a point with model_from uses (and trains) its source scenario's checkpoint
        by_key.setdefault(checkpoint_key(model_source(p.scenario) or p.scenario)[0], []).append(p)
    for key, group in by_key.items():
        s = model_source(group[0].scenario) or group[0].scenario
        features = data_key(s)
        after = last_prepare
        if f"prepare-{features}" not in names:
            tasks.append(Work(f"prepare-{features}", prepare_task, (group[0].raw,), last_prepare, "data and features"))
            names.add(tasks[-1].name)
            after = last_prepare = tasks[-1].name
        label = _label(group[0].values, [q.values for q in group])
        if not checkpoint_path(key).is_file():
            if s.training.alignment.enabled:
                align = checkpoint_key(s, "align")[0]
                if f"align-{align}" not in names and not checkpoint_path(align).is_file():
                    tasks.append(
                        Work(f"align-{align}", train_task, (group[0].raw, "align"), after, f"align {label}", True)
                    )
                    names.add(tasks[-1].name)
                if f"align-{align}" in names:
                    after = f"align-{align}"
            tasks.append(
                Work(f"finetune-{key}", train_task, (group[0].raw, "finetune"), after, f"fine-tune {label}", True)
            )
            names.add(tasks[-1].name)
            after = tasks[-1].name
        for p in group:
            tasks.append(
                Work(f"point-{p.hash}", point_task, (p.raw, str(out / "points" / p.hash)), after, p.label, True)
            )
    return tasks


def _label(values: dict, others: list[dict]) -> str:
    """The values a checkpoint's points share (what shapes it, among the swept keys)."""
    shared = {k: v for k, v in values.items() if all(o.get(k) == v for o in others)}
    return ", ".join(f"{k}={v}" for k, v in shared.items()) or "(one model)"


# --------------------------------------------------------------------------------------- running


@dataclass
class SweepReport:
    points: int
    skipped: int
    ran: list[str]  # hashes of the points evaluated now
    trained: list[dict]  # what each training task returned
    failed: dict[str, str]  # task name -> error
    wall_s: float


def run_sweep(
    sweep: Sweep, out: Path, workers: int = 1, scheduler: str | None = None, progress: bool = True
) -> SweepReport:
    """Run every unfinished point of ``sweep`` into ``out`` and write ``out/results.csv``.

    :param workers: >1: a local Dask cluster of that many processes, one thread each
    :param scheduler: address of a running Dask scheduler (``tcp://host:port``) to use instead
    """
    from sim.results import write_text

    started = time.perf_counter()
    out = Path(out)
    points = sweep.points()
    distinct = list({p.hash: p for p in points}.values())
    invalid = [p for p in distinct if p.error]
    if len(invalid) == len(distinct):  # a problem of the base scenario or of every value: nothing to run
        raise ScenarioErrors([ScenarioError(f"sweep point {p.label}", None, p.error) for p in invalid])
    write_text(out / "sweep.yaml", yaml.safe_dump(sweep.resolved(points), sort_keys=False))
    valid = len(distinct) - len(invalid)
    todo = [p for p in distinct if not p.error and not (out / "points" / p.hash / FINISHED).is_file()]
    tasks = plan_tasks(todo, out)
    log = _Log(len(tasks), progress)
    if invalid:
        log.line(f"{len(invalid)} of {len(distinct)} points are not valid scenarios; results.csv records why")
    if todo and len(todo) < valid:
        log.line(f"{valid - len(todo)} of {valid} points finished before; running the other {len(todo)}")
    elif not todo:
        log.line(f"all {valid} points finished before")
    done, failed = run_work(tasks, workers, scheduler, log.done, progress and log.interactive)
    log.close()
    errors = {p.hash: p.error for p in invalid}
    for p in todo:  # a point that could not run, or whose checkpoint could not be trained
        if f"point-{p.hash}" in failed:
            errors[p.hash] = failed[f"point-{p.hash}"]
    write_results(out, points, sweep.keys, errors)
    report = SweepReport(
        points=len(distinct),
        skipped=valid - len(todo),
        ran=[name.removeprefix("point-") for name in done if name.startswith("point-")],
        trained=[r for r in done.values() if r["kind"] in ("align", "finetune")],
        failed=failed,
        wall_s=time.perf_counter() - started,
    )
    if errors:
        by_hash = {p.hash: p for p in distinct}
        lines = "\n".join(f"{by_hash[h].label}: {e.splitlines()[0]}" for h, e in errors.items())
        raise SweepFailed(
            f"{len(errors)} of {len(distinct)} points failed; results.csv has the others' results and these "
            f"points' errors:\n{lines}"
        )
    return report


class SweepFailed(RuntimeError):
    """Some points could not run; the others' results are written."""


class _Log:
    """A progress bar over the sweep's tasks on a terminal, else one plain line per finished task."""

    def __init__(self, total: int, enabled: bool):
        from models.progress import progress_bar

        self.enabled = enabled
        self.interactive = enabled and sys.stderr.isatty() and sys.stdout.isatty()
        self.count, self.total = 0, total
        self.bar = progress_bar(total=total, enabled=self.interactive, desc="sweep", unit="task")

    def line(self, text: str) -> None:
        if self.interactive:
            self.bar.write(text, file=sys.stderr)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def done(self, task: Work, result: dict | None, error: str | None) -> None:
        self.count += 1
        self.bar.update(1)
        if error:
            what = f"FAILED {task.label}: {error.splitlines()[0]}"
        elif result["kind"] == "point":
            what = f"{task.label}: accuracy {result['accuracy']:.3f} ({result['seconds']:.0f} s)"
            record_kept("sweep point", task.label)
        elif result["kind"] == "prepare":
            what = f"{task.label} ready ({result['seconds']:.0f} s)"
        else:
            what = f"{task.label}: {'trained' if result['trained'] else 'loaded'} ({result['seconds']:.0f} s)"
        if not self.interactive or error:
            self.line(f"[{self.count}/{self.total}] {what}")

    def close(self) -> None:
        self.bar.close()
