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
  maps, demaps and decodes every bit. ``abstraction`` does all but the
  decoding and reads the BLER off the combined LLRs' mean bit information on a
  curve calibrated on this chain (``link.abstraction: llr-mi``,
  :mod:`sim.phy.llr_mi`), or sends no symbols and takes the BLER Sionna's
  ``PHYAbstraction`` gives the per-RE SINRs (``eesm``). Either way the soft
  values of all attempts of a TB add up (LLRs, or SINRs per RE). Under the abstraction one
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

import torch

from sim.cell.adaptation import McsChoice
from sim.cell.harq_table import HarqTable
from sim.cell.tb_configs import calibrated_curve, tb_codec
from sim.phy.abstraction import TransportBlockAbstraction, effective_sinr
from sim.phy.digital import TransportBlockLink
from sim.phy.llr_mi import BlerCurve, bit_information
from sim.phy.quantization import UniformQuantizer
from sim.runtime import stream_seed


class TransportBlocks(HarqTable):
    """Every TB of one cell-loop run: its bits, HARQ state, soft buffer and outcome.

    :param link: the scenario's ``link`` section (digital)
    :param cell: the scenario's ``cell`` section
    :param adaptation: the users' :class:`~sim.cell.adaptation.McsChoice` (it also fixes the batch: timelines,
        users, device)
    :param bits: [num_timelines, num_users, stream_length] float 0/1, the quantised payload of every job of
        every user, back to back (see :class:`~sim.cell.loop.CellLoop`); ``None``: count resources only
    :param position: callable ``(positions [n], users [n]) -> [n]`` flat index of a user's stream position
    """

    def __init__(self, link, cell, adaptation: McsChoice, bits, position):
        device = adaptation.device
        super().__init__(*adaptation.last_mcs.shape, device)
        self.fidelity, self.max_attempts = link.fidelity, 1 + link.harq.max_retx
        # how the TBs go on air and are judged: "link" decodes, "llr-mi" demaps without decoding, "eesm" sends
        # no symbols at all
        self.reception = link.abstraction if link.fidelity == "abstraction" else "link"
        self.round_trip_slots = link.harq.round_trip_slots
        self.quantizer = UniformQuantizer(link.bits_per_value)
        self.adaptation = adaptation
        self.table, self.tb_size = adaptation.table, adaptation.tb_size
        self.res_per_prb, self.mcs_table = adaptation.res_per_prb, link.mcs_table
        # Sionna's PHYAbstraction judges the TBs under the eesm abstraction only
        eesm = self.reception == "eesm"
        self.abstraction = TransportBlockAbstraction(link.mcs_table, device=str(device)) if eesm else None
        # what fixes a TB's codec and llr-mi curve besides its MCS and PRBs (tb_configs' arguments)
        self._config = (
            cell.subcarrier_spacing_hz,
            tuple(cell.pilot_ofdm_symbol_indices),
            link.mcs_table,
            link.decoder,
            link.num_bp_iter,
        )
        self.bits, self.position = bits, position
        self._fate_rng = None
        if bits is not None:
            self.received = torch.zeros_like(bits)
            self.bit_ok = torch.zeros(bits.shape, dtype=torch.bool, device=device)

    # ------------------------------------------------------------------ link adaptation

    @property
    def olla(self):
        """Sionna's outer loop of the users' link adaptation (``None`` with a fixed MCS)."""
        return self.adaptation.olla

    def need(self, users: torch.Tensor, backlog: torch.Tensor, sinr_prb: torch.Tensor, best_first=True):
        """PRBs that carry each user's backlog in one TB (:meth:`~sim.cell.adaptation.McsChoice.need`)."""
        return self.adaptation.need(users, backlog, sinr_prb, best_first)

    def observe_feedback(self, slot: int) -> None:
        """Feed the outer loop the first-attempt outcomes the users learn in ``slot``
        (:meth:`~sim.cell.adaptation.McsChoice.observe`)."""
        if self.olla is not None and bool((self.tb["feedback_slot"][self._open] == slot).any()):
            self.adaptation.observe(self.feedback(slot))

    # ------------------------------------------------------------------ one slot

    def _codec(self, mcs: int, prbs: int) -> TransportBlockLink:
        return tb_codec(mcs, prbs, *self._config, str(self.device))

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
        mcs = self.adaptation.choose(new, granted, sinr_prb_granted)
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
        configs = self._configs(tb_of_user)
        symbols, coded = self.symbols(tb_of_user, configs, rows.b, rows.u, rows.k)
        out = link(symbols, rows.h, rows.no)
        events = self.receive(slot, tb_of_user, configs, coded, rows.b, rows.u, rows.k, out)
        sent = sent.clone()
        sent[self.tb["b"][created], self.tb["u"][created]] = self.tb["end"][created]
        return events | {"sent": sent, "created": created}

    def _curve(self, mcs: int, prbs: int) -> BlerCurve:
        """The llr-mi abstraction's BLER curve of (MCS, PRBs), calibrated around the SNR link adaptation's
        table gives for the BLER target (once per process and configuration)."""
        return calibrated_curve(mcs, prbs, *self._config, float(self.adaptation.thresholds[mcs, prbs]))

    def _fates(self, n: int) -> torch.Tensor:
        """[n] float64: the one uniform draw per TB that decides its attempts under the abstraction
        (:meth:`receive`); the link level decodes instead and draws nothing.

        The draws come from a generator of their own, seeded from Sionna's seed on the ``fates`` stream,
        so that the abstraction and the link level draw the same channels and noise for the same seed: the
        two fidelities then compare on common random numbers."""
        if self.fidelity != "abstraction":
            return torch.zeros(n, dtype=torch.float64, device=self.device)
        if self._fate_rng is None:
            self._fate_rng = torch.Generator(self.device).manual_seed(_fate_seed(self.device))
        return torch.rand(n, dtype=torch.float64, device=self.device, generator=self._fate_rng)

    def symbols(self, tb_of_user, configs, row_b, row_u, row_k):
        """``(symbols, coded)``: [num_rows, res_per_prb] complex, each granted PRB row's share of its TB's QAM
        symbols (0 where no TB rides it; always 0 for the EESM abstraction, which needs only the channel's
        SINRs), and the coded bits of each configuration's TBs (``configs``: :meth:`_configs`), by (MCS, PRBs)."""
        out = torch.zeros(len(row_b), self.res_per_prb, dtype=torch.complex64, device=self.device)
        coded_bits: dict[tuple[int, int], torch.Tensor] = {}
        if self.reception == "eesm":
            return out, coded_bits
        row_tb = tb_of_user[row_b, row_u]
        for (mcs, prbs), ids in configs.items():
            codec = self._codec(mcs, prbs)
            coded = coded_bits[mcs, prbs] = codec.encoder(self._tb_bits(ids, codec.tb_size))
            symbols = codec.mapper(coded).to(out.dtype)
            local = torch.full((len(self.tb["b"]),), -1, dtype=torch.long, device=self.device)
            local[ids] = torch.arange(len(ids), device=self.device)
            rows = torch.nonzero((row_tb >= 0) & (local[row_tb.clamp_min(0)] >= 0)).squeeze(-1)
            per_prb = symbols.view(len(ids), prbs, self.res_per_prb)
            out[rows] = per_prb[local[row_tb[rows]], row_k[rows]]
        return out, coded_bits

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

    def receive(self, slot, tb_of_user, configs, coded, row_b, row_u, row_k, out) -> dict[str, torch.Tensor]:
        """Combine, decide and account this slot's TBs from the PRB rows' receiver output.

        :param configs: :meth:`_configs` of ``tb_of_user``; ``coded``: :meth:`symbols`' coded bits by configuration
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
        sinr.view(n, -1, self.res_per_prb)[target] = out["sinr_abstraction" if self.reception == "eesm" else "sinr"][
            rows
        ]
        x.view(n, -1, self.res_per_prb)[target] = out["x"][rows].to(x.dtype)
        ack = torch.zeros(n, dtype=torch.bool, device=self.device)
        if self.reception == "eesm":
            # Attempt k fails with the BLER at the Chase-combined SINR of attempts 1..k, and the outcomes are
            # nested: the TB's one draw is compared with each attempt's BLER, which falls as SINR adds up,
            # so a TB decoded stays decoded and the residual loss is the BLER of the last combination (as
            # the training proxy has it), not a product of independent draws
            combined = self._combine(ids, sinr)
            bler = self.abstraction(mcs, sinr=combined, num_allocated_re=prbs * self.res_per_prb)["bler"]
            ack = tb["fate"][ids] >= bler.double()
            self._deliver(ids[ack], None)
        else:
            for (m, p), group in configs.items():
                codec = self._codec(m, p)
                k = local[group]
                llr = self._combine(group, codec.demap(x[k, : p * self.res_per_prb], sinr[k, : p * self.res_per_prb]))
                if self.reception == "link":
                    decoded, crc_ok = codec.decode(llr)
                    ack[k] = crc_ok
                    self._deliver(group[crc_ok], decoded[crc_ok])
                else:  # llr-mi: the same nested draw against the BLER of the combined LLRs' information
                    bler = self._curve(m, p).bler(bit_information(llr, coded[m, p]).mean(-1))
                    ack[k] = tb["fate"][group] >= bler
                    self._deliver(group[ack[k]], None)
        sinr_eff_db = 10 * torch.log10(effective_sinr(sinr, mcs, self.mcs_table).clamp_min(1e-30))
        final = self.settle(slot, ids, ack, self.round_trip_slots, self.max_attempts)
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


def _fate_seed(device) -> int:
    """The abstraction's fates' seed: Sionna's ``config.seed`` on the ``fates`` stream, or, when nothing set
    it, one draw from Sionna's generator for ``device``."""
    from sionna.phy import config

    if config.seed is None:
        return int(torch.randint(2**62, (1,), device=device, generator=config.torch_rng(str(device))))
    return stream_seed(config.seed, "fates")
