"""Uplink schedulers: which user gets which PRB of a slot.

Every scheduler is one block with the same call. In: how many PRBs each
user could use this slot (its backlog, in PRBs at its channel), the
achievable rate of every user on every PRB (the CQI), what each user's group
still has queued, and which users carry a HARQ retransmission (those go
first, as in 5G-LENA's schedulers). Out: the owner of every PRB. No PRB is
granted twice, no user gets more PRBs than it can use, and the carrier is
never exceeded. ``SCHEDULERS`` maps ``scheduler.policy`` to its class:

- ``equal-share``: every user owns ``num_prbs // num_users`` consecutive PRBs
  in every slot (static OFDMA, the paper's setting); unused PRBs stay idle. A
  TB formed on a share fits it again, so its retransmission needs no priority.
- ``round-robin``: the backlogged user served longest ago first, each on
  consecutive PRBs from the bottom of the carrier (channel-blind).
- ``proportional-fair``: per PRB, the largest achievable-over-average rate
  first; metric and average are Sionna's :class:`~sionna.sys.PFSchedulerSUMIMO`.
- ``max-rate``: per PRB, the largest achievable rate first.
- ``task-aware``: tokensim's own, shortest remaining group task first
  (:class:`TaskAwareScheduler`), each user on its best PRBs.
- ``token-aware``: tokensim's joint allocation of token length and PRB share
  (:class:`~sim.mac.allocation.TokenAwareAllocation`); each user has its share
  in every slot and what is left goes in ``task-aware`` order
  (:class:`AllocatedShareScheduler`).

The channel-aware policies are frequency-selective: :func:`assign_prbs`
gives each PRB to the user its metric ranks first there, within what each
user can use. A batch dimension holds independent cells (timelines).
"""

from __future__ import annotations

import torch
from sionna.sys import PFSchedulerSUMIMO
from torch import nn

IDLE = -1  # owner of a PRB nobody is granted
STARVED = 1e30  # the PF metric of a user whose average rate has decayed to 0: above any finite one


