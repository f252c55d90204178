"""The HARQ process table of a cell-loop run: one row per TB, its payload range, attempts, state and clock.

:class:`HarqTable` keeps what a gNB's HARQ entity keeps: which TB each user sent, when its feedback is due,
which TBs wait for a retransmission (the oldest goes first), and a soft buffer per open TB for Chase
combining. It is the bookkeeping under :class:`~sim.cell.harq.TransportBlocks`, which forms the TBs and
decides them; nothing here touches the PHY.
"""

from __future__ import annotations

import math

import torch

PENDING, DONE = 0, 1  # a TB waiting for a retransmission; a TB delivered or given up
_COLUMNS = (
    "b",
    "u",
    "start",
    "end",
    "mcs",
    "prbs",
    "attempts",
    "state",
    "next_slot",
    "feedback_slot",
    "first_ack",
    "soft_row",
    "fate",
)
FLOAT_COLUMNS = ("fate",)


class HarqTable:
    """Every TB of one run, in columns that grow by doubling (appending stays linear in the TBs).

    :param num_timelines: independent cells in the batch; :param num_users: users per cell
    :param device: torch device
    """

    def __init__(self, num_timelines: int, num_users: int, device):
        self.device = device
        self.shape = (num_timelines, num_users)
        self._table = {  # capacity grows
            c: torch.zeros(0, dtype=torch.float64 if c in FLOAT_COLUMNS else torch.long, device=device)
            for c in _COLUMNS
        }
        self._count = 0
        self._open = torch.zeros(0, dtype=torch.long, device=device)  # TBs waiting for feedback or a retransmission
        self.soft = torch.zeros(0, 0, device=device)
        self.soft_free = torch.zeros(0, dtype=torch.bool, device=device)
        self.records: list[dict[str, torch.Tensor]] = []

    @property
    def tb(self) -> dict[str, torch.Tensor]:
        """Every TB so far, one entry per TB in each column (views: writing to them writes the table)."""
        return {c: v[: self._count] for c, v in self._table.items()}

    def due(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tb, prbs)``, each [num_timelines, num_users] int64: the oldest TB whose retransmission is due
        in ``slot`` (-1: none) and its PRBs (0: none)."""
        tb, ids = self.tb, self._due_ids(slot)
        oldest = torch.full(self.shape, -1, dtype=torch.long, device=self.device)
        if len(ids):
            flat = tb["b"][ids] * self.shape[1] + tb["u"][ids]
            first = torch.full((self.shape[0] * self.shape[1],), self._count, dtype=torch.long, device=self.device)
            first = first.scatter_reduce(0, flat, ids, "amin")
            oldest = torch.where(first < self._count, first, -1).view(self.shape)
        prbs = torch.where(oldest >= 0, tb["prbs"][oldest.clamp_min(0)], 0) if self._count else torch.zeros_like(oldest)
        return oldest, prbs

    def _due_ids(self, slot: int) -> torch.Tensor:
        # only the open TBs (waiting for feedback or a retransmission) are looked at: a run's HARQ work stays
        # linear in its TBs
        tb, ids = self.tb, self._open
        return ids[(tb["state"][ids] == PENDING) & (tb["next_slot"][ids] <= slot)]

    def waiting_ranges(self, slot: int):
        """Payload ranges of TBs whose retransmission is due in ``slot``: ``(b, u, start, end)`` 1-D each."""
        return self.ranges(self._due_ids(slot))

    def ranges(self, ids: torch.Tensor):
        """``(b, u, start, end)``, 1-D each: where the payload of TBs ``ids`` lies."""
        tb = self.tb
        return tb["b"][ids], tb["u"][ids], tb["start"][ids], tb["end"][ids]

    def next_event(self, slot: int) -> float:
        """The next slot after ``slot`` at which a retransmission falls due or feedback arrives (``inf``: none)."""
        tb, ids = self.tb, self._open
        times = torch.cat([tb["next_slot"][ids][tb["state"][ids] == PENDING], tb["feedback_slot"][ids]])
        later = times[times > slot]
        return float(later.min()) if len(later) else math.inf

    def _append(self, **columns) -> torch.Tensor:
        n = len(columns["b"])
        first = self._count
        if first + n > len(self._table["b"]):  # double the capacity: appending stays linear in the TBs
            grow = max(first + n, 2 * len(self._table["b"]), 1024) - len(self._table["b"])
            self._table = {c: torch.cat([v, v.new_zeros(grow)]) for c, v in self._table.items()}
        filled = {
            "attempts": 0,
            "state": PENDING,
            "next_slot": -1,
            "feedback_slot": -1,
            "first_ack": -1,
            "soft_row": -1,
        }
        for c in _COLUMNS:
            self._table[c][first : first + n] = columns[c] if c in columns else filled[c]
        self._count += n
        self._table["soft_row"][first : first + n] = self._soft_rows(n)
        return torch.arange(first, first + n, device=self.device)

    def _soft_rows(self, n: int) -> torch.Tensor:
        """``n`` free rows of the soft-value pool (zeroed), growing it when full."""
        free = torch.nonzero(self.soft_free).squeeze(-1)
        if len(free) < n:
            grow = max(n - len(free), len(self.soft_free))
            self.soft = torch.cat([self.soft, torch.zeros(grow, self.soft.shape[1], device=self.device)])
            self.soft_free = torch.cat([self.soft_free, torch.ones(grow, dtype=torch.bool, device=self.device)])
            free = torch.nonzero(self.soft_free).squeeze(-1)
        rows = free[:n]
        self.soft_free[rows] = False
        self.soft[rows] = 0
        return rows

    def feedback(self, slot: int) -> torch.Tensor:
        """[num_timelines, num_users] int32: first-attempt HARQ feedback arriving in ``slot`` (1 ACK, 0 NACK, -1)."""
        tb = self.tb
        arriving = self._open[tb["feedback_slot"][self._open] == slot]
        out = torch.full(self.shape, -1, dtype=torch.int32, device=self.device)
        out[tb["b"][arriving], tb["u"][arriving]] = tb["first_ack"][arriving].to(torch.int32)
        return out

    def _combine(self, ids, soft) -> torch.Tensor:
        """Add ``soft`` [n, width] to the TBs' buffers (Chase combining); returns the combined values."""
        rows = self.tb["soft_row"][ids]
        if soft.shape[1] > self.soft.shape[1]:
            self.soft = torch.nn.functional.pad(self.soft, (0, soft.shape[1] - self.soft.shape[1]))
        self.soft[rows, : soft.shape[1]] += soft
        return self.soft[rows, : soft.shape[1]]

    def tb_records(self) -> dict[str, torch.Tensor]:
        """Every TB attempt of the run, one entry per attempt (columns of :meth:`receive`'s records)."""
        if not self.records:
            return {}
        return {k: torch.cat([r[k] for r in self.records]) for k in self.records[0]}

    def settle(self, slot: int, ids: torch.Tensor, ack: torch.Tensor, round_trip_slots: int, max_attempts: int):
        """Count an attempt of TBs ``ids`` in ``slot`` with outcomes ``ack``: its feedback is due a round trip
        later (the first attempt's feeds the outer loop), a TB acknowledged or out of attempts is done and
        frees its soft buffer, the others wait a round trip for their retransmission. Returns ``final``
        [len(ids)] bool, the TBs done."""
        tb = self.tb
        tb["attempts"][ids] += 1
        first = tb["attempts"][ids] == 1
        tb["feedback_slot"][ids[first]] = slot + round_trip_slots
        tb["first_ack"][ids[first]] = ack[first].long()
        final = ack | (tb["attempts"][ids] >= max_attempts)
        tb["state"][ids] = torch.where(final, DONE, PENDING)
        tb["next_slot"][ids] = slot + round_trip_slots
        self.soft_free[tb["soft_row"][ids[final]]] = True
        # open: still to be retransmitted, or its first attempt's feedback is still to come (the outer loop's)
        candidates = torch.cat([self._open, ids]).unique()
        self._open = candidates[(tb["state"][candidates] == PENDING) | (tb["feedback_slot"][candidates] > slot)]
        return final
