"""Link adaptation of the cell loop's digital side: how many PRBs new data needs, and each new TB's MCS.

The inner loop reads the EESM of the CQI of a user's PRBs, less the outer-loop back-off, against the SINR
thresholds of link adaptation's table (:func:`~sim.phy.link_adaptation.sinr_thresholds_db`); the outer loop
is Sionna's OLLA (:class:`~sim.phy.link_adaptation.LinkAdaptation`), moved by first-attempt ACK/NACKs. A
fixed ``link.mcs`` bypasses both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sim.cell.tb_configs import carrier_tables, eesm_of_best, tb_size_at
from sim.phy.abstraction import effective_sinr
from sim.phy.link_adaptation import LinkAdaptation


@dataclass(frozen=True)
class OuterLoopStart:
    """Where the users' outer loops start, and whether the timelines of a batch share them.

    :param offset_db: [num_users] back-off each user starts from in every timeline (``None``: 0 dB)
    :param shared: ``False``: each timeline's copy of a user runs its own loop; ``True``: the timelines are
        snapshots of one cell, whose copies of a user share one loop (see :meth:`McsChoice.observe`); a
        number: shared, and it scales the shared loop's steps (a warm-up's larger gain)
    """

    offset_db: torch.Tensor | None = None
    shared: bool | float = False


class McsChoice:
    """The MCS and PRB need of every user of a batch of timelines.

    :param link: the scenario's ``link`` section (digital); :param cell: its ``cell`` section
    :param num_timelines: independent cells in the batch; :param num_users: users per cell
    :param reference_snr_shift_db: [num_users, num_prbs + 1] float64, SNR per RE at ``b`` PRBs minus that at
        the reference share (:meth:`~sim.mac.power.UplinkPower.shift_db`)
    :param device: torch device
    :param outer_loop: where the outer loops start and whether the timelines share them
    :param power_headroom: ``scheduler.power_headroom`` (see :meth:`need`)
    """

    def __init__(
        self,
        link,
        cell,
        num_timelines,
        num_users,
        reference_snr_shift_db,
        device,
        outer_loop=OuterLoopStart(),
        power_headroom=True,
    ):
        self.table, thresholds = carrier_tables(
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
        self.shared_olla, self.power_headroom = outer_loop.shared, power_headroom
        self.mcs_table = link.mcs_table
        self.device = device
        self.olla = None
        if self.fixed_mcs is None:
            self.olla = LinkAdaptation(
                num_users, link.bler_target, link.mcs_table, olla=True, batch_size=num_timelines, device=str(device)
            )
            if outer_loop.offset_db is not None:
                self.olla.offset_db = torch.as_tensor(outer_loop.offset_db)[None, :]
        self.last_mcs = torch.full((num_timelines, num_users), int(first_usable[1]), dtype=torch.long, device=device)

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
            carried = torch.where(best >= 0, tb_size_at(tb_size, best), 0)
        enough = carried >= backlog[..., None]
        most = carried.argmax(-1) + 1 if self.power_headroom else torch.full_like(backlog, num_prbs)
        fewest = torch.where(enough.any(-1), enough.float().argmax(-1) + 1, most)
        return torch.where(backlog > 0, fewest.clamp(1, num_prbs), 0)

    def choose(self, new: torch.Tensor, granted: torch.Tensor, sinr_prb_granted: torch.Tensor) -> torch.Tensor:
        """[num_timelines, num_users] int64: the MCS of each new TB (``new`` [num_timelines, num_users] bool),
        within the MCSs usable on its ``granted`` PRBs; a user's last MCS is kept where it forms none.

        :param sinr_prb_granted: [num_timelines, num_users, num_prbs] CQI SINR at the power per RE of the grant
            on each granted PRB, 0 elsewhere
        """
        if self.olla is not None:
            report = effective_sinr(sinr_prb_granted.float(), self.last_mcs, self.mcs_table)
            report_db = torch.where(new, 10 * torch.log10(report.clamp_min(1e-12)), -math.inf)
            mcs = self.olla(report_db, (self.res_per_prb * granted * new).to(torch.int32)).long()
        else:
            mcs = torch.full(new.shape, self.fixed_mcs, dtype=torch.long, device=self.device)
        lowest, highest = (r[granted] for r in self.mcs_range)
        mcs = torch.minimum(torch.maximum(mcs, lowest), highest)
        self.last_mcs = torch.where(new, mcs, self.last_mcs)
        return mcs

    def observe(self, feedback: torch.Tensor) -> None:
        """Feed the outer loop the first-attempt outcomes the users learn in a slot: ``feedback``
        [num_timelines, num_users] int32, 1 ACK, 0 NACK, -1 none.

        Each outcome steps the user's back-off by Sionna's OLLA rule, in each timeline. With a shared
        :class:`OuterLoopStart` the timelines are snapshots of one cell at independent moments, each too short for
        the loop to settle, so a user's copies share one back-off, and each outcome moves it by its step
        over the number of copies: over a batch the back-off moves as the copies' own loops would on
        average, and it rests where the first-attempt BLER over all their TBs is the target. (Weighing
        by the copies that heard feedback instead would let the last, faded copies of a snapshot drive it.)
        A number as ``OuterLoopStart.shared`` scales the shared loop's steps (a warm-up's larger gain).
        """
        if not self.shared_olla:
            self.olla.update(feedback)
            return
        before = self.olla.offset_db.clone()
        self.olla.update(feedback)
        after = self.olla.offset_db
        heard = feedback >= 0
        step = torch.where(heard, after - before, 0).sum(0) / heard.shape[0] * float(self.shared_olla)
        self.olla.offset_db = before + step[None]
