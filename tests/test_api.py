"""The Python API (`import tokensim`): scenarios made and changed in code, runs and sweeps read back as
tables, and the example script of docs/examples, which CI runs."""

from __future__ import annotations

import json
import runpy

import pytest

import tokensim
from sim.errors import ScenarioError


def test_load_and_replace_change_the_keys_a_user_wrote(tiny, write_scenario):
    path = write_scenario(tiny)
    s = tokensim.load_scenario(path, overrides={"users.cam1.snr_db": -1.5, "channel.model": "tdl-c"})
    assert s.user("cam1").snr_db == -1.5 and s.channel.model == "tdl-c" and s.user("q1").snr_db == 15
    # device_gflops is filled into every user by resolution; a replaced default must still reach them
    faster = tokensim.replace(s, {"compute.device_gflops": 40.0})
    assert {u.device_gflops for u in faster.users} == {40.0} and {u.device_gflops for u in s.users} == {20.0}
    assert faster.channel.model == "tdl-c"  # the other overrides stay
    more = tokensim.replace(
        s,
        [  # pairs: a key may repeat
            ("users+", {"id": "q3", "modalities": ["text"], "snr_db": 2}),
            ("users+", {"id": "cam3", "modalities": ["image"], "snr_db": 4}),
            ("groups+", {"id": "c", "users": ["q3", "cam3"]}),
            ("scheduler.policy", "round-robin"),
        ],
    )
    assert [u.id for u in more.users][-2:] == ["q3", "cam3"] and more.user("cam3").group == "c"
    with pytest.raises(ScenarioError, match="tokens.image.length"):
        tokensim.replace(s, {"tokens.image.length": 0})


def test_run_returns_the_run_directory_as_tables(tiny, tmp_path):
    s = tokensim.make_scenario(tiny)
    results = tokensim.run(s, out=tmp_path / "run")
    assert results.metrics == json.loads((tmp_path / "run" / "metrics.json").read_text())
    users = results.per_user
    assert [u["id"] for u in users] == [u["id"] for u in tiny["users"]]
    assert all(isinstance(u["token_nmse"], float) and isinstance(u["tasks"], int) for u in users)
    assert len(results.per_task) == results.metrics["tasks"]
    assert isinstance(results.per_task[0]["correct"], bool)
    assert results.tbs is None  # analog: no transport blocks
    assert "latency_breakdown" in results.plot() and (tmp_path / "run" / "plots" / "per_user.png").is_file()
    # the CLI is built on the same call: same scenario, same seed, same metrics
    from sim.cli import main

    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(tiny))
    assert main(["run", str(path), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert {k: v for k, v in cli.items() if k != "training"} == {
        k: v for k, v in results.metrics.items() if k != "training"
    }


def test_sweep_zips_and_crosses_keys_from_code(tiny, tmp_path):
    s = tokensim.make_scenario(tiny)
    lengths = {"tokens.image.length": [1, 2], "tokens.audio.length": [1, 2]}
    sweep = tokensim.sweep(s, grid={"snr_db": [0, 10]}, zip=lengths, out=tmp_path / "sweep")
    overall = [r for r in sweep.rows if r["user"] == "all"]
    assert sorted((r["snr_db"], r["tokens.image.length"]) for r in overall) == [(0, 1), (0, 2), (10, 1), (10, 2)]
    point = sweep.point(overall[0]["point"])
    assert point.metrics["accuracy"] == pytest.approx(overall[0]["accuracy"])
    with pytest.raises(ValueError, match="one length"):
        tokensim.sweep(s, zip={"tokens.image.length": [1, 2], "tokens.audio.length": [1]}, out=tmp_path / "bad")


def test_the_example_script_runs_and_writes_its_figure(tmp_path):
    from tests.conftest import ROOT

    figure = runpy.run_path(str(ROOT / "docs" / "examples" / "compression_in_code.py"))["main"](
        ["--out", str(tmp_path)]
    )
    assert figure.stat().st_size > 10_000
    assert {r["tokens.text.length"] for r in tokensim.SweepResults(tmp_path / "sweep").rows} == {1, 4}
