"""The slot-based MAC of the cell: queues, grants, and when each task's tokens are through.

:func:`run_slots` is the engine: per-user FIFO queues of token payloads, one
scheduler call per slot, batched over independent timelines and users (a
Python loop over slots only; idle slots are skipped). :class:`CellMac` puts
a scenario's traffic, compute and PHY counts through it and returns every
task's latency and its breakdown.

The MAC serves resource elements. What a payload needs comes from the PHY
that carried it (analog: one RE per complex symbol; digital: every attempt
of every transport block), so MCS, code rate and retransmissions are the
PHY's and the MAC decides only when those REs go on air. Channel quality
for the rate-aware policies is wideband CQI with Rayleigh fading that
evolves from slot to slot (:class:`WidebandFading`). The MAC runs on the
CPU: its tensors are [timelines, users] per slot, too small for a GPU.
"""

from __future__ import annotations

import numpy as np
import scipy.special
import torch

from sim.mac.scheduler import SCHEDULERS
from sim.mac.traffic import arrival_times_s
from sim.phy.numerology import NUM_OFDM_SYMBOLS_PER_SLOT, NUM_SUBCARRIERS_PER_PRB

SPEED_OF_LIGHT_MPS = 299_792_458.0


def run_slots(scheduler, ready_slot, demand, capacity, rate, group_of_user, max_slots: int = 10_000_000) -> dict:
    """Serve every payload through ``scheduler``, slot by slot.

    A payload enters its user's queue at the start of slot ``ready_slot``;
    queues are first in, first out (a user's payloads must be sorted by
    ``ready_slot``). Each slot the scheduler grants PRBs; a grant carries
    ``capacity`` units per PRB.

    :param scheduler: a :class:`~sim.mac.scheduler.Scheduler` for [batch_size, num_users]
    :param ready_slot: [batch_size, num_users, num_tasks], int64, first slot the payload may use
    :param demand: [batch_size, num_users, num_tasks], float, units (REs) of each payload
    :param capacity: [batch_size, num_users], float, units per PRB per slot
    :param rate: callable ``slot -> [batch_size, num_users]`` float, achievable bits per PRB (CQI)
    :param group_of_user: [num_users], int64, group index of each user
    :returns: dict with ``start_slot`` and ``end_slot`` ([batch_size, num_users, num_tasks], int64: the
        first and last slot carrying some of the payload), ``granted_prbs`` and ``busy_slots``
        ([batch_size, num_users]: PRB-slots granted, slots with something queued), ``served``
        ([batch_size, num_users] units delivered), ``active_slots`` (slots in which anything was queued)
        and ``num_slots`` (slots simulated up to the last delivery)
    """
    ready_slot, demand = ready_slot.to(torch.long), demand.to(torch.float64)
    batch, users, _ = demand.shape
    total = demand.cumsum(-1)  # units through the end of each payload
    before = total - demand
    served = torch.zeros(batch, users, dtype=torch.float64)
    start = torch.full(demand.shape, -1, dtype=torch.long)
    end = torch.full(demand.shape, -1, dtype=torch.long)
    empty = demand <= 0  # nothing to send: through in the slot it is ready, with no airtime
    start[empty], end[empty] = ready_slot[empty], ready_slot[empty] - 1
    granted = torch.zeros(batch, users, dtype=torch.long)
    busy = torch.zeros(batch, users, dtype=torch.long)
    groups = int(group_of_user.max()) + 1
    capacity = capacity.to(torch.float64)
    active, slot = 0, int(ready_slot.min())
    while bool((end < 0).any()):
        if slot >= max_slots:
            raise RuntimeError(f"the MAC did not deliver every payload within {max_slots} slots")
        arrived = (ready_slot <= slot).sum(-1, keepdim=True)  # FIFO: the first ``arrived`` payloads
        queued = torch.where(arrived > 0, total.gather(-1, (arrived - 1).clamp(min=0)), 0.0)[..., 0]
        backlog = (queued - served).clamp(min=0)
        if not bool((backlog > 0).any()):
            slot = int(ready_slot[ready_slot > slot].min())  # idle until the next payload is ready
            continue
        group_backlog = torch.zeros(batch, groups, dtype=torch.float64).index_add_(1, group_of_user, backlog)
        prbs = scheduler(backlog, capacity, rate(slot), group_backlog[:, group_of_user])
        now = served + torch.minimum(prbs * capacity, backlog)
        start = torch.where((start < 0) & (now[..., None] > before), slot, start)
        end = torch.where((end < 0) & (now[..., None] >= total), slot, end)
        granted += prbs
        busy += backlog > 0
        served, active, slot = now, active + 1, slot + 1
    return {
        "start_slot": start,
        "end_slot": end,
        "granted_prbs": granted,
        "busy_slots": busy,
        "served": served,
        "active_slots": active,
        "num_slots": int(end.max()) + 1,
    }


