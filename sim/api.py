"""tokensim from Python: build or load a scenario, change it in code, run it or sweep it, get tables back.

``import tokensim`` gives these names; ``tokensim run`` and ``tokensim sweep`` are built on them::

    import tokensim

    s = tokensim.load_scenario("scenarios/cell_10users.yaml", overrides={"snr_db": 5})
    r = tokensim.run(s, out="results/five-db")
    r.metrics["accuracy"], r.per_user[0]["token_nmse"]
    r.plot()                                  # the figures of `tokensim plot`, as matplotlib figures

    s2 = tokensim.replace(s, {"tokens.image.length": 2})
    sw = tokensim.sweep(s, grid={"snr_db": [0, 10]}, out="results/two-points")
    sw.rows                                   # results.csv, one record per point and user

A scenario keeps the mapping it was validated from, so that :func:`replace` and :func:`sweep` change the
keys a user wrote rather than the values resolution filled in (a swept ``compute.device_gflops`` must reach
every user that did not set its own, as in a YAML sweep).
"""

from __future__ import annotations

import copy
import csv
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from sim.scenario import validate_scenario
from sim.scenario_yaml import apply_value, read_mapping, relative_to_file
from sim.schema import Scenario

__all__ = ["Results", "SweepResults", "load_scenario", "make_scenario", "replace", "run", "sweep"]

# the mapping each scenario made here was validated from, by id, dropped with the scenario (kept outside the
# model: a field or private attribute would change its equality and its dump)
_RAWS: dict[int, dict] = {}


def make_scenario(raw: dict, base_dir: str | Path = ".") -> Scenario:
    """A validated :class:`~sim.scenario.Scenario` from a mapping written in code (the YAML's structure);
    a ``model_from`` in it is taken relative to ``base_dir``. Raises :class:`~sim.errors.ScenarioError`."""
    raw = relative_to_file(copy.deepcopy(raw), Path(base_dir) / "scenario.yaml")
    scenario = validate_scenario(copy.deepcopy(raw))
    _RAWS[id(scenario)] = raw
    weakref.finalize(scenario, _RAWS.pop, id(scenario), None)
    return scenario


def load_scenario(path: str | Path, overrides: dict | list | None = None) -> Scenario:
    """The scenario of a YAML file, with ``overrides`` applied first: ``{"dotted.key": value}`` as ``--set``
    takes keys (``"users.cam1.snr_db"``; ``"users+"`` appends), or a list of ``(key, value)`` pairs where a
    key repeats (two ``"users+"``). A file's ``sweep:`` block is left out (:func:`sweep` takes the grid)."""
    path = Path(path)
    raw = read_mapping(path)
    raw.pop("sweep", None)
    _apply(raw, overrides)
    return make_scenario(raw, path.parent)


def replace(scenario: Scenario, overrides: dict | list) -> Scenario:
    """A new scenario: ``scenario``'s own mapping with ``overrides`` (as :func:`load_scenario` takes them)
    applied, validated again."""
    raw = copy.deepcopy(_raw(scenario))
    _apply(raw, overrides)
    return make_scenario(raw)


def _apply(raw: dict, overrides: dict | list | None) -> None:
    pairs = overrides.items() if isinstance(overrides, dict) else (overrides or [])
    for key, value in pairs:
        apply_value(raw, key, copy.deepcopy(value))


def _raw(scenario: Scenario) -> dict:
    raw = _RAWS.get(id(scenario))
    return raw if raw is not None else scenario.model_dump(mode="json")  # made elsewhere: its resolved form


def _typed(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"True": True, "False": False, "": None}.get(value, value)


def _table(path: Path):
    """A CSV as records with numbers and booleans typed; a pandas DataFrame if pandas is installed."""
    if not path.is_file():
        return None
    try:
        import pandas
    except ImportError:
        with open(path, newline="") as f:
            return [{k: _typed(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return pandas.read_csv(path)


class _Figures:
    directory: Path

    def plot(self) -> dict:
        """Every figure of ``tokensim plot`` into ``directory/plots/``; returns them by name."""
        from sim.plots import plot_directory

        return plot_directory(self.directory)


@dataclass
class Results(_Figures):
    """A run directory, read back: ``metrics`` (``metrics.json``), ``per_user``, ``per_task`` and ``tbs``
    (digital) tables."""

    directory: Path
    metrics: dict = field(repr=False)

    @classmethod
    def read(cls, directory: str | Path) -> Results:
        directory = Path(directory)
        return cls(directory, json.loads((directory / "metrics.json").read_text()))

    @property
    def per_user(self):
        return _table(self.directory / "per_user.csv")

    @property
    def per_task(self):
        return _table(self.directory / "per_task.csv")

    @property
    def tbs(self):
        return _table(self.directory / "tbs.csv")


@dataclass
class SweepResults(_Figures):
    """A sweep directory, read back: ``rows`` (``results.csv``: one record per point and user, and an
    ``all`` row per point) and each point's :class:`Results` by its hash."""

    directory: Path

    @property
    def rows(self):
        return _table(self.directory / "results.csv")

    def point(self, point_hash: str) -> Results:
        return Results.read(self.directory / "points" / point_hash)


def run(scenario: Scenario, out: str | Path | None = None, progress: bool = False, retrain: bool = False) -> Results:
    """Train the scenario's model if no checkpoint matches, evaluate it through the cell loop and write the
    run directory (``results/<name>/`` unless ``out``), as ``tokensim run`` does."""
    from sim.rundir import write_run

    out = Path(out) if out is not None else Path("results") / scenario.name
    write_run(scenario, out, progress=progress, retrain=retrain)
    return Results.read(out)


def sweep(
    scenario: Scenario,
    grid: dict | None = None,
    zip: dict | None = None,  # noqa: A002 - the sweep block's own word
    replicates: int = 1,
    out: str | Path | None = None,
    workers: int = 1,
    progress: bool = False,
) -> SweepResults:
    """Every combination of ``grid`` (``{"dotted.key": [values]}``) crossed with the positions of ``zip``
    (keys that step together), each over ``replicates`` model seeds, as ``tokensim sweep`` runs a file's
    ``sweep:`` block: resumable, into ``results/<name>-sweep/`` unless ``out``, on ``workers`` local Dask
    processes."""
    from sim.sweep import REPLICATE_KEY, Sweep
    from sim.sweep_run import SweepFailed, run_sweep

    raw = _raw(scenario)
    spec = Sweep(Path.cwd() / f"{scenario.name}.yaml", copy.deepcopy(raw))
    spec.grid = {k: list(v) for k, v in (grid or {}).items()}
    spec.zip = {k: list(v) for k, v in (zip or {}).items()}
    if len({len(v) for v in spec.zip.values()}) > 1:
        raise ValueError(f"zip keys need lists of one length: { ({k: len(v) for k, v in spec.zip.items()}) }")
    if replicates > 1:
        spec.replicates = replicates
        spec.grid[REPLICATE_KEY] = [raw.get("seed", 0) + i for i in range(replicates)]
    out = Path(out) if out is not None else Path("results") / f"{scenario.name}-sweep"
    try:
        run_sweep(spec, out, workers=workers, progress=progress)
    except SweepFailed as err:
        raise RuntimeError(str(err)) from None
    return SweepResults(out)
