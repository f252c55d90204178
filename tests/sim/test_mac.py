"""The MAC: grants within the carrier, every queued RE served, latency accounting, PF against RR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sionna.sys import PFSchedulerSUMIMO

from sim.mac.allocation import Calibration, TokenAwareAllocation
from sim.mac.cell import CellMac, WidebandFading, _edge_fifo, run_slots
from sim.mac.scheduler import SCHEDULERS, ProportionalFairScheduler
from sim.metrics import jain_fairness
from sim.scenario import validate_scenario

RES_PER_PRB = 144  # 12 subcarriers x 12 data symbols


@pytest.mark.parametrize("policy", list(SCHEDULERS))
def test_no_slot_grants_more_prbs_than_exist_or_than_a_user_needs(policy):
    batch, users, num_prbs = 16, 6, 10
    scheduler = SCHEDULERS[policy](users, num_prbs, batch_size=batch)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        backlog = torch.randint(0, 3000, (batch, users), generator=generator).double()
        backlog[torch.rand(batch, users, generator=generator) < 0.3] = 0
        capacity = torch.randint(50, 300, (batch, users), generator=generator).double()
        rate = torch.rand(batch, users, generator=generator, dtype=torch.float64) * 600
        group = torch.tensor([0, 0, 1, 1, 2, 2])
        group_backlog = torch.zeros(batch, 3, dtype=torch.float64).index_add_(1, group, backlog)[:, group]
        prbs = scheduler(backlog, capacity, rate, group_backlog)
        need = torch.ceil(backlog / capacity).long()
        assert (prbs >= 0).all() and (prbs.sum(-1) <= num_prbs).all()
        assert (prbs <= need).all()  # never a PRB to a user with nothing left to put in it
        if policy != "equal-share":  # work-conserving: PRBs idle only when every queue fits
            assert torch.equal(prbs.sum(-1), need.sum(-1).clamp(max=num_prbs))


@pytest.mark.parametrize("policy", list(SCHEDULERS))
def test_below_capacity_every_queued_re_is_served_in_order(policy):
    batch, users, tasks, num_prbs = 3, 8, 40, 24
    generator = torch.Generator().manual_seed(1)
    # offered load: 8 users x 300 REs every ~4 slots = 600 REs/slot against 24 x 144 = 3456
    ready = torch.randint(0, 160, (batch, users, tasks), generator=generator).sort(-1).values
    demand = torch.randint(100, 500, (batch, users, tasks), generator=generator).double()
    fading = WidebandFading(batch, users, True, 3.0, 3.5e9, 5e-4, seed=0)
    out = run_slots(
        SCHEDULERS[policy](users, num_prbs, batch_size=batch),
        ready,
        demand,
        torch.full((batch, users), float(RES_PER_PRB)),
        lambda slot: RES_PER_PRB * torch.log2(1 + 10 * fading(slot)),
        torch.arange(users) // 2,
    )
    assert torch.allclose(out["served"], demand.sum(-1))
    start, end = out["start_slot"], out["end_slot"]
    assert (start >= ready).all() and (end >= start).all()
    assert (start[..., 1:] >= end[..., :-1]).all()  # first in, first out per user
    assert out["granted_prbs"].sum() * RES_PER_PRB >= demand.sum()


def one_user_scenario(tiny, device_gflops, num_prbs=6, **extra):
    tiny["users"] = [{"id": "cam1", "modalities": ["text", "image"], "snr_db": 10, "device_gflops": device_gflops}]
    tiny["groups"] = [{"id": "a", "users": ["cam1"]}]
    tiny["cell"] = {"num_prbs": num_prbs}
    return validate_scenario(tiny | extra)


@pytest.mark.parametrize("policy", list(SCHEDULERS))
def test_one_user_without_queueing_latency_is_compute_plus_airtime(tiny, policy):
    slot_s = 0.5e-3
    device_s = 3 * slot_s  # compute ends on a slot boundary: nothing to wait for
    scenario = one_user_scenario(tiny, device_gflops=1.0, scheduler={"policy": policy})
    demand = np.array([[100.0], [6 * RES_PER_PRB + 1], [20 * RES_PER_PRB]])  # 1, 2 and 4 slots on 6 PRBs
    out = CellMac(scenario, slot_s).run(demand, np.zeros_like(demand), [device_s], [1e-4])
    airtime = np.ceil(demand[:, 0] / (6 * RES_PER_PRB)) * slot_s
    np.testing.assert_allclose(out["airtime_s"][0], airtime)
    np.testing.assert_allclose(out["queueing_s"][0], 0, atol=1e-12)
    np.testing.assert_allclose(out["latency_s"][0], device_s + airtime + 1e-4)


def test_compute_ending_mid_slot_waits_for_the_slot_boundary_as_queueing(tiny):
    slot_s = 0.5e-3
    scenario = one_user_scenario(tiny, device_gflops=1.0)
    demand = np.array([[100.0]])
    out = CellMac(scenario, slot_s).run(demand, np.array([[2]]), [0.7e-3], [0.0])
    np.testing.assert_allclose(out["queueing_s"], [[0.3e-3]])
    np.testing.assert_allclose(out["airtime_s"], [[3 * slot_s]])  # one slot on air + two HARQ round-trip slots
    np.testing.assert_allclose(out["latency_s"], [[0.7e-3 + 0.3e-3 + 1.5e-3]])


def test_proportional_fair_beats_round_robin_in_sum_log_throughput_on_a_faded_channel():
    users, num_prbs, slots = 8, 24, 3000
    mean_snr = 10 ** (np.linspace(-5, 20, users) / 10)
    totals = {}
    for policy in ("round-robin", "proportional-fair"):
        scheduler = SCHEDULERS[policy](users, num_prbs)
        fading = WidebandFading(1, users, True, 3.0, 3.5e9, 0.5e-3, seed=4)  # same fades for both
        delivered = torch.zeros(1, users, dtype=torch.float64)
        full = torch.full((1, users), 1e12, dtype=torch.float64)
        for slot in range(slots):
            bits_per_prb = RES_PER_PRB * torch.log2(1 + torch.as_tensor(mean_snr) * fading(slot))
            prbs = scheduler(full, bits_per_prb, bits_per_prb, full)
            delivered += prbs * bits_per_prb
        totals[policy] = delivered[0] / slots
    log_rr, log_pf = (float(torch.log(totals[p]).sum()) for p in ("round-robin", "proportional-fair"))
    assert log_pf >= log_rr + 0.5, (log_pf, log_rr)  # multiuser diversity: clearly, not marginally
    assert (totals["round-robin"] > 0).all() and (totals["proportional-fair"] > 0).all()


def test_proportional_fair_with_full_buffers_grants_like_sionna():
    users, num_prbs, batch = 5, 12, 4
    ours = ProportionalFairScheduler(users, num_prbs, batch_size=batch)
    sionna = PFSchedulerSUMIMO(users, num_prbs, 1, batch_size=batch, device="cpu")
    generator = torch.Generator().manual_seed(2)
    last = torch.zeros(batch, users)
    full = torch.full((batch, users), 1e12, dtype=torch.float64)
    for _ in range(50):
        rate = torch.rand(batch, users, generator=generator) * 500 + 1
        prbs = ours(full, rate.double(), rate.double(), full)
        theirs = sionna(last, rate[:, None, None, :].expand(batch, 1, num_prbs, users))[:, 0, :, :, 0].sum(1)
        assert torch.equal(prbs, theirs.long())
        last = (prbs * rate).float()


def test_task_aware_lowers_mean_latency_against_round_robin_in_snapshots(tiny):
    # two groups: a small one (2 users x 300 REs) and a large one (2 users x 3000 REs), 4 PRBs
    tiny["users"] = [
        {"id": f"u{i}", "modalities": ["text"] if i % 2 == 0 else ["image"], "snr_db": 10} for i in range(4)
    ]
    tiny["groups"] = [{"id": "small", "users": ["u0", "u1"]}, {"id": "large", "users": ["u2", "u3"]}]
    tiny["cell"] = {"num_prbs": 4}
    demand = np.tile([300.0, 300.0, 3000.0, 3000.0], (20, 1))
    latency = {}
    for policy in ("round-robin", "task-aware"):
        scenario = validate_scenario(tiny | {"scheduler": {"policy": policy}})
        out = CellMac(scenario, 0.5e-3).run(demand, np.zeros_like(demand), np.zeros(4), np.zeros(2))
        latency[policy] = out["latency_s"].mean()
    # shortest group first is optimal here: the small group's 6 PRB-slots take 2 slots, the rest end at slot 12
    assert math.isclose(latency["task-aware"], (2 + 12) / 2 * 0.5e-3)
    assert latency["round-robin"] > latency["task-aware"] + 0.25e-3


def test_edge_fifo_matches_the_recursion():
    generator = np.random.default_rng(0)
    ready = generator.uniform(0, 1, (5, 7))
    service = generator.uniform(0, 0.3, (5, 7))
    finish = _edge_fifo(ready, service, per_column=False)
    order = np.argsort(ready, axis=None, kind="stable")
    free, expected = 0.0, np.empty(ready.size)
    for i in order:
        free = max(free, ready.flat[i]) + service.flat[i]
        expected[i] = free
    np.testing.assert_allclose(finish.ravel(), expected)


def test_poisson_traffic_queues_at_high_load_and_not_at_low(tiny):
    tiny["cell"] = {"num_prbs": 6}
    demand = np.full((200, 5), 400.0)  # 5 users x 400 REs per group task; 6 x 144 REs per slot
    waits = {}
    for rate in (20.0, 300.0):  # tasks/s per group, two groups: about 3 % and 47 % of the carrier
        scenario = validate_scenario(
            tiny | {"traffic": {"arrival": "poisson", "rate_per_s": rate}, "scheduler": {"policy": "round-robin"}}
        )
        out = CellMac(scenario, 0.5e-3).run(demand, np.zeros_like(demand), np.zeros(5), np.zeros(2))
        waits[rate] = out["queueing_s"].mean()
        assert out["prb_utilisation"] <= 1
    assert waits[300.0] > waits[20.0]


def test_scenario_names_every_scheduler():
    from sim.mac import SCHEDULER_POLICIES

    assert tuple(SCHEDULERS) == SCHEDULER_POLICIES


def test_jain_fairness():
    assert jain_fairness([1, 1, 1, 1]) == 1
    assert math.isclose(jain_fairness([1, 0, 0, 0]), 0.25)
    assert math.isclose(jain_fairness([1, 2, 3]), 36 / 42)


def synthetic_calibration(res_by_factor, accuracy_by_factor, num_groups):
    """Accuracy and REs that do not depend on SNR: the allocation's choices follow from them alone."""
    shifts = np.array([-20.0, 20.0])
    res = np.array(res_by_factor, dtype=float)[:, None, :].repeat(2, 1)
    accuracy = np.array(accuracy_by_factor, dtype=float)[:, None, None].repeat(2, 1).repeat(num_groups, 2)
    return Calibration([1, 2, 4][: len(res)], shifts, accuracy, res, np.zeros_like(res))