def fixed_shares(shares, num_users: int, num_prbs: int) -> torch.Tensor:
    """[num_users] int64 PRBs per user (``None``: ``num_prbs // num_users`` each); one at least, within the carrier."""
    if shares is None:
        if num_prbs < num_users:
            raise ValueError(f"equal shares need a PRB per user: {num_prbs} PRBs, {num_users} users")
        shares = [num_prbs // num_users] * num_users
    if sum(shares) > num_prbs or min(shares) < 1:
        raise ValueError(f"shares {shares} do not fit {num_prbs} PRBs with one at least each")
    return torch.as_tensor(shares, dtype=torch.long)


def grants(owner: torch.Tensor, num_users: int) -> torch.Tensor:
    """[batch, num_prbs] owners -> [batch, num_users] int64 PRBs each user is granted."""
    counts = torch.zeros(owner.shape[0], num_users + 1, dtype=torch.long, device=owner.device)
    return counts.scatter_add_(1, torch.where(owner >= 0, owner, num_users), torch.ones_like(owner))[:, :num_users]


def assign_prbs(metric: torch.Tensor, quota: torch.Tensor) -> torch.Tensor:
    """Each PRB to the user with the highest ``metric`` on it, no user beyond its ``quota``.

    The greedy assignment that walks all (user, PRB) pairs in descending
    metric and takes a pair when its PRB is free and its user has quota
    left, vectorised in rounds: every free PRB names its best user among
    those with quota left; every user then takes, from the top of its own
    ranking of the free PRBs, the run of PRBs that name it (up to its
    quota). Those pairs are exactly the ones the walk would take next,
    whatever happens elsewhere; the best pair left is always among them, so
    every round assigns a PRB at least, and rounds are few in practice. With
    quotas that never bind it is the per-PRB argmax: Sionna's PF grant with
    full buffers. ``tests/sim/test_mac.py`` holds it equal to the walk.

    :param metric: [batch, num_users, num_prbs], float; ``-inf`` where a user may not take a PRB
    :param quota: [batch, num_users], int64, PRBs each user may take
    :output owner: [batch, num_prbs], int64, user index or :data:`IDLE`
    """
    batch, num_users, num_prbs = metric.shape
    device = metric.device
    owner = torch.full((batch, num_prbs), IDLE, dtype=torch.long, device=device)
    remaining = quota.clone()
    users = torch.arange(num_users, device=device)[None, :, None]
    for _ in range(num_prbs + 1):  # bound: every round assigns a PRB at least
        free = owner == IDLE
        open_metric = metric.masked_fill((remaining <= 0)[..., None] | ~free[:, None, :], -torch.inf)
        best, choice = open_metric.max(1)  # [batch, num_prbs]
        proposing = free & (best > -torch.inf)
        if not bool(proposing.any()):
            return owner
        names = (choice[:, None, :] == users) & proposing[:, None, :]  # [batch, users, prbs]
        # each user's free PRBs from its best down; it takes the leading run of those that name it
        order = open_metric.argsort(dim=-1, descending=True, stable=True)
        run = names.gather(-1, order).long().cumprod(-1).bool()
        rank = torch.arange(num_prbs, device=device)
        taken_sorted = run & (rank < remaining[..., None])
        taken = torch.zeros_like(names).scatter_(-1, order, taken_sorted)
        owner = torch.where(taken.any(1), taken.to(torch.uint8).argmax(1), owner)
        remaining = remaining - taken.sum(-1)
    raise RuntimeError("PRB assignment did not finish")  # unreachable: every round assigns a PRB


def contiguous_fill(rank: torch.Tensor, need: torch.Tensor, num_prbs: int, start: int = 0) -> torch.Tensor:
    """Users in descending ``rank`` on consecutive PRBs from ``start``, ``need`` each, until the carrier ends.

    :param rank: [batch, num_users], float; ``-inf`` for users not to serve
    :param need: [batch, num_users], int64
    :output owner: [batch, num_prbs], int64
    """
    order = torch.argsort(rank, dim=-1, descending=True, stable=True)
    need_sorted = need.gather(-1, order).masked_fill(rank.gather(-1, order) == -torch.inf, 0)
    ends = start + need_sorted.cumsum(-1)  # [batch, num_users]
    prbs = torch.arange(num_prbs, device=need.device).expand(need.shape[0], -1).contiguous()
    slot_in_order = torch.searchsorted(ends, prbs, right=True)  # first user whose range ends after the PRB
    inside = (prbs >= start) & (slot_in_order < need.shape[1])
    user = order.gather(-1, slot_in_order.clamp(max=need.shape[1] - 1))
    return torch.where(inside, user, IDLE)


class Scheduler(nn.Module):
    """Common part of the schedulers.

    :param num_users: users of the cell
    :param num_prbs: PRBs of the carrier
    :param batch_size: independent cells (timelines) scheduled at once

    :input users: [num_active], int64. The users that may be granted anything this slot (the others
        need nothing); every other input is over these users only.
    :input need: [batch_size, num_active], int64. PRBs each user can use this slot.
    :input rate: [batch_size, num_active, num_prbs], float. Achievable bits of each PRB at the user's
        reference power (its CQI).
    :input group_backlog: [batch_size, num_active], float. What the user's group still has to send
        (``task-aware`` ranks by it).
    :input first: [batch_size, num_active], bool. Users with a HARQ retransmission: served first.
    :output owner: [batch_size, num_prbs], int64. The user (index into all users) each PRB goes to,
        or :data:`IDLE`.
    """

    channel_aware = False  # gives each user its best PRBs (the cell loop sizes digital needs by them)

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1):
        super().__init__()
        self.num_users, self.num_prbs, self.batch_size = num_users, num_prbs, batch_size
        self.slot = 0

    def forward(self, users, need, rate, group_backlog, first) -> torch.Tensor:
        owner = self.schedule(users, need, rate, group_backlog, first)
        self.slot += 1
        return owner

    def schedule(self, users, need, rate, group_backlog, first) -> torch.Tensor:
        raise NotImplementedError

    def observe(self, owner: torch.Tensor, delivered_bits: torch.Tensor) -> None:
        """Update the policy's state after a slot (``delivered_bits``: [batch_size, num_users])."""


