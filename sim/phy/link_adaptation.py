"""MCS selection for ``link.mcs: auto``: Sionna's inner-loop (ILLA) and outer-loop (OLLA) link adaptation.

ILLA picks, per link, the highest MCS whose transport BLER at the reported SINR meets ``link.bler_target``, from
the same BLER tables :class:`~sim.phy.abstraction.TransportBlockAbstraction` draws the ACKs from. A reported SINR
is an estimate, biased by the estimator, by fading between report and transmission, by the abstraction's own
error; OLLA removes the bias from the HARQ feedback: every NACK raises an SINR back-off by ``delta_up_db``, every
ACK lowers it by ``delta_up_db * bler_target / (1 - bler_target)``, so the back-off settles where the NACK rate
is ``bler_target``.

The MCS table and modulation/code rate of an MCS index are Sionna's: ``sionna.phy.nr.utils.decode_mcs_index(
mcs, table_index, is_pusch=True)`` gives (bits per symbol, code rate) for PUSCH without transform precoding in
one call, and :func:`~sim.phy.digital.transport_block_size` gives the TB of a slot.
"""

from __future__ import annotations

import torch
from sionna.phy import Block
from sionna.phy.utils import db_to_lin
from sionna.sys import InnerLoopLinkAdaptation, OuterLoopLinkAdaptation

from sim.phy.abstraction import PUSCH_CATEGORY, pusch_phy_abstraction


class LinkAdaptation(Block):
    r"""Per-slot MCS of every link from its SINR report, and (OLLA) from its HARQ feedback.

    Call it with the SINR reports of a slot to get the MCS of each link; after the slot, give the HARQ feedback
    of the transmissions to :meth:`update`. Without OLLA (``olla=False``) the MCS follows the reports alone and
    :meth:`update` does nothing.

    :param num_users: links adapted at once (last dimension of every input)
    :param bler_target: ``link.bler_target``, in (0, 1)
    :param mcs_table_index: 38.214 PUSCH MCS table, 1 (64-QAM) or 2 (256-QAM)
    :param olla: track an SINR back-off from the HARQ feedback (Sionna's ``OuterLoopLinkAdaptation``)
    :param delta_up_db: back-off step on a NACK; an ACK steps ``delta_up_db * bler_target / (1 - bler_target)``
        the other way
    :param offset_min_db: lowest back-off (negative: the reports are trusted to be pessimistic)
    :param offset_max_db: highest back-off
    :param batch_size: leading dimensions of independent copies (e.g. Monte-Carlo drops), ``None`` for none
    :param precision: ``None`` takes Sionna's ``config.precision``
    :param device: ``None`` takes Sionna's ``config.device``

    :input sinr_db: [*batch_size, num_users], float. Reported (estimated) effective SINR of each link, dB. With
        OLLA, ``-inf`` means no new report: the link's last one is used.
    :input num_allocated_re: [*batch_size, num_users] int | int. Data REs of each link's TB in the slot (144 per
        PRB); it sets the code-block size, which moves the BLER. 0 = not scheduled, whose MCS is returned as 0.

    :output mcs_index: [*batch_size, num_users], torch.int32. Highest MCS whose BLER at ``sinr_db`` minus the
        back-off meets ``bler_target``; the lowest calibrated MCS (3 in table 1) when none does.

    >>> la = LinkAdaptation(num_users=3, bler_target=0.1)
    >>> mcs = la(torch.tensor([0.0, 10.0, 20.0]), 144 * 4)
    >>> out = TransportBlockAbstraction()(mcs, sinr_eff=db_to_lin(true_sinr_db), num_allocated_re=144 * 4)
    >>> la.update(out["harq_feedback"])
    """

    def __init__(
        self,
        num_users: int,
        bler_target: float = 0.1,
        mcs_table_index: int = 1,
        olla: bool = True,
        delta_up_db: float = 1.0,
        offset_min_db: float = -20.0,
        offset_max_db: float = 20.0,
        batch_size: int | list[int] | None = None,
        precision: str | None = None,
        device: str | None = None,
    ):
        super().__init__(precision=precision, device=device)
        if not 0.0 < float(bler_target) < 1.0:
            raise ValueError(f"bler_target must be a block error rate in (0, 1), not {bler_target}")
        self.num_users = num_users
        self.bler_target = float(bler_target)
        self.mcs_table_index = mcs_table_index
        self._pending_feedback: torch.Tensor | None = None
        phy_abstraction = pusch_phy_abstraction(mcs_table_index, self.precision, self.device)
        if olla:
            self._olla = OuterLoopLinkAdaptation(
                phy_abstraction,
                num_ut=num_users,
                bler_target=self.bler_target,
                delta_up=delta_up_db,
                batch_size=batch_size,
                offset_min=offset_min_db,
                offset_max=offset_max_db,
                precision=self.precision,
                device=self.device,
            )
            self._illa = None
        else:
            self._olla = None
            self._illa = InnerLoopLinkAdaptation(
                phy_abstraction, bler_target=self.bler_target, precision=self.precision, device=self.device
            )

    @property
    def offset_db(self) -> torch.Tensor | None:
        """[*batch_size, num_users], float: OLLA's SINR back-off in dB (``None`` without OLLA)."""
        if self._olla is None:
            return None
        if self._pending_feedback is not None:
            self._apply_feedback()
        return self._olla.offset

    @offset_db.setter
    def offset_db(self, value: torch.Tensor) -> None:
        """Start the back-off from ``value`` (broadcast to [*batch_size, num_users]), e.g. one learnt earlier.

        Sionna's ``OuterLoopLinkAdaptation`` only resets its offset to 0, so this writes its state tensor.
        """
        if self._olla is None:
            raise ValueError("link adaptation without OLLA has no back-off")
        if self._pending_feedback is not None:
            self._apply_feedback()
        offset = torch.as_tensor(value, dtype=self._olla.offset.dtype, device=self._olla.offset.device)
        self._olla._offset = offset.expand_as(self._olla.offset).clone()

    def call(self, sinr_db: torch.Tensor, num_allocated_re: torch.Tensor | int) -> torch.Tensor:
        num_allocated_re = torch.as_tensor(num_allocated_re, dtype=torch.int32, device=self.device).expand(
            sinr_db.shape
        )
        sinr = db_to_lin(sinr_db, precision=self.precision)
        if self._olla is None:
            mcs_index = self._illa(
                sinr_eff=sinr,
                num_allocated_re=num_allocated_re,
                mcs_table_index=self.mcs_table_index,
                mcs_category=PUSCH_CATEGORY,
            )
        else:
            # Sionna's OLLA moves the back-off by the feedback, then selects, in one call (one ILLA pass)
            mcs_index = self._olla(
                num_allocated_re,
                harq_feedback=self._pending_feedback,
                sinr_eff=sinr,
                mcs_table_index=self.mcs_table_index,
                mcs_category=PUSCH_CATEGORY,
            )
            self._pending_feedback = None
        return mcs_index.to(torch.int32)

    def update(self, harq_feedback: torch.Tensor) -> None:
        """Feed back one slot's HARQ outcomes; the back-off moves by them before the next selection.

        :param harq_feedback: [*batch_size, num_users], bool (True = ACK) or int (1 ACK, 0 NACK, -1 none, as
            ``TransportBlockAbstraction``'s ``"harq_feedback"``). Links without feedback keep their back-off.
        """
        if self._olla is None:
            return
        if self._pending_feedback is not None:  # two slots' feedback before a selection: apply the older now
            self._apply_feedback()
        self._pending_feedback = harq_feedback.to(device=self.device, dtype=torch.int32)

    def _apply_feedback(self) -> None:
        # With nothing scheduled the call moves the back-off and keeps the last SINR report; its MCS is dropped
        self._olla(
            torch.zeros_like(self._pending_feedback),
            harq_feedback=self._pending_feedback,
            sinr_eff=None,
            mcs_table_index=self.mcs_table_index,
            mcs_category=PUSCH_CATEGORY,
        )
        self._pending_feedback = None


