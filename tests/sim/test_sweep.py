"""`tokensim sweep`: the spec's syntax and errors, resuming after SIGKILL, a Dask cluster sharing checkpoints."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.cli import main
from sim.errors import ScenarioError
from sim.sweep import load_sweep, parse_values, split_list
from sim.sweep_run import run_sweep

ROOT = Path(__file__).resolve().parents[2]
# two token lengths (two models) x two SNRs: four points
SWEEP = {"grid": {"snr_db": "0:10:10"}, "zip": {"tokens.image.length": [1, 2], "tokens.audio.length": [1, 2]}}


def _sweep_file(tiny, write_scenario, block=SWEEP):
    return write_scenario({**tiny, "sweep": block}, "sweep.yaml")


def test_ranges_lists_and_zip_make_the_points(tiny, write_scenario):
    assert parse_values("k", "-5:20:5") == [-5, 0, 5, 10, 15, 20]  # stop lands on the step: included
    assert parse_values("k", "0:1:0.3") == [0.0, 0.3, 0.6, 0.9]  # it does not: left out, like numpy's arange
    assert parse_values("k", "1:3") == [1, 2, 3] and parse_values("k", "tdl-a") == ["tdl-a"]
    assert split_list("1,[2,3],{a: 1, b: 2}") == ["1", "[2,3]", "{a: 1, b: 2}"]

    path = _sweep_file(tiny, write_scenario, {**SWEEP, "grid": {"snr_db": "-10:0:5"}})
    added = "users+={id: q3, modalities: [text], snr_db: 3}"  # commas of an appended item do not sweep
    more = [added, "users+={id: cam3, modalities: [image]}", "groups+={id: c, users: [q3, cam3]}"]
    more.append("scheduler.policy=round-robin")
    sweep = load_sweep(path, ["channel.model=awgn,tdl-a", "seed=5", "tokens.audio.length=2,1", *more])
    assert sweep.keys == ["tokens.image.length", "tokens.audio.length", "snr_db", "channel.model"]
    assert sweep.zip["tokens.audio.length"] == [2, 1] and sweep.fixed == ["seed=5", *more]
    points = sweep.points()
    assert len(points) == 2 * 3 * 2 and len({p.hash for p in points}) == 12
    assert [p.error for p in points if p.error] == []
    assert all(p.scenario.user("q3").group == "c" for p in points)
    first, last = points[0], points[-1]
    assert first.values == {"tokens.image.length": 1, "tokens.audio.length": 2, "snr_db": -10, "channel.model": "awgn"}
    assert last.values == {"tokens.image.length": 2, "tokens.audio.length": 1, "snr_db": 0, "channel.model": "tdl-a"}
    s = last.scenario
    assert s.seed == 5 and s.channel.model == "tdl-a" and s.tokens["image"].length == 2
    assert {u.snr_db for u in s.users} == {0.0}  # snr_db sets every user's
    # the hash is the resolved scenario's: the same point from another spelling keeps its run directory
    again = load_sweep(path, ["channel.model=awgn", "seed=5", "tokens.audio.length=2,1", *more]).points()
    assert again[0].hash == first.hash


@pytest.mark.parametrize(
    ("block", "overrides", "message"),
    [
        ({"grid": {"snr_db": [0]}, "axes": {}}, [], "sweep.axes: is not a known key; allowed: grid, zip, replicates"),
        (
            {"zip": {"tokens.image.length": [1, 2], "tokens.audio.length": [1]}},
            [],
            "sweep.zip.tokens.audio.length: [1] has 1 values but sweep.zip.tokens.image.length has 2",
        ),
        (
            {"grid": {"snr_db": "10:0:5"}},
            [],
            "sweep.grid.snr_db: '10:0:5' runs down from 10 to 0; allowed: start <= stop",
        ),
        ({"grid": {"snr_db": "0:10:-5"}}, [], "sweep.grid.snr_db: '0:10:-5' has step -5; allowed: a positive step"),
        ({"grid": {"snr_db": [0, 5, 0]}}, [], "sweep.grid.snr_db: [0, 5, 0] repeats 0; allowed: distinct values"),
        ({"grid": {"snr_db": []}}, [], "sweep.grid.snr_db: [] has no values"),
        ({"grid": {"seed": [1]}, "zip": {"seed": [2]}}, [], "sweep.zip.seed: is also in sweep.grid"),
        ({"replicates": 0}, [], "sweep.replicates: 0 is not a positive integer"),
        ({"grid": {"seed": [1, 2]}, "replicates": 2}, [], "sweep.replicates: 2 is set while seed is swept too"),
        ({"replicates": 2}, ["seed=1,2"], "sweep.replicates: 2 is set while --set sweeps seed too"),
    ],
)
def test_a_bad_sweep_fails_before_running_naming_key_value_and_allowed(tiny, write_scenario, block, overrides, message):
    path = _sweep_file(tiny, write_scenario, block)
    with pytest.raises(ScenarioError) as err:
        load_sweep(path, overrides).points()
    assert message in str(err.value)


def test_a_point_that_fails_is_recorded_and_the_others_complete(tiny, write_scenario, tmp_path, capsys):
    """A value bad at one point only: the sweep runs the rest, results.csv holds the error, exit 1."""
    path = _sweep_file(tiny, write_scenario, {})
    points = load_sweep(path, ["tokens.image.length=2,9"]).points()
    assert [p.error is None for p in points] == [True, False]
    assert "tokens.image.length: 9 is longer than the image encoder's output (4 tokens)" in points[1].error
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--set", "tokens.image.length=2,9"]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 points failed" in err and "tokens.image.length=9: not a valid scenario" in err
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    done = [r for r in rows if r["tokens.image.length"] == "2"]
    failed = [r for r in rows if r["tokens.image.length"] == "9"]
    assert done and all(r["error"] == "" and r["accuracy"] != "" for r in done)
    assert len(failed) == 1 and "longer than the image encoder's output" in failed[0]["error"]
    assert main(["plot", str(out)]) == 0  # the figures skip the failed point


def test_a_point_that_crashes_is_recorded_and_the_others_complete(tiny, write_scenario, tmp_path, monkeypatch, capsys):
    import sim.sweep_run

    real = sim.sweep_run.point_task

    def flaky(raw, out, **kwargs):
        if raw["snr_db"] == 7:
            raise RuntimeError("the accelerator fell off the bus")
        return real(raw, out, **kwargs)

    monkeypatch.setattr(sim.sweep_run, "point_task", flaky)
    path = _sweep_file(tiny, write_scenario, {})
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--set", "snr_db=5,7"]) == 1
    assert "snr_db=7: RuntimeError: the accelerator fell off the bus" in capsys.readouterr().err
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["snr_db"] for r in rows if r["error"] == ""} == {"5"}
    assert [r["error"] for r in rows if r["snr_db"] == "7"] == ["RuntimeError: the accelerator fell off the bus"]


def test_run_and_validate_on_a_sweep_file(tiny, write_scenario, capsys):
    path = _sweep_file(tiny, write_scenario)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "all 4 points are valid" in err and "sweeps tokens.image.length, tokens.audio.length, snr_db" in err
    assert yaml.safe_load(out)["tokens"]["image"]["length"] == 1  # the first point, resolved
    assert main(["validate", str(path), "--set", "tokens.image.length=1,7"]) == 2
    assert "sweep point tokens.image.length=7, tokens.audio.length=2" in capsys.readouterr().err


def _cache(tmp_path: Path, name: str) -> dict:
    """A cache that shares the session's data and features but trains its own checkpoints."""
    shared = Path(os.environ["TOKENSIM_CACHE"])
    cache = tmp_path / name
    cache.mkdir()
    for part in ("data", "features", "encoders"):
        (shared / part).mkdir(exist_ok=True)
        (cache / part).symlink_to(shared / part)
    return {**os.environ, "TOKENSIM_CACHE": str(cache)}