def allocate(calibration, group_of_user, num_prbs, **weights):
    return TokenAwareAllocation(
        calibration,
        np.array(group_of_user),
        num_prbs=num_prbs,
        reference_prbs=num_prbs // len(group_of_user),
        res_per_prb=RES_PER_PRB,
        slot_s=0.5e-3,
        device_s=np.zeros(len(group_of_user)),
        edge_s=np.zeros(max(group_of_user) + 1),
        deadline_s=20e-3,
        **weights,
    )()


def test_token_aware_allocation_gives_prbs_to_the_slowest_sender_and_never_does_worse_than_equal_shares():
    # one group: user 0 has 10x the payload of user 1; 12 PRBs
    cal = synthetic_calibration([[20 * RES_PER_PRB, 2 * RES_PER_PRB]], [0.9], num_groups=1)
    out = allocate(cal, [0, 0], 12)
    assert sum(out["prbs"]) <= 12 and min(out["prbs"]) >= 1
    assert out["prbs"][0] >= 10 and out["prbs"][1] <= 2
    assert out["objective"] < out["equal_objective"]  # equal shares: 4 slots for user 0; here 2
    # the power of user 0 spreads over its PRBs
    assert math.isclose(out["snr_shift_db"][0], -10 * math.log10(out["prbs"][0] / 6))


@pytest.mark.parametrize(
    ("weights", "factor"),
    [({"latency_weight": 1.0, "loss_weight": 0.0}, 4), ({"latency_weight": 0.0, "loss_weight": 1.0}, 1)],
)
def test_token_aware_allocation_trades_token_length_by_its_weights(weights, factor):
    # fewer tokens: fewer REs, lower accuracy
    res = [[40 * RES_PER_PRB] * 2, [20 * RES_PER_PRB] * 2, [10 * RES_PER_PRB] * 2]
    out = allocate(synthetic_calibration(res, [0.9, 0.8, 0.6], num_groups=2), [0, 1], 8, **weights)
    assert out["token_factor"] == [factor, factor]
    assert out["objective"] <= out["equal_objective"]
