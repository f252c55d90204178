"""The MAC blocks: per-PRB schedulers, the FIFO queue, uplink power, the token-aware allocation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sionna.sys import PFSchedulerSUMIMO

from sim.mac.allocation import Calibration, TokenAwareAllocation
from sim.mac.power import UplinkPower
from sim.mac.scheduler import IDLE, SCHEDULERS, ProportionalFairScheduler, assign_prbs, grants
from sim.mac.traffic import fifo
from sim.metrics import jain_fairness
from sim.scenario import validate_scenario

RES_PER_PRB = 144  # 12 subcarriers x 12 data symbols


def random_slot(generator, batch, users, num_prbs):
    need = torch.randint(0, 8, (batch, users), generator=generator)
    need[torch.rand(batch, users, generator=generator) < 0.3] = 0
    rate = torch.rand(batch, users, num_prbs, generator=generator, dtype=torch.float64) * 600
    group = torch.arange(users) // 2
    backlog = need.double() * 100
    group_backlog = torch.zeros(batch, int(group.max()) + 1, dtype=torch.float64).index_add_(1, group, backlog)
    first = torch.rand(batch, users, generator=generator) < 0.2
    return need, rate, group_backlog[:, group], first


@pytest.mark.parametrize("policy", list(SCHEDULERS))
def test_every_prb_to_one_user_within_what_it_can_use_and_idle_only_when_nobody_can(policy):
    batch, users, num_prbs = 16, 6, 10
    scheduler = SCHEDULERS[policy](users, num_prbs, batch_size=batch)
    generator = torch.Generator().manual_seed(0)
    active = torch.arange(users)
    for _ in range(100):
        need, rate, group_backlog, first = random_slot(generator, batch, users, num_prbs)
        owner = scheduler(active, need, rate, group_backlog, first)
        scheduler.observe(owner, torch.rand(batch, users, generator=generator))
        assert owner.shape == (batch, num_prbs) and ((owner >= IDLE) & (owner < users)).all()
        granted = grants(owner, users)
        assert (granted <= need).all() and (granted.sum(-1) <= num_prbs).all()
        if policy != "equal-share":  # work-conserving: a PRB is idle only when every user has all it needs
            assert torch.equal(granted.sum(-1), need.sum(-1).clamp(max=num_prbs))


def sequential_greedy(metric, quota):
    """The reference: walk all (user, PRB) pairs in descending metric, one at a time."""
    batch, users, num_prbs = metric.shape
    owner = torch.full((batch, num_prbs), IDLE, dtype=torch.long)
    for b in range(batch):
        left = quota[b].clone()
        for index in torch.argsort(metric[b].flatten(), descending=True, stable=True).tolist():
            u, p = divmod(index, num_prbs)
            if metric[b, u, p] > -math.inf and left[u] > 0 and owner[b, p] == IDLE:
                owner[b, p], left[u] = u, left[u] - 1
    return owner


def test_vectorised_assignment_equals_the_sequential_greedy():
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        metric = torch.rand(4, 7, 12, generator=generator, dtype=torch.float64)
        metric[torch.rand(4, 7, 12, generator=generator) < 0.1] = -math.inf
        quota = torch.randint(0, 5, (4, 7), generator=generator)
        assert torch.equal(assign_prbs(metric, quota), sequential_greedy(metric, quota))


@pytest.mark.parametrize("policy", ["proportional-fair", "max-rate", "task-aware"])
def test_channel_aware_policies_give_a_lone_user_its_best_prbs(policy):
    rate = torch.tensor([[[5.0, 9.0, 1.0, 7.0, 3.0, 8.0]]], dtype=torch.float64)
    owner = SCHEDULERS[policy](1, 6)(
        torch.tensor([0]), torch.tensor([[3]]), rate, torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.bool)
    )
    assert (owner[0] >= 0).tolist() == [False, True, False, True, False, True]


@pytest.mark.parametrize("policy", [p for p in SCHEDULERS if p != "equal-share"])
def test_a_due_retransmission_is_served_before_new_data(policy):
    """User 2 has a retransmission of 3 PRBs, more than its share (2) and on the worst channel; the others
    want everything. (Under equal shares a TB, and so its retransmission, never exceeds the share.)"""
    users, num_prbs = 4, 8
    need = torch.tensor([[8, 8, 3, 8]])
    rate = torch.ones(1, users, num_prbs, dtype=torch.float64)
    rate[0, 2] = 0.1
    first = torch.tensor([[False, False, True, False]])
    scheduler = SCHEDULERS[policy](users, num_prbs)
    owner = scheduler(torch.arange(users), need, rate, need.double(), first)
    assert grants(owner, users)[0, 2] == 3


def test_proportional_fair_with_full_buffers_grants_like_sionna():
    users, num_prbs, batch = 5, 12, 4
    ours = ProportionalFairScheduler(users, num_prbs, batch_size=batch)
    sionna = PFSchedulerSUMIMO(users, num_prbs, 1, batch_size=batch, device="cpu")
    generator = torch.Generator().manual_seed(2)
    last = torch.zeros(batch, users)
    full = torch.full((batch, users), num_prbs)
    for _ in range(50):
        rate = torch.rand(batch, users, num_prbs, generator=generator) * 500 + 1
        owner = ours(torch.arange(users), full, rate.double(), torch.zeros(batch, users), torch.zeros_like(full) > 0)
        theirs = sionna(last, rate.permute(0, 2, 1)[:, None])[:, 0, :, :, 0]  # [batch, prbs, users]
        assert torch.equal(owner, theirs.long().argmax(-1))
        delivered = torch.zeros(batch, users).scatter_add_(1, owner, rate.gather(1, owner[:, None]).squeeze(1))
        ours.observe(owner, delivered)
        last = delivered


def test_fifo_matches_the_recursion():
    generator = np.random.default_rng(0)
    ready = torch.as_tensor(generator.uniform(0, 1, (5, 7)))
    service = torch.as_tensor(generator.uniform(0, 0.3, (5, 7)))
    start, finish = fifo(ready, service)
    for row in range(5):
        free = 0.0
        for i in np.argsort(ready[row].numpy(), kind="stable"):
            assert math.isclose(float(start[row, i]), max(free, float(ready[row, i])))
            free = max(free, float(ready[row, i])) + float(service[row, i])
            assert math.isclose(float(finish[row, i]), free)


@pytest.mark.parametrize("load", [0.5, 0.8])
def test_device_fifo_with_poisson_arrivals_waits_as_pollaczek_khinchine(load):
    # M/D/1: mean wait lambda D^2 / (2 (1 - rho)); 20 x 5000 jobs, fixed compute D
    service_s = 17e-3
    rate = load / service_s
    generator = np.random.default_rng(1)
    arrivals = torch.as_tensor(generator.exponential(1 / rate, (20, 5000)).cumsum(-1))
    start, _ = fifo(arrivals, torch.tensor(service_s))
    expected = rate * service_s**2 / (2 * (1 - load))
    assert abs(float((start - arrivals).mean()) / expected - 1) < 0.1


def test_scenario_names_every_scheduler():
    from sim.mac import SCHEDULER_POLICIES

    assert tuple(SCHEDULERS) == SCHEDULER_POLICIES


def test_jain_fairness():
    assert jain_fairness([1, 1, 1, 1]) == 1
    assert math.isclose(jain_fairness([1, 0, 0, 0]), 0.25)
    assert math.isclose(jain_fairness([1, 2, 3]), 36 / 42)


def test_power_spreads_over_the_grant_and_open_loop_control_holds_the_power_per_prb(tiny):
    fixed = UplinkPower(validate_scenario(tiny), reference_prbs=2)
    shift = fixed.shift_db(torch.tensor([[1, 2, 4, 8, 2]]))
    np.testing.assert_allclose(shift[0].numpy(), [3.0103, 0, -3.0103, -6.0206, 0], atol=1e-4)
    # TS 38.213: P = min(P_max, P0 + alpha PL + 10 log10(b)); far users hit P_max and spread from there
    tiny["users"] = [
        {"id": "q1", "modalities": ["text", "image"], "distance_m": 20},
        {"id": "q2", "modalities": ["text", "image"], "distance_m": 150},
    ]
    tiny["groups"] = [{"id": "a", "users": ["q1"]}, {"id": "b", "users": ["q2"]}]
    tiny["channel"] = {"model": "umi"}
    tiny["radio"] = {"p0_dbm": -90, "alpha": 1.0}
    scenario = validate_scenario(tiny)
    controlled = UplinkPower(scenario, reference_prbs=3)
    prbs = torch.tensor([[1, 1], [3, 3], [6, 6]])
    shift = controlled.shift_db(prbs)
    near_loss, far_loss = (u.pathloss_db + u.shadow_fading_db for u in scenario.users)
    for row, b in enumerate((1, 3, 6)):  # the near user is below P_max: its power per RE does not move
        assert abs(float(shift[row, 0])) < 1e-9
        far = min(23.0, -90 + far_loss + 10 * math.log10(b)) - 10 * math.log10(b)
        far_ref = min(23.0, -90 + far_loss + 10 * math.log10(3)) - 10 * math.log10(3)
        assert math.isclose(float(shift[row, 1]), far - far_ref, abs_tol=1e-9)
    assert near_loss < far_loss


def synthetic_calibration(res_by_factor, accuracy_by_factor, num_groups):
    """Accuracy and REs that do not depend on SNR: the allocation's choices follow from them alone."""
    shifts = np.array([-20.0, 20.0])
    res = np.array(res_by_factor, dtype=float)[:, None, :].repeat(2, 1)
    accuracy = np.array(accuracy_by_factor, dtype=float)[:, None, None].repeat(2, 1).repeat(num_groups, 2)
    return Calibration([1, 2, 4][: len(res)], shifts, accuracy, res, np.zeros_like(res))


