"""`tokensim reproduce`'s small variant: every experiment of the paper set, shrunk to seconds."""

from __future__ import annotations

import json

import pytest

from sim.reproduce import reproduce
from sim.reproduce_plan import Plan
from sim.reproduce_summary import steps_to

SMALL = [
    "dataset.train_images=48",
    "dataset.validation_images=24",
    "dataset.test_images=24",
    "dataset.train_clips=30",
    "dataset.validation_clips=20",
    "dataset.test_clips=20",
    "training.alignment.steps=3",
    "training.alignment.batch_size=8",
    "training.finetune.steps=4",
    "training.finetune.batch_size=8",
    "training.validation_every=2",
    "training.validation_tasks_per_group=8",
    "training.train_tasks_per_group=64",
    "training.audio_encoder.epochs=1",
    "evaluation.tasks_per_group=16",
    "models.receiver_hidden=32",
]


def test_small_reproduction_runs_every_experiment_and_resumes(tmp_path, monkeypatch):
    plan = Plan(
        seeds=[0], snrs_db=[0, 10], temperatures=[0.03, 0.07], token_lengths=[1], per_snr_db=[0, 10], overrides=SMALL
    )
    names = [j.name for j in plan.jobs()]
    assert len(names) == len(set(names)) == 4 + 1 + 2 + 4  # tau 0.07 is the snr experiment's aligned run
    records = reproduce(plan, tmp_path, progress=False)
    assert [r["name"] for r in records] == names
    for r in records:
        assert set(r["accuracy"]) == {f"{s:g}" for s in r["snrs_db"]}
        assert all(0 <= a <= 1 for a in r["accuracy"].values())
        assert [step for step, _ in r["validation"]] == [1, 3]
        assert ("after_alignment" in r) == r["info"]["aligned"]
    page = (tmp_path / "index.md").read_text()
    for heading in ("Accuracy vs SNR", "InfoNCE temperature", "Token length", "One model across SNRs", "Cost"):
        assert heading in page
    assert (tmp_path / "accuracy_vs_snr.png").stat().st_size > 0 and (tmp_path / "accuracy_vs_snr.pdf").is_file()
    snr_table = page.split("**AWGN**")[1].split("**TDL")[0]
    aligned = next(r for r in records if r["name"] == "snr-awgn-aligned-seed0")
    assert f"| aligned (1 seeds) | {aligned['accuracy']['0']:.3f} | {aligned['accuracy']['10']:.3f} |" in snr_table

    # a rerun trains nothing: every run has its record; a lost record reruns that run only
    import sim.engine

    (tmp_path / "runs" / "per-snr-10-baseline-seed0.json").unlink()
    trained = []
    original = sim.engine.Simulation.train
    monkeypatch.setattr(sim.engine.Simulation, "train", lambda self, **kw: trained.append(1) or original(self, **kw))
    again = reproduce(plan, tmp_path, progress=False)
    assert len(trained) == 1
    redone = next(r for r in again if r["name"] == "per-snr-10-baseline-seed0")
    before = next(r for r in records if r["name"] == "per-snr-10-baseline-seed0")
    assert redone["accuracy"] == before["accuracy"] and not redone["trained_now"]  # its checkpoint was kept
    assert json.loads((tmp_path / "runs" / "snr-tdl-baseline-seed0.json").read_text()) == next(
        r for r in records if r["name"] == "snr-tdl-baseline-seed0"
    )


@pytest.mark.parametrize(
    ("validation", "target", "expected"),
    [([[0, 0.5], [4, 0.79], [9, 0.8]], 0.8, 10), ([[0, 0.9]], 0.8, 1), ([[0, 0.5], [4, 0.7]], 0.8, None)],
)
def test_steps_to_target(validation, target, expected):
    assert steps_to(validation, target) == expected