def group_of_user(scenario) -> np.ndarray:
    """[num_users] int64: the index of each user's group."""
    group_index = {uid: g for g, group in enumerate(scenario.groups) for uid in group.users}
    return np.array([group_index[u.id] for u in scenario.users], dtype=np.int64)


class WidebandFading:
    """Per-slot wideband channel power gain of each user: Rayleigh, correlated in time.

    A first-order Gauss-Markov process with the Jakes correlation
    J0(2 pi f_D T_slot) between slots (Baddour and Beaulieu 2005); f_D from
    the user speed and carrier frequency. Mean gain 1; 1 everywhere for AWGN.

    :input slot: int, the slot asked for; slots must be asked in increasing order.
    :output gain: [batch_size, num_users], float64.
    """

    def __init__(self, batch_size, num_users, faded, speed_mps, carrier_frequency_hz, slot_s, seed):
        doppler_hz = speed_mps * carrier_frequency_hz / SPEED_OF_LIGHT_MPS
        self.rho = float(scipy.special.j0(2 * np.pi * doppler_hz * slot_s))
        self.faded = faded
        self.generator = torch.Generator().manual_seed(seed)
        self.shape = (batch_size, num_users)
        self.h = self._draw()
        self.slot = 0

    def _draw(self) -> torch.Tensor:
        return torch.complex(
            torch.randn(self.shape, generator=self.generator, dtype=torch.float64),
            torch.randn(self.shape, generator=self.generator, dtype=torch.float64),
        ) / np.sqrt(2)

    def __call__(self, slot: int) -> torch.Tensor:
        if not self.faded:
            return torch.ones(self.shape, dtype=torch.float64)
        steps = slot - self.slot  # skipped idle slots decorrelate as rho**steps
        if steps > 0:
            rho = self.rho**steps
            self.h = rho * self.h + np.sqrt(1 - rho**2) * self._draw()
            self.slot = slot
        return self.h.abs().square()


