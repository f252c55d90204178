"""Uplink schedulers: who gets how many PRBs in a slot.

Every scheduler is one block with the same call: the users' backlogs and what
one PRB carries for each of them this slot in, whole PRBs per user out. They
differ only in the order in which users are served; each grant then covers
what the user has queued and no more (buffer-aware, work-conserving), so a
slot never grants more PRBs than the carrier has and a PRB is never given to
a user with nothing to send.

``SCHEDULERS`` maps ``scheduler.policy`` to its class:

- ``equal-share``: every user owns ``num_prbs // num_users`` PRBs in every
  slot (static OFDMA, the paper's setting); unused PRBs stay idle.
- ``round-robin``: the user served longest ago first.
- ``proportional-fair``: the largest achievable-over-average rate first;
  metric and average come from Sionna's :class:`~sionna.sys.PFSchedulerSUMIMO`.
- ``max-rate``: the largest achievable rate first.
- ``task-aware``: tokensim's own scheduler, shortest remaining group task
  first (see :class:`TaskAwareScheduler`).
- ``token-aware``: tokensim's joint allocation of token length and PRB
  share (:class:`~sim.mac.allocation.TokenAwareAllocation`); each user then
  has its share in every slot, and what it leaves idle goes on in
  ``task-aware`` order (:class:`AllocatedShareScheduler`).

Wideband scheduling: a user's achievable rate is the same on every PRB of a
slot (wideband CQI), so ordering users and filling grants is exact and needs
no loop over PRBs.
"""

from __future__ import annotations

import torch
from sionna.sys import PFSchedulerSUMIMO
from torch import nn


def prbs_needed(backlog: torch.Tensor, capacity: torch.Tensor) -> torch.Tensor:
    """Whole PRBs that carry ``backlog`` at ``capacity`` units per PRB (int64, same shape)."""
    return torch.ceil(backlog / capacity).clamp(min=0).to(torch.long)


def fixed_shares(shares, num_users: int, num_prbs: int) -> torch.Tensor:
    """[num_users] int64 PRBs per user (``None``: ``num_prbs // num_users`` each); one at least, within the carrier."""
    if shares is None:
        if num_prbs < num_users:
            raise ValueError(f"equal shares need a PRB per user: {num_prbs} PRBs, {num_users} users")
        shares = [num_prbs // num_users] * num_users
    if sum(shares) > num_prbs or min(shares) < 1:
        raise ValueError(f"shares {shares} do not fit {num_prbs} PRBs with one at least each")
    return torch.as_tensor(shares, dtype=torch.long)


class Scheduler(nn.Module):
    """Common part: fill grants in a priority order.

    :param num_users: users of the cell
    :param num_prbs: PRBs of the carrier
    :param batch_size: independent cells (timelines) scheduled at once

    :input backlog: [batch_size, num_users], float, units (REs or bits) each user has queued.
    :input capacity: [batch_size, num_users], float, units one PRB carries for each user this slot (> 0).
    :input rate: [batch_size, num_users], float, achievable rate per PRB this slot (bits), the channel
        quality that rate-aware policies rank by.
    :input group_backlog: [batch_size, num_users], float, backlog of the user's whole group
        (read by ``task-aware`` only).
    :output prbs: [batch_size, num_users], int64, PRBs granted; ``prbs.sum(-1) <= num_prbs``.
    """

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1):
        super().__init__()
        self.num_users, self.num_prbs, self.batch_size = num_users, num_prbs, batch_size
        self.register_buffer("slot", torch.zeros((), dtype=torch.long), persistent=False)

    def priority(self, backlog, capacity, rate, group_backlog) -> torch.Tensor:
        """[batch_size, num_users] float; larger goes first."""
        raise NotImplementedError

    def forward(self, backlog, capacity, rate, group_backlog=None) -> torch.Tensor:
        need = prbs_needed(backlog, capacity)
        waiting = need > 0
        rank = self.priority(backlog, capacity, rate, group_backlog).masked_fill(~waiting, -torch.inf)
        prbs = self.fill(need, rank)
        self.observe(prbs, torch.minimum(prbs * capacity, backlog), rate)
        self.slot += 1
        return prbs

    def fill(self, need: torch.Tensor, rank: torch.Tensor, budget=None) -> torch.Tensor:
        """Grant ``need`` PRBs user by user in descending ``rank`` until ``budget`` ([batch_size] or the
        carrier's PRBs) is spent."""
        budget = self.num_prbs if budget is None else budget[:, None]
        order = torch.argsort(rank, dim=-1, descending=True, stable=True)
        need_sorted = need.gather(-1, order)
        before = need_sorted.cumsum(-1) - need_sorted
        granted = (budget - before).clamp(min=0).minimum(need_sorted)
        return torch.zeros_like(need).scatter(-1, order, granted)

    def observe(self, prbs: torch.Tensor, served: torch.Tensor, rate: torch.Tensor) -> None:
        """Update the policy's state after a slot (``served``: units delivered, [batch_size, num_users])."""


