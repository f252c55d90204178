"""The digital link inside the cell loop: one transport block per user and slot, HARQ, outer-loop link adaptation.

A user sends at most one TB per slot (one PUSCH), on exactly the PRBs the
scheduler granted it:

- **A retransmission** goes first when one is due: the same coded bits (Chase
  combining), so the same MCS and the same number of PRBs; the scheduler
  reserves them before new data (:class:`~sim.mac.scheduler.Scheduler`).
- **New data** otherwise: the MCS comes from Sionna's outer-loop link
  adaptation (:class:`~sim.phy.link_adaptation.LinkAdaptation`) fed with the
  EESM of the CQI of the granted PRBs at the power per RE the grant leaves
  (:class:`~sim.mac.power.UplinkPower`); the TB size follows from the MCS and
  the grant (TS 38.214, :class:`~sim.phy.digital.TransportBlockTable`). The TB
  carries the user's next payload bits, padded if the backlog is smaller.
- **Reception**: ``link.fidelity: link`` encodes (Sionna's ``TBEncoder``),
  maps, demaps and decodes every bit; ``abstraction`` takes the BLER Sionna's
  ``PHYAbstraction`` gives the per-RE SINRs. Either way the soft values of all
  attempts of a TB add up (LLRs, or SINRs per RE). Under the abstraction one
  uniform draw per TB decides all its attempts (it fails attempt k while the
  draw is below the BLER of the combination of attempts 1..k), so outcomes are
  nested as a decoder's are.
- **HARQ clock**: the ACK/NACK of an attempt in slot ``t`` is known in slot
  ``t + link.harq.round_trip_slots``; only then does a retransmission become
  due (and compete for PRBs) and does the outer loop move its back-off by the
  first attempt's outcome (once per TB, Sionna's OLLA semantics). A TB that
  fails its last attempt erases the values it carried.

Everything is batched over timelines and users; loops run over the
(MCS, PRBs) configurations present in a slot (each needs its own LDPC code).
"""

from __future__ import annotations

import functools
import math

import torch

from sim.phy.abstraction import TransportBlockAbstraction, effective_sinr
from sim.phy.digital import TransportBlockLink, TransportBlockTable
from sim.phy.link_adaptation import LinkAdaptation, sinr_thresholds_db
from sim.phy.quantization import UniformQuantizer
from sim.runtime import sionna_rng_untouched

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