def _to_all_users(owner_local: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    return torch.where(owner_local >= 0, users[owner_local.clamp_min(0)], IDLE)


class MetricScheduler(Scheduler):
    """A per-PRB metric, assigned by :func:`assign_prbs`; retransmissions first."""

    channel_aware = True

    def metric(self, users, rate, group_backlog) -> torch.Tensor:
        """[batch_size, num_active, num_prbs] float, larger goes first."""
        raise NotImplementedError

    def schedule(self, users, need, rate, group_backlog, first):
        metric = self.metric(users, rate, group_backlog)
        # a lift above any metric's spread puts the retransmissions ahead of everyone else, in metric order
        lift = 4 * metric.abs().amax().clamp_min(1.0)
        metric = metric + lift * first[..., None]
        metric = metric.masked_fill((need <= 0)[..., None], -torch.inf)
        return _to_all_users(assign_prbs(metric, need), users)


class StaticShareScheduler(Scheduler):
    """Every user owns a fixed set of consecutive PRBs in every slot, used or not (static OFDMA).

    :param shares: [num_users] PRBs of each user; ``None``: ``num_prbs // num_users`` each
    """

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1, shares=None):
        super().__init__(num_users, num_prbs, batch_size)
        shares = fixed_shares(shares, num_users, num_prbs)
        self.shares = shares
        self.first_prb = shares.cumsum(0) - shares
        owner = torch.full((num_prbs,), IDLE, dtype=torch.long)
        owner[: int(shares.sum())] = torch.repeat_interleave(torch.arange(num_users), shares)
        self.static_owner = owner

    def planned(self, users, need) -> torch.Tensor:
        """[batch, num_prbs] owners of the PRBs each user uses out of its own share."""
        full = torch.zeros(need.shape[0], self.num_users, dtype=torch.long, device=need.device)
        full[:, users] = need
        owner = self.static_owner.to(need.device).expand(need.shape[0], -1)
        offset = torch.arange(self.num_prbs, device=need.device) - self.first_prb.to(need.device)[owner.clamp_min(0)]
        used = (owner >= 0) & (offset < full.gather(1, owner.clamp_min(0)))
        return torch.where(used, owner, IDLE)

    def schedule(self, users, need, rate, group_backlog, first):
        return self.planned(users, need)


class RoundRobinScheduler(Scheduler):
    """The backlogged user served longest ago first (ties in cyclic order), on consecutive PRBs."""

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1):
        super().__init__(num_users, num_prbs, batch_size)
        self.last_served = torch.full((batch_size, num_users), -1, dtype=torch.long)

    def schedule(self, users, need, rate, group_backlog, first):
        waited = self.slot - self.last_served.to(need.device)[:, users]
        cyclic = (users - self.slot) % self.num_users  # 0 for the user whose turn it is
        # exact integers; a retransmission's 1e12 is above any wait (slots times users)
        rank = (waited * self.num_users - cyclic).to(torch.float64) + first * 1e12
        rank = rank.masked_fill(need <= 0, -torch.inf)
        return _to_all_users(contiguous_fill(rank, need, self.num_prbs), users)

    def observe(self, owner, delivered_bits) -> None:
        served = grants(owner, self.num_users) > 0
        self.last_served = torch.where(served.to(self.last_served.device), self.slot - 1, self.last_served)


