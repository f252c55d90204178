"""``tokensim sweep``: a scenario over a grid of keys; resumable, sequential or on a Dask cluster.

A sweep file is a scenario with a ``sweep:`` block (``tokensim run`` on it runs the base scenario and says
so). The block names the keys to vary, by the same dotted keys as ``--set``:

.. code-block:: yaml

    sweep:
      grid:                        # every combination of these keys' values
        snr_db: -10:20:5           # a range start:stop[:step]: -10, -5, ..., 20 (stop included when it lands)
        channel.model: [awgn, tdl-a]
      zip:                         # these keys step together (lists of one length): one axis of the grid
        tokens.text.length: [1, 2, 4]
        tokens.image.length: [1, 2, 4]
        tokens.audio.length: [1, 2, 4]
      replicates: 3                # each point with model seeds seed, seed+1, seed+2 (same data, same test tasks)

A value is a list, a range ``start:stop[:step]`` (step 1 by default, numpy's ``arange`` plus ``stop`` if it
lies on the step) or one scalar. ``snr_db`` (a scenario key) sets every user's SNR;
``users.<id>.snr_db`` one user's. On the command line ``--set key=v1,v2`` (or ``key=start:stop:step``)
adds a grid axis or replaces the file's values of that key; one value (``--set key=v``) is set on every
point. Commas inside brackets do not split (``--set training.finetune.snr_db_range=[0,10],[-10,25]``).

Points: the zip axis (outermost) times the grid axes in order. Each point is a run directory
``OUT/points/<hash>/`` (what ``tokensim run`` writes), named by the hash of its resolved scenario; it is
finished when its ``manifest.json``, written last and atomically, exists, so a rerun skips finished points
and redoes a point killed half-way. ``OUT/sweep.yaml`` is the resolved spec (every point and its values),
``OUT/results.csv`` one row per point and user plus an overall row (``user`` = ``all``) per point, the
swept keys as columns.

Replicates: ``replicates: N`` (or sweeping ``seed`` itself, ``--set seed=0:4``) runs every point with N
model seeds, innermost. ``results.csv`` then has one row per point *across seeds*: each metric is the mean
over the seeds, ``replicates`` says how many, ``accuracy_std`` (and ``token_nmse_std``,
``latency_p95_ms_std``) the sample standard deviation over seeds and ``accuracy_ci95_low/high`` Student's
t 95 % interval of the mean over seeds. ``OUT/replicates.csv`` keeps the row of every seed. With one seed,
``accuracy_ci95_low/high`` is the run's Wilson interval over its tasks.

Checkpoints are shared: points are grouped by :func:`sim.engine.checkpoint_key`; each missing stage-1 and
stage-2 checkpoint is trained by exactly one task (distinct keys in parallel) before its points are
evaluated, after one task per distinct encoder setting has made the data and features.

>>> sweep = load_sweep("scenarios/compression_sweep.yaml", ["snr_db=0,10"])
>>> run_sweep(sweep, Path("results/compression_sweep"), workers=2)
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from models.cache import record_kept
from models.paths import digest
from sim.errors import ScenarioError, ScenarioErrors

SWEEP_KEYS = ("grid", "zip", "replicates")
REPLICATE_KEY = "seed"  # the swept key whose values are replicates of one point
FINISHED = "manifest.json"  # written last by write_run
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
_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*:\s*({_NUMBER})\s*(?::\s*({_NUMBER})\s*)?$")


class _Loader(yaml.SafeLoader):
    """Safe YAML, except that ``-10:20:5`` stays a string (a range), not YAML 1.1's base-60 integer."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(0, ("tag:yaml.org,2002:str", _RANGE))


# --------------------------------------------------------------------------------------- the spec


@dataclass
class Point:
    """One run of a sweep: its swept values, scenario mapping (sweep block stripped) and hash."""

    values: dict
    raw: dict
    hash: str = ""
    scenario: object = None  # the validated Scenario; None when ``error`` says why it is not valid
    error: str | None = None

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "the base scenario"


