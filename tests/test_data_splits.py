"""The data is fixed apart from the model: seeds share test tasks, and no choice reads the test split."""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest

from sim.cli import main


def _column(path, name):
    with open(path, newline="") as f:
        return [row[name] for row in csv.DictReader(f)]


def test_two_model_seeds_are_evaluated_on_the_same_test_tasks(tiny, write_scenario, tmp_path):
    outs = []
    for seed in (3, 4):
        out = tmp_path / f"seed{seed}"
        assert main(["run", str(write_scenario(tiny)), "--out", str(out), "--quiet", "--set", f"seed={seed}"]) == 0
        outs.append(out / "per_task.csv")
    for column in ("question_type", "answer", "group"):
        assert _column(outs[0], column) == _column(outs[1], column), column
    # the model differs: the seeds do not give the same predictions on every task
    assert _column(outs[0], "predicted") != _column(outs[1], "predicted")
    # and another data seed draws other tasks
    tiny["dataset"]["seed"] = 1
    other = tmp_path / "data1"
    assert main(["run", str(write_scenario(tiny)), "--out", str(other), "--quiet", "--set", "seed=3"]) == 0
    assert _column(outs[0], "answer") != _column(other / "per_task.csv", "answer")


@pytest.fixture
def splits_read(monkeypatch):
    """Every split the data set or the feature loader is asked for, in order."""
    import models.data.fashion_avqa as fashion_avqa
    import sim.engine

    read: list[str] = []
    for method in ("images", "speech", "speakers", "tasks"):
        original = getattr(fashion_avqa.FashionAVQA, method)

        def spy(self, split, *args, _original=original, **kwargs):
            read.append(split)
            return _original(self, split, *args, **kwargs)

        monkeypatch.setattr(fashion_avqa.FashionAVQA, method, spy)
    original_features = sim.engine.load_features

    def features_spy(dataset, modalities, models, audio_training, split, *args, **kwargs):
        read.append(split)
        return original_features(dataset, modalities, models, audio_training, split, *args, **kwargs)

    monkeypatch.setattr(sim.engine, "load_features", features_spy)
    return read


def test_no_training_calibration_or_selection_step_reads_a_test_item(tiny, splits_read, monkeypatch):
    from sim.engine import Simulation
    from sim.scenario import validate_scenario

    tiny["seed"] = 11  # a checkpoint no other test trains: both stages and the selection run here
    tiny["dataset"]["seed"] = 5  # speech, audio encoder and features made here, through the spies
    tiny["scheduler"] = {
        "policy": "token-aware",
        "allocation": {"token_factors": [1, 2], "calibration_tasks_per_group": 8, "calibration_snr_shifts_db": [-6, 6]},
    }
    sim = Simulation(validate_scenario(tiny), progress=False)
    summary = sim.train()
    assert not summary.get("loaded") and summary["selected_step"] in (1, 3)  # validated every 2 steps
    sim.allocate(np.array([u.snr_db for u in sim.scenario.users]))
    assert {"train", "validation"} <= set(splits_read)
    assert "test" not in splits_read, splits_read
    sim.evaluate()
    assert "test" in splits_read  # the spies see the test split when it is read


def test_cached_features_follow_the_clips_of_their_split(tiny):
    """The audio features of a split are keyed by its clips: fewer test clips, other features."""
    from sim.engine import Simulation
    from sim.scenario import validate_scenario

    sizes = {}
    for clips in (20, 14):
        tiny["dataset"]["test_clips"] = clips
        sim = Simulation(validate_scenario(tiny), progress=False)
        sizes[clips] = sim.features("test").tokens["audio"].shape[0]
        assert sim.features("train").tokens["audio"].shape[0] == tiny["dataset"]["train_clips"]
    assert sizes == {20: 20, 14: 14}


def test_validation_sees_the_same_channel_every_time_and_leaves_the_training_draws_alone(tiny):
    """Common random numbers: a validation's fading, noise and SNRs are the same at every call, so the
    weights alone move the validation accuracy; and how often it validates does not change the training."""
    from sim.engine import Simulation
    from sim.scenario import validate_scenario

    def finetune(validation_every: int, lr: float | None = None) -> list[dict]:
        raw = copy.deepcopy(tiny)
        raw["seed"] = 13
        raw["training"]["validation_every"] = validation_every
        if lr is not None:
            raw["training"]["finetune"]["lr"] = lr
        sim = Simulation(validate_scenario(raw), progress=False)
        return [h for h in sim.train(force=True, stage="finetune")["history"] if h["stage"] == "finetune"]

    often, once = finetune(validation_every=1), finetune(validation_every=0)
    assert [h["loss"] for h in often] == [h["loss"] for h in once]
    assert sum("val_accuracy" in h for h in often) == 4 and sum("val_accuracy" in h for h in once) == 1

    frozen = finetune(validation_every=1, lr=1e-12)  # the weights barely move: every validation must agree
    assert len({h["val_accuracy"] for h in frozen}) == 1, [h["val_accuracy"] for h in frozen]