def sinr_thresholds_db(table, bler_target: float, low_db: float = -20.0, high_db: float = 50.0) -> torch.Tensor:
    """Least effective SINR at which each (MCS, PRBs) TB of ``table`` meets ``bler_target``, dB.

    What inner-loop link adaptation compares a report against, tabulated once: bisection on Sionna's PHY
    abstraction (the BLER falls with the SINR), for every MCS with a BLER table and every grant size.
    The cell loop estimates from it how many PRBs a user's backlog needs before the scheduler grants them.

    :param table: a :class:`~sim.phy.digital.TransportBlockTable`
    :output: [num_mcs, num_prbs + 1], float64; ``inf`` where the pair is not usable.
    """
    from sim.phy.abstraction import TransportBlockAbstraction

    abstraction = TransportBlockAbstraction(mcs_table_index=table.mcs_table, device="cpu")
    usable = table.usable
    mcs = torch.arange(usable.shape[0])[:, None].expand_as(usable)[usable]
    res = (torch.arange(usable.shape[1])[None, :] * table.data_res_per_prb).expand_as(usable)[usable]
    low = torch.full(mcs.shape, low_db, dtype=torch.float64)
    high = torch.full(mcs.shape, high_db, dtype=torch.float64)
    for _ in range(40):  # 70 dB / 2**40: far below the tables' resolution
        middle = (low + high) / 2
        bler = abstraction(mcs, sinr_eff=torch.pow(10.0, middle / 10).float(), num_allocated_re=res)["bler"]
        meets = bler.double() <= bler_target
        high, low = torch.where(meets, middle, high), torch.where(meets, low, middle)
    thresholds = torch.full(usable.shape, float("inf"), dtype=torch.float64)
    thresholds[usable] = high
    return thresholds