class TransportBlocks:
    """Every TB of one cell-loop run: its bits, HARQ state, soft buffer and outcome.

    :param link: the scenario's ``link`` section (digital)
    :param cell: the scenario's ``cell`` section
    :param num_timelines: independent cells in the batch
    :param num_users: users per cell
    :param reference_snr_shift_db: [num_users, num_prbs + 1] float64, SNR per RE at ``b`` PRBs minus that at
        the reference share (:meth:`~sim.mac.power.UplinkPower.shift_db`)
    :param bits: [num_timelines, num_users, stream_length] float 0/1, the quantised payload of every job of
        every user, back to back (see :class:`~sim.cell.loop.CellLoop`); ``None``: count resources only
    :param position: callable ``(positions [n], users [n]) -> [n]`` flat index of a user's stream position
    :param device: torch device
    :param olla_offset_db: [num_users] outer-loop back-off each user starts from (``None``: 0 dB)
    :param shared_olla: the timelines are snapshots of one cell: a user's back-off is shared by its copies
        (:meth:`observe_feedback`); otherwise each timeline runs its own outer loop. A number scales the
        shared loop's steps (a warm-up's larger gain), ``True`` is 1
    :param power_headroom: ``scheduler.power_headroom`` (see :meth:`need`)
    """

    def __init__(
        self,
        link,
        cell,
        num_timelines,
        num_users,
        reference_snr_shift_db,
        bits,
        position,
        device,
        olla_offset_db=None,
        shared_olla=False,
        power_headroom=True,
    ):
        self.fidelity, self.max_attempts = link.fidelity, 1 + link.harq.max_retx
        self.round_trip_slots = link.harq.round_trip_slots
        self.quantizer = UniformQuantizer(link.bits_per_value)
        self.table, thresholds = _tables(
            cell.num_prbs, len(cell.pilot_ofdm_symbol_indices), link.mcs_table, link.bler_target
        )
        self.tb_size = self.table.tb_size.to(device)
        usable = self.table.usable
        first_usable = torch.where(usable.any(0), usable.float().argmax(0), 0)
        last_usable = torch.where(usable.any(0), usable.shape[0] - 1 - usable.flip(0).float().argmax(0), 0)
        self.mcs_range = (first_usable.to(device), last_usable.to(device))  # [num_prbs + 1] each
        self.res_per_prb = self.table.data_res_per_prb
        self.thresholds = thresholds.to(device)  # [num_mcs, num_prbs + 1]
        self.shift_db = reference_snr_shift_db.to(device)
        self.fixed_mcs = link.mcs if isinstance(link.mcs, int) else None
        self.shared_olla, self.power_headroom = shared_olla, power_headroom
        self.mcs_table = link.mcs_table
        self.olla = None
        if self.fixed_mcs is None:
            self.olla = LinkAdaptation(
                num_users, link.bler_target, link.mcs_table, olla=True, batch_size=num_timelines, device=str(device)
            )
            if olla_offset_db is not None:
                self.olla.offset_db = torch.as_tensor(olla_offset_db)[None, :]
        self.last_mcs = torch.full((num_timelines, num_users), int(first_usable[1]), dtype=torch.long, device=device)
        self.abstraction = TransportBlockAbstraction(mcs_table_index=link.mcs_table, device=str(device))
        self._codec_args = {
            "subcarrier_spacing_hz": cell.subcarrier_spacing_hz,
            "pilot_ofdm_symbol_indices": list(cell.pilot_ofdm_symbol_indices),
            "mcs_table": link.mcs_table,
            "decoder": link.decoder,
            "num_bp_iter": link.num_bp_iter,
            "device": str(device),
        }
        self.bits, self.position = bits, position
        if bits is not None:
            self.received = torch.zeros_like(bits)
            self.bit_ok = torch.zeros(bits.shape, dtype=torch.bool, device=device)
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

    # ------------------------------------------------------------------ what is due

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

    # ------------------------------------------------------------------ how many PRBs new data needs

    def need(self, users: torch.Tensor, backlog: torch.Tensor, sinr_prb: torch.Tensor, best_first=True):
        """PRBs that carry each user's backlog in one TB at the MCS link adaptation would pick.

        The SINR a grant of ``b`` PRBs would report is the EESM (beta of the user's last MCS) of the CQI of the
        PRBs it would get, less the outer-loop back-off, moved by the power rule for ``b``: the user's ``b``
        best PRBs under a channel-aware scheduler (``best_first``), the carrier's average PRB under a blind
        one. With ``b`` PRBs the user carries the TB size of the highest MCS whose BLER at that SINR meets
        the target. The need is the fewest PRBs that carry the backlog; where none do, with
        ``scheduler.power_headroom`` the grant that carries the most (a power-limited user gains nothing
        from PRBs its power cannot fill, which a gNB learns from its power headroom reports), else the
        whole carrier.

        :param users: [num_active]; :param backlog: [num_timelines, num_active] bits
        :param sinr_prb: [num_timelines, num_active, num_prbs] linear CQI at the reference power
        :output: [num_timelines, num_active] int64, 0 where the backlog is 0
        """
        num_prbs = sinr_prb.shape[-1]
        tb_size = self.tb_size[:, 1:]  # [num_mcs, num_prbs]
        if self.fixed_mcs is not None:
            carried = tb_size[self.fixed_mcs].expand(*backlog.shape, -1).clone()
            carried[..., ~self.table.usable[self.fixed_mcs, 1:].to(self.device)] = 0
        else:
            effective = eesm_of_best(sinr_prb, self.last_mcs[:, users], self.mcs_table, best_first)
            report_db = 10 * torch.log10(effective.clamp_min(1e-12)) - self.olla.offset_db[:, users, None].to(effective)
            sinr_db = report_db + self.shift_db[users, 1:][None]  # [timelines, active, b]
            meets = self.thresholds[:, 1:].T <= sinr_db[..., None]  # [timelines, active, b, num_mcs]
            best = torch.where(meets.any(-1), meets.shape[-1] - 1 - meets.flip(-1).float().argmax(-1), -1)
            carried = torch.where(best >= 0, _take(tb_size, best), 0)
        enough = carried >= backlog[..., None]
        most = carried.argmax(-1) + 1 if self.power_headroom else torch.full_like(backlog, num_prbs)
        fewest = torch.where(enough.any(-1), enough.float().argmax(-1) + 1, most)
        return torch.where(backlog > 0, fewest.clamp(1, num_prbs), 0)

    # ------------------------------------------------------------------ one slot

    def _codec(self, mcs: int, prbs: int) -> TransportBlockLink:
        args = self._codec_args
        return _codec(
            mcs,
            prbs,
            args["subcarrier_spacing_hz"],
            tuple(args["pilot_ofdm_symbol_indices"]),
            args["mcs_table"],
            args["decoder"],
            args["num_bp_iter"],
            args["device"],
        )

    def send(self, granted, backlog, sent, due_tb, due_prbs, sinr_prb_granted):
        """Form this slot's TBs: due retransmissions where the grant holds them, new data elsewhere.

        :param granted: [num_timelines, num_users] PRBs granted; ``backlog``, ``sent``: new payload bits queued
            and sent so far; ``due_tb``, ``due_prbs``: from :meth:`due`
        :param sinr_prb_granted: [num_timelines, num_users, num_prbs] CQI SINR at the power per RE of the grant
            on each granted PRB, 0 elsewhere
        :output: ``(tb_of_user, new)``: [num_timelines, num_users] int64, the TB each user sends (-1: none),
            and the 1-D ids of the TBs formed now
        """
        retx = (due_tb >= 0) & (granted >= due_prbs) & (due_prbs > 0)
        new = (granted > 0) & ~retx & (backlog > 0)
        if self.olla is not None:
            report = effective_sinr(sinr_prb_granted.float(), self.last_mcs, self.mcs_table)
            report_db = torch.where(new, 10 * torch.log10(report.clamp_min(1e-12)), -math.inf)
            mcs = self.olla(report_db, (self.res_per_prb * granted * new).to(torch.int32)).long()
        else:
            mcs = torch.full(self.shape, self.fixed_mcs, dtype=torch.long, device=self.device)
        lowest, highest = (r[granted] for r in self.mcs_range)
        mcs = torch.minimum(torch.maximum(mcs, lowest), highest)
        self.last_mcs = torch.where(new, mcs, self.last_mcs)
        tb_size = self.tb_size[mcs, granted]
        b, u = torch.nonzero(new, as_tuple=True)
        start = sent[b, u]
        ids = self._append(
            b=b,
            u=u,
            start=start,
            end=start + torch.minimum(tb_size[b, u], backlog[b, u]),
            mcs=mcs[b, u],
            prbs=granted[b, u],
            fate=self._fates(len(b)),
        )
        tb_of_user = torch.where(retx, due_tb, -1)
        tb_of_user[b, u] = ids
        return tb_of_user, ids

    def transmit(self, slot, rows, granted, backlog, sent, link, rate, due, sinr_prb) -> dict[str, torch.Tensor]:
        """One slot's TBs on the granted PRB rows, through ``link``: form them (:meth:`send`), map them
        (:meth:`symbols`), carry them, decide them (:meth:`receive`).

        :param rows: :class:`~sim.cell.analog.PrbRows`; ``granted``, ``backlog``, ``sent``: [B, U]
        :param link: :class:`~sim.phy.analog.GrantedPrbLink`; ``rate``: unused (the analog side's)
        :param due: :meth:`due`'s ``(tb, prbs)``
        :param sinr_prb: [B, U, P] CQI at the power per RE of the grant on the granted PRBs, 0 elsewhere
        :output: :meth:`receive`'s events and ``sent``, ``created`` (1-D ids of the TBs formed now)
        """
        tb_of_user, created = self.send(granted, backlog, sent, *due, sinr_prb)
        out = link(self.symbols(tb_of_user, rows.b, rows.u, rows.k), rows.h, rows.no)
        events = self.receive(slot, tb_of_user, rows.b, rows.u, rows.k, out)
        sent = sent.clone()
        sent[self.tb["b"][created], self.tb["u"][created]] = self.tb["end"][created]
        return events | {"sent": sent, "created": created}

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

    def _fates(self, n: int) -> torch.Tensor:
        """[n] float64: the one uniform draw per TB that decides its attempts under the abstraction
        (:meth:`receive`); the link level decodes instead and draws nothing."""
        if self.fidelity != "abstraction":
            return torch.zeros(n, dtype=torch.float64, device=self.device)
        return torch.rand(n, dtype=torch.float64, device=self.device, generator=_rng(self.device))

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

    def symbols(self, tb_of_user, row_b, row_u, row_k) -> torch.Tensor:
        """[num_rows, res_per_prb] complex: each granted PRB row's share of its TB's QAM symbols (0 where no TB
        rides it; always 0 for the abstraction, which needs only the channel's SINRs)."""
        out = torch.zeros(len(row_b), self.res_per_prb, dtype=torch.complex64, device=self.device)
        if self.fidelity != "link":
            return out
        row_tb = tb_of_user[row_b, row_u]
        for (mcs, prbs), ids in self._configs(tb_of_user).items():
            codec = self._codec(mcs, prbs)
            symbols = codec.mapper(codec.encoder(self._tb_bits(ids, codec.tb_size))).to(out.dtype)
            local = torch.full((len(self.tb["b"]),), -1, dtype=torch.long, device=self.device)
            local[ids] = torch.arange(len(ids), device=self.device)
            rows = torch.nonzero((row_tb >= 0) & (local[row_tb.clamp_min(0)] >= 0)).squeeze(-1)
            per_prb = symbols.view(len(ids), prbs, self.res_per_prb)
            out[rows] = per_prb[local[row_tb[rows]], row_k[rows]]
        return out

    def _configs(self, tb_of_user) -> dict[tuple[int, int], torch.Tensor]:
        ids = tb_of_user[tb_of_user >= 0]
        pairs = torch.stack([self.tb["mcs"][ids], self.tb["prbs"][ids]], 1)
        configs = pairs.unique(dim=0).tolist()
        return {(m, p): ids[(pairs[:, 0] == m) & (pairs[:, 1] == p)] for m, p in configs}

    def _tb_bits(self, ids, tb_size) -> torch.Tensor:
        """[len(ids), tb_size] payload bits of TBs ``ids``, zero padding after their payload."""
        tb = self.tb
        if self.bits is None:
            return torch.zeros(len(ids), tb_size, device=self.device)
        offset = torch.arange(tb_size, device=self.device)
        pos = tb["start"][ids, None] + offset
        inside = pos < tb["end"][ids, None]
        users = tb["u"][ids, None].expand_as(pos)
        flat = self.position(pos.clamp_max(self.bits.shape[-1] - 1), users)
        return torch.where(inside, self.bits[tb["b"][ids, None], users, flat.clamp_max(self.bits.shape[-1] - 1)], 0.0)

    def receive(self, slot, tb_of_user, row_b, row_u, row_k, out) -> dict[str, torch.Tensor]:
        """Combine, decide and account this slot's TBs from the PRB rows' receiver output.

        :param out: :class:`~sim.phy.analog.GrantedPrbLink` output over the rows
        :output: dict of [num_timelines, num_users] int64 tensors of this slot: ``start``/``end`` (payload
            range of the TB sent), ``res`` (REs on air), ``coded_bits``, ``decoded_bits`` (TB size if ACK),
            ``payload_bits`` (payload bits delivered); and ``resolved``, 1-D ids of TBs delivered or given up
        """
        tb = self.tb
        events = {
            k: torch.zeros(self.shape, dtype=torch.long, device=self.device)
            for k in ("start", "end", "res", "coded_bits", "decoded_bits", "payload_bits")
        }
        ids = tb_of_user[tb_of_user >= 0]
        n = len(ids)
        events["resolved"] = ids[:0]
        if n == 0:
            return events
        local = torch.full((len(tb["b"]),), -1, dtype=torch.long, device=self.device)
        local[ids] = torch.arange(n, device=self.device)
        row_tb = tb_of_user[row_b, row_u]
        rows = torch.nonzero(row_tb >= 0).squeeze(-1)
        mcs, prbs = tb["mcs"][ids], tb["prbs"][ids]
        width = int(prbs.max()) * self.res_per_prb
        sinr = torch.zeros(n, width, device=self.device)
        x = torch.zeros(n, width, dtype=torch.complex64, device=self.device)
        target = local[row_tb[rows]], row_k[rows]
        sinr.view(n, -1, self.res_per_prb)[target] = out["sinr" if self.fidelity == "link" else "sinr_abstraction"][
            rows
        ]
        x.view(n, -1, self.res_per_prb)[target] = out["x"][rows].to(x.dtype)
        ack = torch.zeros(n, dtype=torch.bool, device=self.device)
        if self.fidelity == "abstraction":
            # Attempt k fails with the BLER at the Chase-combined SINR of attempts 1..k, and the outcomes are
            # nested: the TB's one draw is compared with each attempt's BLER, which falls as SINR adds up,
            # so a TB decoded stays decoded and the residual loss is the BLER of the last combination (as
            # the training proxy has it), not a product of independent draws
            combined = self._combine(ids, sinr)
            bler = self.abstraction(mcs, sinr=combined, num_allocated_re=prbs * self.res_per_prb)["bler"]
            ack = tb["fate"][ids] >= bler.double()
            self._deliver(ids[ack], None)
        else:
            for (m, p), group in self._configs(tb_of_user).items():
                codec = self._codec(m, p)
                k = local[group]
                llr = codec.demap(x[k, : p * self.res_per_prb], sinr[k, : p * self.res_per_prb])
                decoded, crc_ok = codec.decode(self._combine(group, llr))
                ack[k] = crc_ok
                self._deliver(group[crc_ok], decoded[crc_ok])
        sinr_eff_db = 10 * torch.log10(effective_sinr(sinr, mcs, self.mcs_table).clamp_min(1e-30))
        tb["attempts"][ids] += 1
        first = tb["attempts"][ids] == 1
        tb["feedback_slot"][ids[first]] = slot + self.round_trip_slots
        tb["first_ack"][ids[first]] = ack[first].long()
        final = ack | (tb["attempts"][ids] >= self.max_attempts)
        tb["state"][ids] = torch.where(final, DONE, PENDING)
        tb["next_slot"][ids] = slot + self.round_trip_slots
        self.soft_free[tb["soft_row"][ids[final]]] = True
        # open: still to be retransmitted, or its first attempt's feedback is still to come (the outer loop's)
        candidates = torch.cat([self._open, ids]).unique()
        self._open = candidates[(tb["state"][candidates] == PENDING) | (tb["feedback_slot"][candidates] > slot)]
        coded_bits = self.table.coded_bits.to(self.device)[mcs, prbs]
        tb_size = self.tb_size[mcs, prbs]
        payload = tb["end"][ids] - tb["start"][ids]
        self.records.append(
            {
                "slot": torch.full((n,), slot, device=self.device),
                "tb": ids,
                "timeline": tb["b"][ids],
                "user": tb["u"][ids],
                "mcs": mcs,
                "prbs": prbs,
                "tbs": tb_size,
                "start": tb["start"][ids],
                "payload_bits": payload,
                "coded_bits": coded_bits,
                "attempt": tb["attempts"][ids],
                "ack": ack,
                "sinr_eff_db": sinr_eff_db,
                # what the REs could carry at capacity: log2(1 + SINR) of each RE as the receiver saw it
                # (equalised, estimation error included; the abstraction's SINR there), 0 off the grant
                "shannon_bits": torch.log2(1 + sinr).sum(-1),
            }
        )
        b, u = tb["b"][ids], tb["u"][ids]
        for key, value in (
            ("start", tb["start"][ids]),
            ("end", tb["end"][ids]),
            ("res", prbs * self.res_per_prb),
            ("coded_bits", coded_bits),
            ("decoded_bits", tb_size * ack),
            ("payload_bits", payload * ack),
        ):
            events[key][b, u] = value
        events["resolved"] = ids[final]
        return events

    def feedback(self, slot: int) -> torch.Tensor:
        """[num_timelines, num_users] int32: first-attempt HARQ feedback arriving in ``slot`` (1 ACK, 0 NACK, -1)."""
        tb = self.tb
        arriving = self._open[tb["feedback_slot"][self._open] == slot]
        out = torch.full(self.shape, -1, dtype=torch.int32, device=self.device)
        out[tb["b"][arriving], tb["u"][arriving]] = tb["first_ack"][arriving].to(torch.int32)
        return out

    def observe_feedback(self, slot: int) -> None:
        """Feed the outer loop the first-attempt outcomes the users learn in ``slot``.

        Each outcome steps the user's back-off by Sionna's OLLA rule, in each timeline. With
        ``shared_olla`` the timelines are snapshots of one cell at independent moments, each too short for
        the loop to settle, so a user's copies share one back-off, and each outcome moves it by its step
        over the number of copies: over a batch the back-off moves as the copies' own loops would on
        average, and it rests where the first-attempt BLER over all their TBs is the target. (Weighing
        by the copies that heard feedback instead would let the last, faded copies of a snapshot drive it.)
        """
        if self.olla is None or not bool((self.tb["feedback_slot"][self._open] == slot).any()):
            return
        feedback = self.feedback(slot)
        if not self.shared_olla:
            self.olla.update(feedback)
            return
        before = self.olla.offset_db.clone()
        self.olla.update(feedback)
        after = self.olla.offset_db
        heard = feedback >= 0
        step = torch.where(heard, after - before, 0).sum(0) / heard.shape[0] * float(self.shared_olla)
        self.olla.offset_db = before + step[None]

    def _combine(self, ids, soft) -> torch.Tensor:
        """Add ``soft`` [n, width] to the TBs' buffers (Chase combining); returns the combined values."""
        rows = self.tb["soft_row"][ids]
        if soft.shape[1] > self.soft.shape[1]:
            self.soft = torch.nn.functional.pad(self.soft, (0, soft.shape[1] - self.soft.shape[1]))
        self.soft[rows, : soft.shape[1]] += soft
        return self.soft[rows, : soft.shape[1]]

    def _deliver(self, ids, decoded) -> None:
        """Mark the payload bits of TBs ``ids`` received (``decoded``: their decoded bits; ``None``: as sent)."""
        if len(ids) == 0 or self.bits is None:
            return
        tb = self.tb
        length = int((tb["end"][ids] - tb["start"][ids]).max())
        pos = tb["start"][ids, None] + torch.arange(length, device=self.device)
        inside = pos < tb["end"][ids, None]
        users = tb["u"][ids, None].expand_as(pos)
        flat = self.position(pos, users)
        b = tb["b"][ids, None].expand_as(pos)
        b, users, flat = b[inside], users[inside], flat[inside]
        self.bit_ok[b, users, flat] = True
        if decoded is None:
            self.received[b, users, flat] = self.bits[b, users, flat]
        else:
            self.received[b, users, flat] = decoded[:, :length][inside].to(self.received.dtype)

    def tb_records(self) -> dict[str, torch.Tensor]:
        """Every TB attempt of the run, one entry per attempt (columns of :meth:`receive`'s records)."""
        if not self.records:
            return {}
        return {k: torch.cat([r[k] for r in self.records]) for k in self.records[0]}