@dataclass
class Sweep:
    """A base scenario and the values to sweep. ``grid``/``zip``: key -> list of values; ``fixed``: overrides
    set on every point."""

    path: Path
    base: dict
    grid: dict = field(default_factory=dict)
    zip: dict = field(default_factory=dict)
    fixed: list = field(default_factory=list)
    replicates: int = 1

    @property
    def keys(self) -> list[str]:
        return [*self.zip, *self.grid]

    def points(self) -> list[Point]:
        """Every point, validated. A point whose values make no valid scenario carries the error instead
        (``Point.error``): the sweep runs the others and reports it (:func:`run_sweep`)."""
        from sim.scenario import apply_override, relative_to_file, validate_scenario

        zipped = [dict(zip(self.zip, row)) for row in zip(*self.zip.values())] or [{}]
        points = []
        for row, combo in itertools.product(zipped, itertools.product(*self.grid.values())):
            values = {**row, **dict(zip(self.grid, combo))}
            raw = copy.deepcopy(self.base)
            for item in [*self.fixed, *(f"{k}={json.dumps(v)}" for k, v in values.items())]:
                apply_override(raw, item)
            relative_to_file(raw, self.path)  # a model_from set by --set or swept is the scenario file's too
            try:
                scenario = validate_scenario(copy.deepcopy(raw))
            except ScenarioError as err:
                points.append(Point(values, raw, "invalid-" + digest(values), error=f"not a valid scenario: {err}"))
                continue
            points.append(Point(values, raw, digest(scenario.model_dump(mode="json")), scenario))
        return points

    def resolved(self, points: list[Point]) -> dict:
        """The spec as ``sweep.yaml`` records it: explicit values and every point's hash."""
        return {
            "scenario": str(self.path),
            "set": list(self.fixed),
            "grid": self.grid,
            "zip": self.zip,
            "replicates": len(self.grid.get(REPLICATE_KEY, [None])),
            "points": [{"point": p.hash, **p.values} for p in points],
        }


def read_scenario_file(path: str | Path) -> tuple[dict, dict | None]:
    """A scenario file's mapping without its ``sweep:`` block, and the block (``None`` if absent)."""
    from sim.scenario import read_mapping, relative_to_file

    path = Path(path)
    raw = read_mapping(path, _Loader)
    return relative_to_file(raw, path), raw.pop("sweep", None)


def load_sweep(
    path: str | Path, overrides: list[str] = (), replicates: int | None = None, zips: list[str] = ()
) -> Sweep:
    """The sweep of a scenario file's ``sweep:`` block and ``--set`` items (``key=v`` or ``key=v1,v2,...``);
    ``replicates`` (``--replicates``) replaces the block's. ``zips`` (``--zip key=v1,v2,...``) are keys that
    step together, as the block's ``zip`` (one point per position, all of one length), not crossed."""
    base, block = read_scenario_file(path)
    if replicates is not None:
        block = {**(block or {}), "replicates": replicates}
    sweep = Sweep(Path(path), base)
    if block is not None:
        if not isinstance(block, dict):
            raise ScenarioError("sweep", block, "must be a mapping", "grid, zip")
        for key in block:
            if key not in SWEEP_KEYS:
                raise ScenarioError(f"sweep.{key}", None, "is not a known key", ", ".join(SWEEP_KEYS))
        for section in ("grid", "zip"):
            axes = block.get(section) or {}
            if not isinstance(axes, dict):
                raise ScenarioError(f"sweep.{section}", axes, "must map dotted keys to values", "key: [v1, v2, ...]")
            for key, spec in axes.items():
                values = parse_values(f"sweep.{section}.{key}", spec)
                getattr(sweep, section)[str(key)] = values
        both = set(sweep.grid) & set(sweep.zip)
        if both:
            raise ScenarioError(f"sweep.zip.{sorted(both)[0]}", None, "is also in sweep.grid; a key sweeps once")
        replicates = block.get("replicates", 1)
        if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
            raise ScenarioError("sweep.replicates", replicates, "is not a positive integer", "1, 2, 3, ...")
        if replicates > 1:
            if REPLICATE_KEY in sweep.grid or REPLICATE_KEY in sweep.zip:
                raise ScenarioError("sweep.replicates", replicates, "is set while seed is swept too; use one")
            sweep.replicates = replicates
            sweep.grid[REPLICATE_KEY] = [base.get("seed", 0) + i for i in range(replicates)]
    from sim.scenario import parse_yaml_value

    def command_line(flag: str, item: str) -> tuple[str, list]:
        """``key=v1,v2,...`` or ``key=start:stop:step`` of ``flag`` -> (key, values)."""
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ScenarioError(flag, item, "is not of the form dotted.key=value or dotted.key=v1,v2,...")
        spec = text if _RANGE.match(text) else [parse_yaml_value(item, v) for v in split_list(text)]
        return key, parse_values(f"{flag} {key}", spec)

    for item in overrides:
        if item.partition("=")[0].endswith("+"):  # key+=value appends one item: never a sweep axis
            sweep.fixed.append(item)
            continue
        key, values = command_line("--set", item)
        if key == REPLICATE_KEY and sweep.replicates > 1 and len(values) > 1:
            raise ScenarioError("sweep.replicates", sweep.replicates, "is set while --set sweeps seed too; use one")
        if key == REPLICATE_KEY and sweep.replicates > 1 and len(values) == 1:  # replicates from this seed
            sweep.grid[key] = [values[0] + i for i in range(sweep.replicates)]
        elif key in sweep.zip:
            sweep.zip[key] = values
        elif len(values) > 1 or key in sweep.grid:
            sweep.grid[key] = values
        else:
            sweep.fixed.append(item)
    for item in zips:
        key, values = command_line("--zip", item)
        if key in sweep.grid or key == REPLICATE_KEY:
            raise ScenarioError(f"--zip {key}", None, "is also swept on its own (--set, sweep.grid); a key sweeps once")
        sweep.zip[key] = values
    lengths = {k: len(v) for k, v in sweep.zip.items()}
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        odd = next(k for k, n in lengths.items() if n != lengths[first])
        raise ScenarioError(
            f"sweep.zip.{odd}",
            sweep.zip[odd],
            f"has {lengths[odd]} values but sweep.zip.{first} has {lengths[first]}",
            "lists of one length in sweep.zip",
        )
    return sweep


