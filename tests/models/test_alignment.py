"""Stage 1 (alignment): the InfoNCE loss by hand, what alignment learns, and that the baseline skips it."""

from __future__ import annotations

import math

import pytest
import torch

from models.alignment import InfoNCELoss, caption_similarity, normalised_mse

R2 = math.sqrt(2)
# Queries (1,0), (0,1), (1,1) and keys (1,0), (1,1), (0,1): cosine similarities, row i = query i.
COSINE = [[1, 1 / R2, 0], [0, 1 / R2, 1], [1 / R2, 1, 1 / R2]]
QUERIES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
KEYS = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def _hand_infonce(rows, tau, masked=()):
    """-mean_i log(exp(s_ii / tau) / sum_j exp(s_ij / tau)), leaving out the (i, j) in ``masked``."""
    losses = []
    for i, row in enumerate(rows):
        denominator = sum(math.exp(s / tau) for j, s in enumerate(row) if (i, j) not in masked)
        losses.append(math.log(denominator) - row[i] / tau)
    return sum(losses) / len(losses)


def test_infonce_equals_the_hand_computed_value_on_a_3x3_batch():
    tau = 0.5
    # written out: rows of s/tau are [2, √2, 0], [0, √2, 2], [√2, 2, √2]
    by_hand = (
        (math.log(math.exp(2) + math.exp(R2) + 1) - 2)
        + (math.log(1 + math.exp(R2) + math.exp(2)) - R2)
        + (math.log(2 * math.exp(R2) + math.exp(2)) - R2)
    ) / 3
    assert by_hand == pytest.approx(_hand_infonce(COSINE, tau))
    assert InfoNCELoss(tau)(QUERIES, KEYS).item() == pytest.approx(by_hand, rel=1e-6)

    columns = [list(c) for c in zip(*COSINE)]
    symmetric = (by_hand + _hand_infonce(columns, tau)) / 2
    assert InfoNCELoss(tau, symmetric=True)(QUERIES, KEYS).item() == pytest.approx(symmetric, rel=1e-6)

    # rows 0 and 2 share a label: neither is the other's negative
    masked = _hand_infonce(COSINE, tau, masked={(0, 2), (2, 0)})
    assert InfoNCELoss(tau)(QUERIES, KEYS, torch.tensor([4, 7, 4])).item() == pytest.approx(masked, rel=1e-6)
    # scale-free in both inputs (cosine similarity)
    assert InfoNCELoss(tau)(3 * QUERIES, 0.1 * KEYS).item() == pytest.approx(by_hand, rel=1e-6)


def test_lower_temperature_sharpens_and_a_perfect_match_costs_nothing():
    keys = torch.eye(3)
    assert InfoNCELoss(0.01)(keys, keys).item() < 1e-6
    assert InfoNCELoss(0.03)(QUERIES, KEYS).item() != pytest.approx(InfoNCELoss(0.13)(QUERIES, KEYS).item())


def test_normalised_mse():
    target = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    assert normalised_mse(torch.zeros_like(target), target).item() == pytest.approx(1.0)
    assert normalised_mse(target, target).item() == 0.0
    assert normalised_mse(target + 0.5, target).item() == pytest.approx(0.25 / 1.5)


def _margin(found) -> float:
    similarity, label = found["similarity"], found["label"]
    matched = similarity.gather(1, label[:, None])[:, 0]
    mismatched = (similarity.sum(1) - matched) / (similarity.shape[1] - 1)
    return (matched - mismatched).mean().item()


def test_after_stage_1_matched_pairs_are_more_similar_on_held_out_data(tiny):
    from sim.engine import Simulation
    from sim.scenario import validate_scenario

    tiny["dataset"].update(train_images=400, test_images=200)
    tiny["training"]["alignment"].update(steps=150, batch_size=32, lr=3e-3)
    sim = Simulation(validate_scenario(tiny), progress=False)
    held_out = sim.sampler("test", 200)  # test images and held-out voices

    def margins():
        channel = sim.uplink.training_channel((10.0, 10.0), torch.Generator().manual_seed(0))
        captions = sim.dataset.captions()
        found = caption_similarity(sim.model, channel, held_out, captions, ("image", "audio"))
        return {m: _margin(f) for m, f in found.items()}

    before = margins()
    summary = sim.train(stage="align")
    after = margins()
    assert [h["stage"] for h in summary["history"]] == ["align"] * 150
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]
    assert after["image"] > 0.1 and after["image"] > before["image"] + 0.1, (before, after)
    # speech too, though this tiny set trains its audio encoder on 30 clips for one epoch
    assert after["audio"] > before["audio"] + 0.02, (before, after)


def test_the_baseline_skips_stage_1(tiny, monkeypatch):
    import sim.training_stages
    from models.checkpoints import checkpoint_path
    from sim.checkpoint_plan import checkpoint_key
    from sim.engine import Simulation
    from sim.scenario import validate_scenario

    def no_alignment(*args, **kwargs):
        raise AssertionError("stage 1 ran for the baseline")

    monkeypatch.setattr(sim.training_stages, "align_transceivers", no_alignment)
    tiny["training"]["alignment"]["enabled"] = False
    scenario = validate_scenario(tiny)
    simulation = Simulation(scenario, progress=False)
    initial = {k: v.clone() for k, v in simulation.model.receivers.state_dict().items()}
    summary = simulation.train(force=True)
    assert {h["stage"] for h in summary["history"]} == {"finetune"}
    assert not checkpoint_path(checkpoint_key(scenario, "align")[0]).exists()
    # the stage-1 settings of a disabled stage do not shape the baseline's model
    tiny["training"]["alignment"]["temperature"] = 0.5
    assert checkpoint_key(validate_scenario(tiny))[0] == simulation.checkpoint
    # and fine-tuning started from the fresh initialisation that an aligned run would align
    aligned = dict(tiny, training={**tiny["training"], "alignment": {**tiny["training"]["alignment"], "enabled": True}})
    fresh = Simulation(validate_scenario(aligned), progress=False)
    for k, v in fresh.model.receivers.state_dict().items():
        assert torch.equal(v, initial[k])