class ProportionalFairScheduler(MetricScheduler):
    """Achievable rate over the discounted average of delivered rate, per PRB (Sionna's PF metric).

    Sionna's :class:`~sionna.sys.PFSchedulerSUMIMO` keeps the ``beta``-discounted
    average of what each user got and computes the metric of every user on
    every PRB; its own grant gives each PRB to the metric's maximum, which
    assumes full buffers. Here the metric drives :func:`assign_prbs`, so a
    user with little queued takes only the PRBs it needs, its best ones, and
    the rest go to the next user (Sionna's grant when buffers are full).
    """

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1, beta: float = 0.98):
        super().__init__(num_users, num_prbs, batch_size)
        self.pf = PFSchedulerSUMIMO(num_users, num_prbs, 1, batch_size=batch_size, beta=beta, device="cpu")
        self.delivered = torch.zeros(batch_size, num_users)

    def metric(self, users, rate, group_backlog):
        full = torch.zeros(rate.shape[0], 1, self.num_prbs, self.num_users, dtype=torch.float32)
        full[..., users.cpu()] = rate.permute(0, 2, 1)[:, None].float().cpu()
        self.pf(self.delivered, full)
        metric = self.pf.pf_metric[:, 0].permute(0, 2, 1)[:, users.cpu()].to(rate.device, torch.float64)
        # A user idle for thousands of slots has Sionna's float32 average at 0 and an infinite metric: it goes
        # first (by rate among such users), and the metric stays finite for the assignment
        return torch.where(torch.isfinite(metric), metric, STARVED * (1 + rate.to(torch.float64)))

    def observe(self, owner, delivered_bits) -> None:
        self.delivered = delivered_bits.float().cpu()


class MaxRateScheduler(MetricScheduler):
    """The best channel first, per PRB (maximum throughput, no fairness)."""

    def metric(self, users, rate, group_backlog):
        return rate.to(torch.float64)


class TaskAwareScheduler(MetricScheduler):
    """Shortest remaining group task first, each user on its best PRBs.

    A task is done only when every user of its group has delivered its
    tokens, so PRBs given to a user whose group still waits on a slower
    member buy no latency. This policy ranks users by what their whole group
    still has queued (smallest first: shortest-remaining-processing-time,
    which minimises mean completion time on one server), serves the members
    of a group together, and gives each its best PRBs; ties go to the better
    channel.
    """

    def metric(self, users, rate, group_backlog):
        scale = rate.amax().clamp(min=1e-9)
        # the rate term is below one unit of backlog: it orders PRBs within a user and breaks ties only
        return -group_backlog[..., None].to(torch.float64) + 0.5 * rate.to(torch.float64) / scale


class AllocatedShareScheduler(TaskAwareScheduler):
    """The joint allocation's shares first, then what they leave idle to the shortest remaining group task.

    Every user gets up to its share of the token-aware allocation
    (:class:`~sim.mac.allocation.TokenAwareAllocation`) on its own PRBs in
    every slot, as the allocation planned; PRBs a share leaves unused go to
    users that can use more than their share, in :class:`TaskAwareScheduler`
    order, so the carrier is never idle while anyone waits. A due
    retransmission goes before all of it, on its best PRBs, whoever's share
    they are in.

    :param shares: [num_users] PRBs of each user
    """

    channel_aware = False  # its shares are fixed PRBs

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1, shares=None):
        super().__init__(num_users, num_prbs, batch_size)
        self.static = StaticShareScheduler(num_users, num_prbs, batch_size, shares)

    def schedule(self, users, need, rate, group_backlog, first):
        metric = self.metric(users, rate, group_backlog)
        # retransmissions first, on their best PRBs wherever they are; then every other user's share (less any
        # PRB a retransmission took); then what is left, to users that can use more
        first_metric = metric.masked_fill(~first[..., None], -torch.inf)
        owner = _to_all_users(assign_prbs(first_metric, torch.where(first, need, 0)), users)
        planned = self.static.planned(users, torch.where(first, 0, need))
        owner = torch.where(owner >= 0, owner, planned)
        more = (need - grants(owner, self.num_users)[:, users]).clamp_min(0)
        metric = metric.masked_fill((more <= 0)[..., None], -torch.inf).masked_fill(
            (owner >= 0)[:, None, :], -torch.inf
        )
        extra = _to_all_users(assign_prbs(metric, more), users)
        return torch.where(owner >= 0, owner, extra)


SCHEDULERS = {
    "equal-share": StaticShareScheduler,
    "round-robin": RoundRobinScheduler,
    "proportional-fair": ProportionalFairScheduler,
    "max-rate": MaxRateScheduler,
    "task-aware": TaskAwareScheduler,
    "token-aware": AllocatedShareScheduler,
}