def parse_values(key: str, spec) -> list:
    """A list, a range string ``start:stop[:step]`` or one scalar, as the list of values it stands for."""
    if isinstance(spec, str) and _RANGE.match(spec):
        values = _arange(key, spec)
    elif isinstance(spec, list):
        values = spec
    elif isinstance(spec, dict):
        raise ScenarioError(key, spec, "is a mapping", "a list [v1, v2, ...], a range start:stop[:step] or one value")
    else:
        values = [spec]
    if not values:
        raise ScenarioError(key, spec, "has no values", "a list [v1, v2, ...], a range start:stop[:step] or one value")
    seen = [json.dumps(v, sort_keys=True) for v in values]
    repeated = next((v for i, v in enumerate(values) if seen.index(seen[i]) != i), None)
    if repeated is not None:
        raise ScenarioError(key, values, f"repeats {repeated!r}", "distinct values")
    return values


def _arange(key: str, spec: str) -> list:
    start, stop, step = (None if g is None else yaml.safe_load(g) for g in _RANGE.match(spec).groups())
    step = 1 if step is None else step
    if step <= 0:
        raise ScenarioError(key, spec, f"has step {step}", "a positive step: start:stop:step with start <= stop")
    if stop < start:
        raise ScenarioError(key, spec, f"runs down from {start} to {stop}", "start <= stop")
    count = math.floor((stop - start) / step + 1e-9) + 1
    values = [start + i * step for i in range(count)]
    integral = all(isinstance(v, int) for v in (start, stop, step))
    return [int(v) if integral else round(float(v), 12) for v in values]


