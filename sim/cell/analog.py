"""The analog link inside the cell loop, and the granted PRBs one slot puts on air.

:class:`PrbRows` lists a slot's granted PRBs, one row each, with the channel and the SNR per RE of the user
that holds it: what :class:`~sim.phy.analog.GrantedPrbLink` carries. :class:`AnalogPayloads` is the analog
side of the loop: each user's token values, as complex symbols in the order they were queued, fill the data
REs of its granted PRBs in PRB order; each symbol goes on air once, and the base station's MMSE estimate is
what the edge receives. (:class:`~sim.cell.harq.TransportBlocks` is the digital side, with the same calls.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class PrbRows:
    """A slot's granted PRBs, one row each (1-D tensors over rows, in timeline then PRB order).

    ``b``: timeline; ``p``: PRB; ``u``: the user it is granted to; ``a``: that user's index among the slot's
    active users; ``k``: the PRB's rank within the user's grant (0 for its lowest PRB); ``h``: [rows, 12]
    complex, the user's channel on the PRB's subcarriers; ``no``: noise variance per RE, 1 / (SNR per RE).
    """

    b: torch.Tensor
    p: torch.Tensor
    u: torch.Tensor
    a: torch.Tensor
    k: torch.Tensor
    h: torch.Tensor
    no: torch.Tensor

    @classmethod
    def of(cls, owner, users, h, snr_re_db) -> PrbRows:
        """Rows of ``owner`` [B, P] (:mod:`sim.mac.scheduler`); ``users`` [A] active; ``h`` [B, A, P, 12];
        ``snr_re_db`` [B, U]."""
        b, p = torch.nonzero(owner >= 0, as_tuple=True)
        u = owner[b, p]
        local = torch.full((int(users.max()) + 1,), -1, dtype=torch.long, device=owner.device)
        local[users] = torch.arange(len(users), device=owner.device)
        a = local[u]
        rank = (owner[:, :, None] == users[None, None, :]).long().cumsum(1) - 1  # [B, P, A]
        no = torch.pow(10.0, -snr_re_db[b, u] / 10).float()
        return cls(b=b, p=p, u=u, a=a, k=rank[b, p, a], h=h[b, a, p], no=no)


class AnalogPayloads:
    """Every user's token symbols of one cell-loop run, sent in order on the granted REs.

    :param symbols: [num_timelines, num_users, stream_length] complex, each user's jobs back to back (see
        :class:`~sim.cell.loop.CellLoop`), or ``None`` to count resources only
    :param position: callable ``(positions, users) -> flat index`` into the stream
    :param res_per_prb: data REs of one PRB in one slot
    :param stream_length: the users' streams' lengths, [num_users] (symbols of all their jobs)
    """

    def __init__(self, symbols, position, res_per_prb, stream_length):
        self.symbols, self.position, self.res_per_prb = symbols, position, res_per_prb
        self.stream_length = stream_length
        self.received = None if symbols is None else torch.zeros_like(symbols)
        self.log: list[dict[str, torch.Tensor]] = []

    # no HARQ: nothing is ever due again, and there is no feedback to wait for
    def observe_feedback(self, slot: int) -> None:
        pass

    def due(self, slot: int):
        return None

    def next_event(self, slot: int) -> float:
        return math.inf

    def need(self, users, backlog, sinr_prb, best_first=True) -> torch.Tensor:
        """PRBs that carry each user's queued symbols: one RE a symbol."""
        return torch.ceil(backlog / self.res_per_prb).long()

    def transmit(self, slot, rows: PrbRows, granted, backlog, sent, link, rate, due=None, sinr_prb=None) -> dict:
        """Put each user's next symbols on its granted PRB rows, through ``link``; keep what arrives.

        :param granted: [B, U] PRBs; ``backlog``, ``sent``: [B, U] symbols queued and sent so far
        :param link: :class:`~sim.phy.analog.GrantedPrbLink`; ``rate``: [B, A, P] achievable bits per PRB
        :param due: ``sinr_prb``: the digital side's (unused)
        :output: dict of [B, U] tensors: ``start``/``end`` (stream range sent), ``res``, ``coded_bits`` (0),
            ``decoded_bits`` (the achievable bits of the granted PRBs, what PF counts as served),
            ``sent`` (symbols sent so far)
        """
        R = self.res_per_prb
        pos = sent[rows.b, rows.u, None] + rows.k[:, None] * R + torch.arange(R, device=sent.device)
        valid = pos < (sent + backlog)[rows.b, rows.u, None]  # the last PRB of a grant may be part-filled
        pos = torch.minimum(pos, (self.stream_length[rows.u] - 1)[:, None])
        flat = self.position(pos, rows.u[:, None].expand_as(pos))
        if self.symbols is None:
            x = torch.zeros(pos.shape, dtype=torch.complex64, device=sent.device)
        else:
            x = torch.where(valid, self.symbols[rows.b[:, None], rows.u[:, None], flat], 0)
        out = link(x, rows.h, rows.no)
        if self.received is not None:
            where = (rows.b[:, None].expand_as(pos)[valid], rows.u[:, None].expand_as(pos)[valid], flat[valid])
            self.received[where] = out["symbols"][valid]
        carried = torch.minimum(granted * R, backlog)
        b, u = torch.nonzero(carried > 0, as_tuple=True)
        self.log.append(
            {
                "slot": torch.full_like(b, slot),
                "timeline": b,
                "user": u,
                "start": sent[b, u],
                "end": (sent + carried)[b, u],
                "prbs": granted[b, u],
            }
        )
        served = torch.zeros(granted.shape, dtype=torch.float64, device=sent.device)
        served.index_put_((rows.b, rows.u), rate[rows.b, rows.a, rows.p].double(), accumulate=True)
        return {
            "start": sent,
            "end": sent + carried,
            "res": carried,
            "coded_bits": torch.zeros_like(carried),
            "decoded_bits": served,
            "sent": sent + carried,
        }

    def transmissions(self) -> dict[str, torch.Tensor]:
        """Every (slot, timeline, user) that sent: ``start``/``end`` in its stream of symbols, ``prbs``."""
        return {k: torch.cat([r[k] for r in self.log]) for k in self.log[0]} if self.log else {}