class CellMac:
    """A scenario's MAC: traffic in, every task's latency and its breakdown out.

    :param scenario: validated scenario
    :param slot_s: slot duration, seconds
    """

    def __init__(self, scenario, slot_s: float):
        s = scenario
        self.scenario, self.slot_s = s, slot_s
        self.num_prbs = s.cell.num_prbs
        self.res_per_prb = NUM_SUBCARRIERS_PER_PRB * (NUM_OFDM_SYMBOLS_PER_SLOT - len(s.cell.pilot_ofdm_symbol_indices))
        self.group_of_user = torch.as_tensor(group_of_user(s))

    def run(self, demand_res, extra_slots, device_s, edge_s, shares=None) -> dict:
        """Latency of every evaluated task.

        :param demand_res: [num_tasks_per_group, num_users], REs each user puts on air for task ``k``
        :param extra_slots: same shape, slots a payload waits beyond its airtime (HARQ round trips)
        :param device_s: [num_users], seconds of device compute before the payload is ready
        :param edge_s: [num_groups], seconds of edge compute per task of each group
        :param shares: [num_users] PRBs of each user under ``token-aware`` (the joint allocation's)
        :returns: dict of numpy arrays; per task [num_groups, num_tasks_per_group]: ``latency_s``,
            ``critical_user`` and the breakdown ``device_compute_s``, ``queueing_s``, ``airtime_s``,
            ``edge_compute_s``; ``uplink_s`` [num_users, num_tasks_per_group], arrival to the user's last
            token at the BS; per user [num_users]: ``throughput_units_per_s`` (REs per second while
            backlogged), ``granted_prbs``; and ``prb_utilisation`` (granted over available PRB-slots
            while anything was queued)
        """
        s, slot_s = self.scenario, self.slot_s
        tasks, users = demand_res.shape
        groups = len(s.groups)
        g_of_u = self.group_of_user.numpy()
        arrival = arrival_times_s(s.traffic, groups, tasks, s.seed)[g_of_u]  # [users, tasks]
        ready_s = arrival + np.asarray(device_s)[:, None]
        extra = np.asarray(extra_slots).T
        snapshot = s.traffic.arrival == "snapshot"
        # snapshots: one timeline per task index; poisson: one timeline for all
        to_batch = (lambda a: np.moveaxis(a, -1, 0)[..., None]) if snapshot else (lambda a: a[None])
        batch = tasks if snapshot else 1
        # a payload ready part-way through a slot waits for the next slot boundary (1 ns tolerance)
        ready_slot = torch.as_tensor(to_batch(np.ceil(ready_s / slot_s - 1e-6)).astype(np.int64))
        policy = s.scheduler.policy
        options = {"beta": s.scheduler.pf_beta} if policy == "proportional-fair" else {}
        if policy == "token-aware":
            options["shares"] = shares
        scheduler = SCHEDULERS[policy](users, self.num_prbs, batch_size=batch, **options)
        fading = WidebandFading(
            batch,
            users,
            faded=s.channel.model != "awgn",
            speed_mps=s.channel.speed_mps,
            carrier_frequency_hz=s.cell.carrier_frequency_hz,
            slot_s=slot_s,
            seed=s.seed,
        )
        snr = torch.as_tensor(10 ** (np.array([u.snr_db for u in s.users]) / 10))
        capacity = torch.full((batch, users), float(self.res_per_prb), dtype=torch.float64)
        out = run_slots(
            scheduler,
            ready_slot,
            torch.as_tensor(to_batch(np.asarray(demand_res, dtype=np.float64).T)),
            capacity,
            lambda slot: self.res_per_prb * torch.log2(1 + snr * fading(slot)),
            self.group_of_user,
        )
        start = from_batch(out["start_slot"].numpy(), snapshot)  # [users, tasks]
        done_slot = from_batch(out["end_slot"].numpy(), snapshot) + 1 + extra
        uplink_done_s = done_slot * slot_s

        # a group's task is through when its last member's tokens are
        members = [np.flatnonzero(g_of_u == g) for g in range(groups)]
        critical = np.stack([m[np.argmax(uplink_done_s[m], axis=0)] for m in members])  # [groups, tasks]
        k = np.arange(tasks)[None, :]
        arrival_task = arrival[critical, k]
        edge = np.broadcast_to(np.asarray(edge_s, dtype=float)[:, None], (groups, tasks))
        edge_done = _edge_fifo(uplink_done_s[critical, k], edge, per_column=snapshot)
        latency = edge_done - arrival_task
        device = np.asarray(device_s)[critical]
        airtime = (done_slot - start)[critical, k] * slot_s
        queueing = latency - device - airtime - edge  # slot alignment, waiting for PRBs, waiting for the edge
        busy = out["busy_slots"].sum(0).numpy()
        served = out["served"].sum(0).numpy()
        return {
            "latency_s": latency,
            "uplink_s": uplink_done_s - arrival,
            "critical_user": critical,
            "device_compute_s": device,
            "queueing_s": queueing,
            "airtime_s": airtime,
            "edge_compute_s": edge,
            "throughput_units_per_s": served / np.maximum(busy * slot_s, 1e-30),
            "granted_prbs": out["granted_prbs"].sum(0).numpy(),
            "prb_utilisation": float(out["granted_prbs"].sum() / max(out["active_slots"] * self.num_prbs * batch, 1)),
        }


def from_batch(per_batch: np.ndarray, snapshot: bool) -> np.ndarray:
    """[batch, users, tasks_per_timeline] -> [users, tasks]."""
    return per_batch[..., 0].T if snapshot else per_batch[0]


def _edge_fifo(ready_s: np.ndarray, service_s: np.ndarray, per_column: bool) -> np.ndarray:
    """Finish times of tasks at one edge server, first come first served.

    Lindley's recursion ``finish_i = max(finish_{i-1}, ready_i) + service_i``
    in closed form: with ``C`` the cumulative service in ready order,
    ``finish_i = C_i + max_{j <= i} (ready_j - C_{j-1})``.

    :param ready_s: [groups, tasks] when each task's tokens are all at the edge
    :param service_s: same shape, edge compute of each task
    :param per_column: every column (snapshot) has its own edge; else one edge for all tasks
    """
    ready, service = (ready_s, service_s) if per_column else (ready_s.reshape(-1, 1), service_s.reshape(-1, 1))
    order = np.argsort(ready, axis=0, kind="stable")
    r, c = np.take_along_axis(ready, order, 0), np.take_along_axis(service, order, 0).cumsum(0)
    finish_sorted = c + np.maximum.accumulate(r - (c - np.take_along_axis(service, order, 0)), axis=0)
    finish = np.empty_like(finish_sorted)
    np.put_along_axis(finish, order, finish_sorted, 0)
    return finish.reshape(ready_s.shape)