def split_list(text: str) -> list[str]:
    """``'1,2,[3,4]'`` -> ``['1', '2', '[3,4]']``: commas split unless inside brackets or braces."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [*items, current]


# --------------------------------------------------------------------------------------- one run


def write_run(scenario, out: Path, progress: bool = True, retrain: bool = False) -> dict:
    """Train (or load the checkpoint), evaluate and write one run directory, as ``tokensim run`` does.
    The directory appears whole (:func:`staged_directory`) with ``manifest.json``, which marks a finished
    run. Returns the metrics."""
    from sim.engine import Simulation
    from sim.metrics import build_results

    started = time.perf_counter()
    check_run_directory(out)  # before the work, not after it
    sim = Simulation(scenario, progress=progress)
    summary = sim.train(force=retrain)
    history = summary.pop("history", None)
    metrics, per_user, per_task, per_tb = build_results(scenario, sim.evaluate())
    metrics["training"] = {k: v for k, v in summary.items() if k != "loaded"}  # the manifest says trained_now
    final = Path(out)
    with staged_directory(final) as out:
        _write_run_files(out, scenario, sim, summary, history, metrics, per_user, per_task, per_tb, started)
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


def _write_run_files(out, scenario, sim, summary, history, metrics, per_user, per_task, per_tb, started) -> None:
    from sim.results import manifest, write_csv, write_json, write_text
    from sim.scenario import resolved_yaml

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
            sim.device,
            time.perf_counter() - started,
            sim.checkpoint,
            {"checkpoint_path": str(sim.checkpoint_path), "trained_now": not summary["loaded"]},
        ),
    )


def write_training_log(out: Path, history: list[dict], name: str) -> None:
    """``training_log.csv`` (one row per step of every stage) and ``convergence.png``."""
    from sim.plots import plot_convergence
    from sim.results import write_csv

    write_csv(Path(out) / "training_log.csv", history)
    plot_convergence(history, Path(out) / "convergence.png", title=name)


# --------------------------------------------------------------------------------------- tasks


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
    sim = Simulation(validate_scenario(copy.deepcopy(raw)), progress=False)
    sim.features("train"), sim.features("validation"), sim.features("test")
    return {"kind": "prepare", "seconds": time.perf_counter() - started}


def train_task(raw: dict, stage: str, threads: int = 0, progress: bool = False, after=None) -> dict:
    """Train the checkpoint of ``stage`` (``align`` or ``finetune``) unless it exists."""
    from sim.engine import Simulation, checkpoint_key
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


@dataclass
class Task:
    name: str
    fn: object
    args: tuple
    after: str | None = None  # name of the task this one waits for
    label: str = ""


def plan_tasks(points: list[Point], out: Path) -> list[Task]:
    """Tasks for the unfinished points, depth first by checkpoint: prepare data and features (one task per
    encoder setting, chained so two never build one cache entry), train stage 1 and stage 2 where their
    checkpoint is missing (one task per key), then evaluate each point."""
    from models.checkpoints import checkpoint_path
    from sim.engine import checkpoint_key
    from sim.scenario import model_source

    tasks: list[Task] = []
    names: set[str] = set()
    last_prepare = None
    by_key: dict[str, list[Point]] = {}
    for p in points:  # a point with model_from uses (and trains) its source scenario's checkpoint
        by_key.setdefault(checkpoint_key(model_source(p.scenario) or p.scenario)[0], []).append(p)
    for key, group in by_key.items():
        s = model_source(group[0].scenario) or group[0].scenario
        features = digest(
            [s.seed, s.dataset.model_dump(mode="json"), s.models.model_dump(mode="json"), sorted(s.tokens)]
            + [s.training.audio_encoder.model_dump(mode="json")]
        )
        after = last_prepare
        if f"prepare-{features}" not in names:
            tasks.append(Task(f"prepare-{features}", prepare_task, (group[0].raw,), last_prepare, "data and features"))
            names.add(tasks[-1].name)
            after = last_prepare = tasks[-1].name
        label = _label(group[0].values, [q.values for q in group])
        if not checkpoint_path(key).is_file():
            if s.training.alignment.enabled:
                align = checkpoint_key(s, "align")[0]
                if f"align-{align}" not in names and not checkpoint_path(align).is_file():
                    tasks.append(Task(f"align-{align}", train_task, (group[0].raw, "align"), after, f"align {label}"))
                    names.add(tasks[-1].name)
                if f"align-{align}" in names:
                    after = f"align-{align}"
            tasks.append(Task(f"finetune-{key}", train_task, (group[0].raw, "finetune"), after, f"fine-tune {label}"))
            names.add(tasks[-1].name)
            after = tasks[-1].name
        for p in group:
            tasks.append(Task(f"point-{p.hash}", point_task, (p.raw, str(out / "points" / p.hash)), after, p.label))
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
    if scheduler or workers > 1:
        done, failed = _run_dask(tasks, workers, scheduler, log)
    else:
        done, failed = _run_here(tasks, log, progress and log.interactive)
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


def _run_here(tasks: list[Task], log, progress: bool) -> tuple[dict, dict]:
    done, failed = {}, {}
    for task in tasks:
        if task.after in failed:
            failed[task.name] = f"skipped: {task.after} failed ({failed[task.after]})"
            log.done(task, None, failed[task.name])
            continue
        extra = {} if task.fn is prepare_task else {"progress": progress}
        try:
            done[task.name] = task.fn(*task.args, **extra)
        except Exception as err:  # one bad point must not lose the others
            failed[task.name] = f"{type(err).__name__}: {err}"
        log.done(task, done.get(task.name), failed.get(task.name))
    return done, failed


def _run_dask(tasks: list[Task], workers: int, scheduler: str | None, log) -> tuple[dict, dict]:
    import logging
    from contextlib import ExitStack

    from distributed import Client, LocalCluster, as_completed

    done, failed = {}, {}
    with ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.CRITICAL,
                )
            )
            client = stack.enter_context(Client(cluster))
        futures = {}
        for task in tasks:
            after = futures.get(task.after)
            futures[task.name] = client.submit(
                task.fn, *task.args, threads=1, after=after, key=f"{task.name}-{time.time_ns()}", pure=False
            )
        name_of = {f.key: name for name, f in futures.items()}
        by_name = {t.name: t for t in tasks}
        for future in as_completed(futures.values()):
            name = name_of[future.key]
            try:
                done[name] = future.result()
            except Exception as err:
                failed[name] = f"{type(err).__name__}: {err}"
            log.done(by_name[name], done.get(name), failed.get(name))
    return done, failed


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

    def done(self, task: Task, result: dict | None, error: str | None) -> None:
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


# --------------------------------------------------------------------------------------- results


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
        "accuracy": record["accuracy"],
        "accuracy_ci95_low": record["accuracy_ci95"][0],
        "accuracy_ci95_high": record["accuracy_ci95"][1],
        "tasks": record["tasks"],
        "token_nmse": record["token_nmse"],
        "bits_per_task": record["bits_per_task"],
        "channel_uses_per_task": record["channel_uses_per_task"],
        "latency_mean_ms": record["latency_ms"]["mean"],
        "latency_p95_ms": record["latency_ms"]["p95"],
        "deadline_miss_rate": deadline_miss_rate,
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