def eesm_of_best(sinr_prb: torch.Tensor, mcs: torch.Tensor, mcs_table: int, best_first: bool) -> torch.Tensor:
    """[..., num_prbs]: for every grant size ``b``, Sionna's EESM (beta of ``mcs``) of the ``b`` largest of
    ``sinr_prb`` [..., num_prbs] (``best_first``), or of all of them for every ``b``.

    Sionna's formula, ``-beta ln(mean exp(-sinr / beta))``, for every ``b`` at once by a cumulative sum
    over the SINRs sorted best first (its EESM block would need a ``[..., num_prbs, num_prbs]`` input), in
    the log domain, where no exponential under- or overflows.
    """
    from sim.phy.abstraction import eesm_beta

    beta = eesm_beta(mcs, mcs_table).to(sinr_prb)[..., None]
    if not best_first:
        return effective_sinr(sinr_prb.float(), mcs, mcs_table)[..., None].expand_as(sinr_prb).to(sinr_prb)
    ordered = sinr_prb.sort(-1, descending=True).values
    counts = torch.arange(1, sinr_prb.shape[-1] + 1, device=sinr_prb.device)
    return -beta * (torch.logcumsumexp(-ordered / beta, dim=-1) - torch.log(counts))


@functools.lru_cache(maxsize=512)
def _codec(mcs, prbs, subcarrier_spacing_hz, pilots, mcs_table, decoder, num_bp_iter, device) -> TransportBlockLink:
    """The encoder, mapper, demapper and decoder of one (MCS, PRBs) TB, built once per process (building a 5G
    LDPC code takes tens of milliseconds; a run meets the same few dozen again and again)."""
    return TransportBlockLink(
        mcs,
        prbs,
        subcarrier_spacing_hz=subcarrier_spacing_hz,
        pilot_ofdm_symbol_indices=list(pilots),
        mcs_table=mcs_table,
        decoder=decoder,
        num_bp_iter=num_bp_iter,
        device=device,
    )


