"""`tokensim run` on a tiny scenario: the results contract, caching, determinism; bench and info."""

from __future__ import annotations

import csv
import json
import math

import pytest

from sim.cli import main
from tests.readme_reference import undocumented_columns, undocumented_metrics

CONTRACT = {
    "scenario",
    "accuracy",
    "tasks",
    "bits_per_task",
    "bits_kind",
    "channel_uses_per_task",
    "compression_ratio",
    "token_nmse",
    "latency_ms",
    "deadline_miss_rate",
    "users",
}
LATENCY = {"mean", "p50", "p95", "p99", "breakdown"}
BREAKDOWN = {
    "device_compute", "device_queueing", "uplink_queueing", "airtime", "harq_wait", "edge_queueing", "edge_compute"
}  # fmt: skip
USER = {
    "id", "modalities", "snr_db", "snr_re_db", "accuracy", "accuracy_ci95", "token_nmse", "bits_per_task",
    "device_compute_ms", "device_queueing_ms", "prbs_per_slot", "latency_ms",
}  # fmt: skip


def _run(path, out, *extra) -> dict:
    assert main(["run", str(path), "--out", str(out), "--quiet", *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # every key and column the run wrote has its line in the README's reference tables
    assert undocumented_metrics(metrics) == []
    headers = [next(csv.reader(open(out / name))) for name in ("per_task.csv", "per_user.csv")]
    assert undocumented_columns(*headers, metrics) == []
    return metrics


def test_the_readme_reference_check_finds_what_it_does_not_name():
    metrics = {"accuracy": 0.5, "latency_ms": {"mean": 1, "jitter": 2}, "users": [{"id": "a", "queue_depth": 3}]}
    metrics["brand_new"] = 1
    metrics["groups"] = [{"id": "g", "tasks": 3, "breakdown": {"airtime": 1.0, "backhaul": 2.0}}]
    metrics["users"][0] |= {"mode": "x", "link": {"mode": "digital"}, "latency_ms": {"mean": 1.0, "p99": 2.0}}
    # a name documented for another key (link's mode) does not count for this one; a nested section with a
    # row of its own (latency_ms, link) is held to that row
    assert undocumented_metrics(metrics) == [
        "brand_new",
        "groups.breakdown.backhaul",
        "groups.tasks",
        "latency_ms.jitter",
        "users.mode",
        "users.queue_depth",
    ]
    assert undocumented_columns(["task", "slot"], ["id", "queue_depth"], {"users": [{"id": "a"}]}) == [
        "per_task.csv:slot",
        "per_user.csv:queue_depth",
    ]


def test_run_writes_the_results_contract_and_reuses_the_checkpoint(tiny, write_scenario, tmp_path):
    from models.checkpoints import checkpoint_path
    from sim.checkpoint_plan import checkpoint_key
    from sim.scenario import validate_scenario

    path = write_scenario(tiny)
    # other tests of the session (sweeps) may have trained this checkpoint already
    existed = checkpoint_path(checkpoint_key(validate_scenario(tiny))[0]).is_file()
    metrics = _run(path, tmp_path / "run")
    for name in ("scenario.yaml", "metrics.json", "per_user.csv", "per_task.csv", "manifest.json", "training_log.csv"):
        assert (tmp_path / "run" / name).is_file(), name
    assert not (tmp_path / "run" / "tbs.csv").exists()  # analog: no transport blocks
    assert CONTRACT <= metrics.keys() and LATENCY <= metrics["latency_ms"].keys()
    assert BREAKDOWN == metrics["latency_ms"]["breakdown"].keys()
    assert [u["id"] for u in metrics["users"]] == [u["id"] for u in tiny["users"]]
    for user in metrics["users"]:
        assert USER <= user.keys() and {"mean", "p95"} <= user["latency_ms"].keys()
    assert metrics["tasks"] == 2 * tiny["evaluation"]["tasks_per_group"]
    assert metrics["bits_kind"] == "shannon-equivalent"
    assert 0 <= metrics["accuracy"] <= 1 and 0 < metrics["token_nmse"] < 2
    # a Wilson interval at every level, around its accuracy
    levels = [metrics, *metrics["groups"], *metrics["users"]]
    levels += [
        {"accuracy": a, "accuracy_ci95": metrics["accuracy_ci95_by_question_type"][q]}
        for q, a in metrics["accuracy_by_question_type"].items()
    ]
    assert metrics["accuracy_ci95_by_question_type"].keys() == metrics["accuracy_by_question_type"].keys()
    for level in levels:
        low, high = level["accuracy_ci95"]
        assert 0 <= low <= level["accuracy"] <= high <= 1 and high - low > 0.05  # 16-48 tasks a level
    nmse = {u["id"]: u["token_nmse"] for u in metrics["users"]}
    assert nmse["q1"] < nmse["both2"]  # 15 dB against -5 dB
    # the Shannon-equivalent bits of an analog user: channel uses x log2(1 + SNR per RE); q1's 8 symbols take
    # one PRB, its reference share (6 PRBs / 5 users), so its SNR per RE is its snr_db
    q1 = next(u for u in metrics["users"] if u["id"] == "q1")
    assert q1["snr_re_db"] == pytest.approx(15.0) and q1["prbs_per_slot"] == 1
    assert abs(q1["bits_per_task"] - q1["channel_uses_per_task"] * 5.0278) < 0.01 * q1["bits_per_task"]
    assert q1["channel_uses_per_task"] == 8  # its 16 token values as complex symbols, once each
    breakdown = metrics["latency_ms"]["breakdown"]
    assert abs(sum(breakdown.values()) - metrics["latency_ms"]["mean"]) < 1e-6
    with open(tmp_path / "run" / "per_task.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["tasks"]
    assert abs(sum(r["correct"] == "True" for r in rows) / len(rows) - metrics["accuracy"]) < 1e-9
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {"versions", "git_commit", "seed", "device", "wall_time_s", "checkpoint"} <= manifest.keys()
    assert manifest["trained_now"] == (not existed) and manifest["versions"]["sionna-no-rt"] == "2.2.0"

    from sim.info import collect_info

    audio = collect_info()["weights"]["logmel-cnn"]
    assert audio["present"] and all(
        0 <= float(m["validation_nearest_mean_accuracy"]) <= 1 for m in audio["cached"].values()
    )

    loaded = _run(path, tmp_path / "loaded")
    trained_now = [json.loads((tmp_path / d / "manifest.json").read_text())["trained_now"] for d in ("run", "loaded")]
    assert trained_now == [not existed, False]
    assert loaded == metrics  # the same results whether the run trained or loaded the checkpoint

    again = _run(path, tmp_path / "again", "--set", "users.cam1.snr_db=30")
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert not manifest["trained_now"]  # SNRs do not shape the model: the checkpoint is reused
    assert (tmp_path / "again" / "training_log.csv").read_text() == (tmp_path / "run" / "training_log.csv").read_text()
    assert next(u for u in again["users"] if u["id"] == "cam1")["snr_db"] == 30


def test_same_seed_twice_gives_identical_metrics(tiny, write_scenario, tmp_path, monkeypatch):
    """Everything from scratch twice (speech, encoders, training, evaluation), each with its own cache."""
    path = write_scenario(tiny)
    runs = []
    for i in range(2):
        monkeypatch.setenv("TOKENSIM_CACHE", str(tmp_path / f"cache{i}"))
        runs.append(_run(path, tmp_path / f"run{i}"))
    assert runs[0] == runs[1]
    other = _run(path, tmp_path / "other-seed", "--set", "seed=4")
    assert other["accuracy"] != runs[0]["accuracy"] or other["token_nmse"] != runs[0]["token_nmse"]


@pytest.mark.parametrize("fidelity", ["link", "abstraction"])
def test_digital_run_reports_coded_bits_and_capacity_gap(tiny, write_scenario, tmp_path, fidelity):
    """The digital link end to end: noise-proxy training, 5G NR TBs, per-user coded bits and capacity gap."""
    tiny["link"] = {"mode": "digital", "bits_per_value": 4, "fidelity": fidelity, "harq": {"max_retx": 1}}
    path = write_scenario(tiny)
    metrics = _run(path, tmp_path / fidelity)
    assert metrics["bits_kind"] == "coded" and metrics["link"]["fidelity"] == fidelity
    users = {u["id"]: u for u in metrics["users"]}
    for u in users.values():
        link = u["link"]
        assert link["goodput_bits_per_channel_use"] <= math.log2(1 + 10 ** (u["snr_re_db"] / 10))
        assert link["capacity_gap"] is None if link["goodput_bits_per_channel_use"] == 0 else link["capacity_gap"] >= 1
        # coded bits on air: every attempt fills the user's data REs with QAM symbols of its MCS
        assert u["bits_per_task"] >= u["channel_uses_per_task"] * 2 - 1e-9
    assert users["q1"]["link"]["capacity_gap"] >= 1.0  # 15 dB: its TBs get through
    assert users["q1"]["link"]["mcs"] > users["both2"]["link"]["mcs"]  # 15 dB against -5 dB: link adaptation
    assert users["both2"]["link"]["tb_residual_bler"] >= users["q1"]["link"]["tb_residual_bler"]
    with open(tmp_path / fidelity / "tbs.csv") as f:  # one row per TB attempt
        rows = list(csv.DictReader(f))
    assert {"slot", "user", "mcs", "tbs", "attempt", "ack", "sinr_eff_db"} <= rows[0].keys()
    first = [r for r in rows if r["attempt"] == "1"]
    assert math.isclose(len(rows) / len(first), metrics["link"]["tb_attempts_per_tb"])
    assert math.isclose(sum(r["ack"] == "False" for r in first) / len(first), metrics["link"]["tb_first_attempt_bler"])


def test_token_aware_allocation_runs_end_to_end_and_beats_equal_shares_by_its_objective(tiny, write_scenario, tmp_path):
    """Calibration on validation tasks, the joint allocation, evaluation with per-user token lengths and PRBs."""
    tiny["cell"] = {"num_prbs": 12}
    tiny["scheduler"] = {
        "policy": "token-aware",
        "allocation": {"token_factors": [1, 2], "calibration_tasks_per_group": 8, "calibration_snr_shifts_db": [-6, 6]},
    }
    path = write_scenario(tiny)
    metrics = _run(path, tmp_path / "token-aware")
    equal = _run(path, tmp_path / "equal", "--set", "scheduler.policy=equal-share")
    allocation = metrics["allocation"]
    assert allocation["objective"] <= allocation["equal_objective"] + 1e-12
    assert sum(allocation["prbs"]) <= 12 and min(allocation["prbs"]) >= 1
    for user, prbs, factor in zip(metrics["users"], allocation["prbs"], allocation["token_factor"]):
        assert user["num_prbs"] == prbs and user["token_factor"] == factor in (1, 2)
        reference = next(u for u in equal["users"] if u["id"] == user["id"])
        assert user["snr_db"] == reference["snr_db"]  # the reference SNR; the grant moves the SNR per RE
        assert user["channel_uses_per_task"] == reference["channel_uses_per_task"] / factor
    for shift, prbs in zip(allocation["snr_shift_db"], allocation["prbs"]):
        assert math.isclose(shift, -10 * math.log10(prbs / 2))  # the cell loop's power rule; 2: the equal share
    assert metrics["compression_ratio"] >= equal["compression_ratio"]
    latency = metrics["latency_ms"]
    assert abs(sum(latency["breakdown"].values()) - latency["mean"]) < 1e-6


def test_bench_chains_agree_on_the_same_tensors():
    from sim.bench.links import LinkBench, run_bench

    result = run_bench([4, 8], snr_db=5.0, bench=LinkBench(repeats=1, channel="tdl-a", num_prbs=4))
    for row in result["results"]:
        assert row["nmse_relative_difference"] < 1e-3
        assert row["tokensim_res_per_s"] > 0 and row["sionna_reference_res_per_s"] > 0


def test_info_reports_data_and_weights(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["data"]["fashion-mnist"]["present"] and info["data"]["espeak-ng"]["present"]
    assert info["weights"]["all-minilm-l6-v2"]["present"] and info["weights"]["efficientnet-lite0"]["present"]
    assert info["versions"]["torch"].startswith("2.13.0")


def _log(path) -> list[dict]:
    with open(path / "training_log.csv") as f:
        return list(csv.DictReader(f))


def test_train_runs_each_stage_and_logs_both(tiny, write_scenario, tmp_path, capsys):
    path = write_scenario(tiny)
    assert main(["train", str(path), "--stage", "align", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    aligned = _log(tmp_path / "a")
    assert [r["stage"] for r in aligned] == ["align"] * 3 and (tmp_path / "a" / "convergence.png").stat().st_size > 0
    assert {"loss", "reconstruction", "infonce_image", "infonce_audio"} <= aligned[0].keys()

    assert main(["train", str(path), "--stage", "finetune", "--out", str(tmp_path / "f"), "--quiet"]) == 0
    both = _log(tmp_path / "f")
    assert both[:3] == [{**r, "accuracy": "", "val_accuracy": "", "selected": ""} for r in aligned]  # stage 1 loaded
    finetuned = both[3:]
    assert [r["stage"] for r in finetuned] == ["finetune"] * 4
    assert [r["val_accuracy"] != "" for r in finetuned] == [False, True, False, True]  # every 2 steps
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in finetuned if r["val_accuracy"])
    # the weights kept are those of the best validation accuracy (the later of equals)
    (kept,) = [r for r in finetuned if r["selected"] == "True"]
    validated = [r for r in finetuned if r["val_accuracy"]]
    best = max(float(r["val_accuracy"]) for r in validated)
    assert kept is [r for r in validated if float(r["val_accuracy"]) == best][-1]

    assert main(["train", str(path), "--stage", "finetune", "--force", "--out", str(tmp_path / "g"), "--quiet"]) == 0
    assert _log(tmp_path / "g")[:3] == both[:3]  # --force on stage 2 keeps stage 1's checkpoint
    capsys.readouterr()

    argv = ["train", str(path), "--stage", "align", "--set", "training.alignment.enabled=false", "--quiet"]
    assert main(argv) == 2
    assert "training.alignment.enabled: False there is no alignment stage to run" in capsys.readouterr().err


@pytest.mark.parametrize("fidelity", ["link", "abstraction"])
def test_the_digital_token_nmse_falls_monotonically_with_the_snr(tiny, fidelity):
    """From -10 to 20 dB, every user at one SNR: no dip in between (the outer loop holds the BLER everywhere)."""
    from sim.engine import Simulation
    from sim.scenario import validate_scenario

    tiny["link"] = {"mode": "digital", "fidelity": fidelity}
    tiny["evaluation"] = {"tasks_per_group": 64, "batch_size": 32}
    sim = Simulation(validate_scenario(tiny), progress=False)
    sim.train()
    nmse = []
    for snr in (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0):
        evaluation = sim.evaluate(snr)
        nmse.append(float(evaluation.nmse_error.sum() / evaluation.nmse_power.sum()))
    assert all(later <= earlier + 0.01 for earlier, later in zip(nmse, nmse[1:])), nmse
    assert nmse[0] > 0.9 and nmse[-1] < 0.01, nmse  # from every TB lost to every value delivered


def test_every_value_is_erased_where_every_transport_block_fails(tiny, write_scenario, tmp_path):
    """MCS 27 at -10 dB: no TB gets through its retransmissions, so the erased-value rate is exactly 1."""
    tiny["link"] = {"mode": "digital", "mcs": 27, "fidelity": "abstraction", "harq": {"max_retx": 1}}
    tiny["snr_db"] = -10
    for user in tiny["users"]:
        user.pop("snr_db")
    metrics = _run(write_scenario(tiny), tmp_path / "lost")
    assert metrics["link"]["tb_residual_bler"] == 1.0
    assert metrics["link"]["erased_value_rate"] == 1.0
    assert metrics["token_nmse"] == pytest.approx(1.0)
    for user in metrics["users"]:
        assert user["link"]["erased_value_rate"] == 1.0


def test_validate_says_what_a_run_would_train_and_no_train_refuses_it(tiny, write_scenario, tmp_path, capsys):
    tiny["seed"] = 4242  # a model no other test trains: nothing of it is cached yet
    path = write_scenario(tiny)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "running it trains 2 checkpoint(s)" in err
    assert "alignment (stage 1)" in err and "trains 3 steps of 8 tasks" in err
    assert "fine-tuning (stage 2)" in err and "trains 4 steps of 8 tasks" in err and "model_from" in err

    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-train"]) == 3
    assert "is not cached" in capsys.readouterr().err and not out.exists()  # refused before anything ran
    grid = ["--set", "snr_db=0,10", "--out", str(tmp_path / "sweep"), "--quiet", "--no-train"]
    assert main(["sweep", str(path), *grid]) == 3

    assert main(["train", str(path), "--stage", "align", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "alignment (stage 1)" not in err and "fine-tuning (stage 2)" in err  # stage 1 cached, stage 2 still to go

    assert main(["train", str(path), "--out", str(tmp_path / "f"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["validate", str(path), "--set", "users.0.snr_db=-3"]) == 0  # SNRs are not in the key
    assert "every checkpoint it needs is cached: it evaluates only" in capsys.readouterr().err
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-train"]) == 0
    assert main(["sweep", str(path), *grid]) == 0
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-train", "--set", "seed=4243"]) == 3


def test_run_summary_goes_to_stdout_and_fits_80_columns_with_every_name_whole(
    tiny, write_scenario, tmp_path, monkeypatch, capsys
):
    tiny["users"][0]["id"] = "glasses-of-user-one"  # a long id: cut to "glasses-of…" before
    tiny["groups"][0]["users"][0] = "glasses-of-user-one"
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["run", str(write_scenario(tiny)), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.3f}" in out
    assert all(f"\n{u['id']} " in out for u in metrics["users"])  # every row, its name whole
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    assert "report:" in out and (tmp_path / "run" / "report.html").is_file()  # printed, folded to fit