class StaticShareScheduler(Scheduler):
    """Every user owns a fixed number of PRBs in every slot, used or not (static OFDMA).

    :param shares: [num_users] PRBs of each user; ``None``: ``num_prbs // num_users`` each
    """

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1, shares=None):
        super().__init__(num_users, num_prbs, batch_size)
        self.register_buffer("shares", fixed_shares(shares, num_users, num_prbs), persistent=False)

    def forward(self, backlog, capacity, rate, group_backlog=None) -> torch.Tensor:
        self.slot += 1
        return prbs_needed(backlog, capacity).minimum(self.shares)


class RoundRobinScheduler(Scheduler):
    """The backlogged user served longest ago goes first; ties in cyclic order from the slot number."""

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1):
        super().__init__(num_users, num_prbs, batch_size)
        self.register_buffer("last_served", torch.full((batch_size, num_users), -1, dtype=torch.long), False)

    def priority(self, backlog, capacity, rate, group_backlog) -> torch.Tensor:
        users = torch.arange(self.num_users, device=backlog.device)
        cyclic = (users - self.slot) % self.num_users  # 0 for the user whose turn it is
        return ((self.slot - self.last_served) * self.num_users - cyclic).to(torch.float64)  # exact integers

    def observe(self, prbs, served, rate) -> None:
        self.last_served = torch.where(prbs > 0, self.slot, self.last_served)


class ProportionalFairScheduler(Scheduler):
    """Achievable rate over the discounted average of delivered rate (Sionna's PF metric) first.

    Sionna's :class:`~sionna.sys.PFSchedulerSUMIMO` keeps the average
    (``beta``-discounted, updated with the rate each user got in the last
    slot) and computes the metric; its own grant gives every PRB to the
    metric's maximum, which assumes full buffers. Here the metric orders a
    buffer-aware fill instead, so a user with a short payload takes only the
    PRBs it needs and the rest go to the next user (identical to Sionna's
    grant when buffers are full).
    """

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1, beta: float = 0.98):
        super().__init__(num_users, num_prbs, batch_size)
        self.pf = PFSchedulerSUMIMO(num_users, 1, 1, batch_size=batch_size, beta=beta, device="cpu")
        self.register_buffer("delivered", torch.zeros(batch_size, num_users), persistent=False)

    def priority(self, backlog, capacity, rate, group_backlog) -> torch.Tensor:
        # one wideband frequency resource: the metric is the same on every PRB
        self.pf(self.delivered, rate[:, None, None, :])
        return self.pf.pf_metric[:, 0, 0, :]

    def observe(self, prbs, served, rate) -> None:
        self.delivered = (prbs * rate).to(torch.float)  # bits each user got this slot


class MaxRateScheduler(Scheduler):
    """The best channel first (maximum throughput, no fairness)."""

    def priority(self, backlog, capacity, rate, group_backlog) -> torch.Tensor:
        return rate


class TaskAwareScheduler(Scheduler):
    """Shortest remaining group task first.

    A task is done only when every user of its group has delivered its tokens,
    so PRBs given to a user whose group still waits on a slower member buy no
    latency. This policy ranks users by what their whole group still has
    queued (smallest first: shortest-remaining-processing-time, which
    minimises mean completion time on one server) and serves the members of
    a group together; ties go to the better channel.
    """

    def priority(self, backlog, capacity, rate, group_backlog) -> torch.Tensor:
        scale = rate.amax().clamp(min=1e-9)
        return -group_backlog + 0.5 * rate / scale  # the rate term only breaks ties of whole units


class AllocatedShareScheduler(TaskAwareScheduler):
    """The joint allocation's shares first, then what they leave idle to the shortest remaining group task.

    Every user gets up to its share of the token-aware allocation
    (:class:`~sim.mac.allocation.TokenAwareAllocation`) in every slot, as
    the allocation planned; PRBs a user does not need that slot go to users
    that still have more queued than their share carries, in
    :class:`TaskAwareScheduler` order, so the carrier is never idle while
    anyone waits.

    :param shares: [num_users] PRBs of each user
    """

    def __init__(self, num_users: int, num_prbs: int, batch_size: int = 1, shares=None):
        super().__init__(num_users, num_prbs, batch_size)
        self.register_buffer("shares", fixed_shares(shares, num_users, num_prbs), persistent=False)

    def forward(self, backlog, capacity, rate, group_backlog=None) -> torch.Tensor:
        need = prbs_needed(backlog, capacity)
        planned = need.minimum(self.shares)
        more = need - planned
        rank = self.priority(backlog, capacity, rate, group_backlog).masked_fill(more == 0, -torch.inf)
        self.slot += 1
        return planned + self.fill(more, rank, budget=self.num_prbs - planned.sum(-1))


SCHEDULERS = {
    "equal-share": StaticShareScheduler,
    "round-robin": RoundRobinScheduler,
    "proportional-fair": ProportionalFairScheduler,
    "max-rate": MaxRateScheduler,
    "task-aware": TaskAwareScheduler,
    "token-aware": AllocatedShareScheduler,
}