@functools.lru_cache(maxsize=16)
def transport_block_table(num_prbs: int, num_pilot_symbols: int, mcs_table: int) -> TransportBlockTable:
    """The carrier's :class:`~sim.phy.digital.TransportBlockTable`, made once per process."""
    return TransportBlockTable(num_prbs, num_pilot_symbols, mcs_table)


@functools.lru_cache(maxsize=16)
def _tables(num_prbs: int, num_pilot_symbols: int, mcs_table: int, bler_target: float):
    """The carrier's TB table and link adaptation's SINR thresholds, made once per process (both are fixed).

    The thresholds come from the PHY abstraction, which draws an ACK on every call: Sionna's generator is put
    back, so a run draws the same channels and noise whether these were cached or not.
    """
    table = transport_block_table(num_prbs, num_pilot_symbols, mcs_table)
    with sionna_rng_untouched():
        return table, sinr_thresholds_db(table, bler_target)


def _take(tb_size: torch.Tensor, mcs: torch.Tensor) -> torch.Tensor:
    """``tb_size[mcs[..., b], b]`` for ``mcs`` [..., num_prbs] (b = 1..num_prbs along the last axis)."""
    prbs = torch.arange(mcs.shape[-1], device=mcs.device).expand_as(mcs)
    return tb_size[mcs.clamp_min(0), prbs]


def _rng(device) -> torch.Generator:
    """Sionna's generator for ``device``: the draws follow ``config.seed`` like the channel's."""
    from sionna.phy import config

    return config.torch_rng(str(device))