class FixedSnrPower:
    """The power rule of users with a fixed SNR: spread over ``b`` PRBs from a reference share."""

    def __init__(self, reference_prbs):
        self.reference_prbs = reference_prbs

    def shift_db(self, prbs):
        return -10 * torch.log10(torch.as_tensor(prbs, dtype=torch.float64) / self.reference_prbs)


def allocate(calibration, group_of_user, num_prbs, **weights):
    return TokenAwareAllocation(
        calibration,
        np.array(group_of_user),
        num_prbs=num_prbs,
        power=FixedSnrPower(num_prbs // len(group_of_user)),
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


def test_proportional_fair_serves_a_user_whose_average_has_decayed_to_zero():
    """After ~5000 idle slots Sionna's float32 average of a user is 0 and its metric infinite: the user is
    served first, and everyone else's PRBs are still assigned (no NaN)."""
    scheduler = ProportionalFairScheduler(3, 6)
    scheduler.pf._rate_achieved_past.zero_()
    scheduler.delivered = torch.tensor([[0.0, 500.0, 500.0]])
    rate = torch.full((1, 3, 6), 100.0, dtype=torch.float64)
    owner = scheduler(
        torch.arange(3), torch.tensor([[2, 6, 6]]), rate, torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool)
    )
    assert grants(owner, 3)[0, 0] == 2 and bool((owner >= 0).all())


def test_the_reference_share_of_the_users_snr_is_a_scenario_key(tiny):
    """radio.reference_prbs: the grant at which a user's SNR per RE is its snr_db (default the equal share)."""
    from sim.mac.power import reference_share

    assert reference_share(validate_scenario(tiny)) == 1  # 6 PRBs, 5 users
    tiny["cell"] = {"num_prbs": 24}
    assert reference_share(validate_scenario(tiny)) == 4
    tiny["radio"] = {"reference_prbs": 2}
    power = UplinkPower(validate_scenario(tiny))
    snr = power(torch.tensor([[2, 4, 0, 1, 8]]))
    np.testing.assert_allclose(snr[0, :2].numpy(), [15.0, 10.0 - 3.0103], atol=1e-4)
    assert snr[0, 2] == -math.inf and snr[0, 3] == pytest.approx(0.0 + 3.0103, abs=1e-4)
    assert snr[0, 4] == pytest.approx(-5.0 - 6.0206, abs=1e-4)
