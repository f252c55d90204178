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

This module is the spec (the block, ``--set``/``--zip``, the points); :mod:`sim.sweep_run` runs it,
:mod:`sim.sweep_results` tabulates it, :mod:`sim.rundir` writes each point's run directory.

>>> sweep = load_sweep("scenarios/compression_sweep.yaml", ["snr_db=0,10"])
>>> sim.sweep_run.run_sweep(sweep, Path("results/compression_sweep"), workers=2)
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from models.paths import digest
from sim.errors import ScenarioError

SWEEP_KEYS = ("grid", "zip", "replicates")
REPLICATE_KEY = "seed"  # the swept key whose values are replicates of one point
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
        from sim.scenario import validate_scenario
        from sim.scenario_yaml import apply_override, relative_to_file

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
    from sim.scenario_yaml import read_mapping, relative_to_file

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
    from sim.scenario_yaml import parse_yaml_value

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