def _sweep_command(path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sim.cli", "sweep", str(path), "--out", str(out)]


def test_a_killed_sweep_reruns_only_missing_points_and_ends_as_an_uninterrupted_one(
    tiny, write_scenario, tmp_path, monkeypatch
):
    path = _sweep_file(tiny, write_scenario)
    reference = tmp_path / "reference"
    with monkeypatch.context() as patch:  # in this process (as many torch threads as the subprocesses)
        patch.setenv("TOKENSIM_CACHE", _cache(tmp_path, "cache-ref")["TOKENSIM_CACHE"])
        assert main(["sweep", str(path), "--out", str(reference), "--quiet"]) == 0

    env, out = _cache(tmp_path, "cache-killed"), tmp_path / "killed"
    process = subprocess.Popen(_sweep_command(path, out), env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(out.glob("points/*/manifest.json")) and time.monotonic() < deadline:
        assert process.poll() is None, "the sweep ended before a point finished"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.parent.name: p.read_bytes() for p in out.glob("points/*/manifest.json")}
    assert 1 <= len(finished) < 4, "kill it mid-way"
    assert not (out / "results.csv").exists()  # written at the end only

    rerun = subprocess.run(_sweep_command(path, out), env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert f"{len(finished)} of 4 points finished before; running the other {4 - len(finished)}" in rerun.stderr
    assert rerun.stderr.count("accuracy ") == 4 - len(finished)  # one line per point evaluated now
    for point, manifest in finished.items():
        assert (out / "points" / point / "manifest.json").read_bytes() == manifest  # not run again
    assert (out / "results.csv").read_text() == (reference / "results.csv").read_text()
    assert (out / "sweep.yaml").read_text() == (reference / "sweep.yaml").read_text()


def test_local_dask_cluster_trains_each_checkpoint_once_and_shares_it(tiny, write_scenario, tmp_path):
    """Two learning rates share one stage-1 checkpoint; each of the three is trained by one task only."""
    block = {"grid": {"training.finetune.lr": [0.001, 0.002], "snr_db": [0, 10]}}
    tiny["training"]["alignment"]["temperature"] = 0.09  # a stage-1 checkpoint no other test trains
    path = _sweep_file(tiny, write_scenario, block)
    report = run_sweep(load_sweep(path), tmp_path / "dask", workers=2, progress=False)
    assert report.points == 4 and len(report.ran) == 4 and not report.failed
    trained = [(t["kind"], t["key"]) for t in report.trained if t["trained"]]
    assert sorted(k for k, _ in trained) == ["align", "finetune", "finetune"] and len(set(trained)) == 3
    assert len({t["pid"] for t in report.trained}) >= 1
    points = sorted((tmp_path / "dask" / "points").iterdir())
    manifests = [json.loads((p / "manifest.json").read_text()) for p in points]
    assert not any(m["trained_now"] for m in manifests)  # every point loaded its checkpoint
    assert len({m["checkpoint"] for m in manifests}) == 2
    rows = (tmp_path / "dask" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("point,training.finetune.lr,snr_db,user,") and len(rows) == 1 + 4 * (1 + 5)

    # the same sweep with one more SNR on a running cluster (--dask-scheduler): only the new points run
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        more = run_sweep(
            load_sweep(path, ["snr_db=0,5,10"]), tmp_path / "dask", scheduler=cluster.scheduler_address, progress=False
        )
    assert more.points == 6 and more.skipped == 4 and len(more.ran) == 2 and not more.trained


def test_replicates_run_each_point_over_seeds_and_results_hold_mean_std_and_interval(tiny, write_scenario, tmp_path):
    from scipy import stats

    from sim.plots import plot_directory

    tiny["training"]["alignment"]["temperature"] = 0.11  # checkpoints no other test trains
    path = _sweep_file(tiny, write_scenario, {"grid": {"snr_db": [0, 10]}, "replicates": 3})
    sweep = load_sweep(path)
    assert sweep.grid["seed"] == [3, 4, 5]  # from the scenario's seed
    assert load_sweep(path, ["seed=7"]).grid["seed"] == [7, 8, 9]
    assert "seed" not in load_sweep(path, replicates=1).grid  # --replicates 1: the scenario's seed only
    out = tmp_path / "replicated"
    report = run_sweep(sweep, out, progress=False)
    assert report.points == 6 and not report.failed
    assert sorted(t["kind"] for t in report.trained if t["trained"]) == ["align"] * 3 + ["finetune"] * 3

    by_seed = _csv(out / "replicates.csv")
    results = _csv(out / "results.csv")
    assert len(by_seed) == 6 * 6 and len(results) == 2 * 6 and "seed" not in results[0]
    for row in results:
        mine = [r for r in by_seed if r["snr_db"] == row["snr_db"] and r["user"] == row["user"]]
        accuracy = np.array([float(r["accuracy"]) for r in mine])
        assert sorted(r["seed"] for r in mine) == ["3", "4", "5"] and row["replicates"] == "3"
        assert row["points"].split() == [r["point"] for r in mine]
        assert float(row["accuracy"]) == pytest.approx(accuracy.mean())
        assert float(row["accuracy_std"]) == pytest.approx(accuracy.std(ddof=1))
        half = stats.t.ppf(0.975, 2) * accuracy.std(ddof=1) / np.sqrt(3)
        assert float(row["accuracy_ci95_low"]) == pytest.approx(accuracy.mean() - half)
        assert float(row["accuracy_ci95_high"]) == pytest.approx(accuracy.mean() + half)
    assert len({r["point"] for r in by_seed}) == 6
    # the seeds train different models on the same test tasks
    assert len({r["checkpoint"] for r in by_seed}) == 3

    ax = plot_directory(out)["accuracy_vs_snr"].axes[0]
    (bars,) = ax.containers
    segments = np.asarray(bars.lines[2][0].get_segments())
    overall = [r for r in results if r["user"] == "all"]
    assert np.allclose(
        segments[:, :, 1], [[float(r["accuracy_ci95_low"]), float(r["accuracy_ci95_high"])] for r in overall]
    )


def _csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_cli_rejects_a_policy_given_as_dask_scheduler_and_keeps_apart_from_runs(
    tiny, write_scenario, tmp_path, monkeypatch, capsys
):
    path = write_scenario(tiny)
    assert main(["sweep", str(path), "--dask-scheduler", "proportional-fair"]) == 2
    err = capsys.readouterr().err
    assert "'proportional-fair' is not a Dask scheduler address" in err and "scheduler.policy" in err
    monkeypatch.chdir(tmp_path)  # the default folders are relative to where tokensim runs
    assert main(["sweep", str(path), "--set", "snr_db=3", "--quiet"]) == 0
    assert main(["run", str(path), "--quiet"]) == 0
    name = tiny["name"]
    assert (tmp_path / "results" / f"{name}-sweep" / "results.csv").is_file()  # the sweep's own folder
    assert (tmp_path / "results" / name / "metrics.json").is_file()
    assert not (tmp_path / "results" / name / "results.csv").exists()


def test_zip_on_the_command_line_pairs_keys_instead_of_crossing_them(tiny, write_scenario):
    path = write_scenario(tiny)
    lengths = ["tokens.text.length=1,2,4", "tokens.image.length=1,2,4", "tokens.audio.length=1,2,4"]
    crossed = load_sweep(path, lengths).points()
    assert len(crossed) == 27  # --set lists cross: 27 models
    zipped = load_sweep(path, ["snr_db=0,10"], zips=lengths).points()
    assert len(zipped) == 6  # three ratios, each at two SNRs
    assert {tuple(p.values[f"tokens.{m}.length"] for m in ("text", "image", "audio")) for p in zipped} == {
        (1, 1, 1),
        (2, 2, 2),
        (4, 4, 4),
    }
    with pytest.raises(ScenarioError, match="has 2 values but sweep.zip.tokens.text.length has 3"):
        load_sweep(path, zips=[lengths[0], "tokens.image.length=1,2"])
    with pytest.raises(ScenarioError, match="--zip snr_db: is also swept on its own"):
        load_sweep(path, ["snr_db=0,10"], zips=["snr_db=0,5"])
