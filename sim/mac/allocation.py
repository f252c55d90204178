"""Resource allocation of the uplink: the reference equal share, and the token-aware joint allocation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field

from core.schema import SnrDb, Strict
from sim.phy.numerology import NUM_OFDM_SYMBOLS_PER_SLOT, NUM_SUBCARRIERS_PER_PRB


@dataclass(frozen=True)
class EqualShare:
    """The reference share: every user the same whole number of PRBs, at least one.

    A user's ``snr_db`` is its SNR per RE when its power spreads over this
    many PRBs (:class:`~sim.mac.power.UplinkPower`); ``equal-share`` grants
    it in every slot; training sends on it (and the digital noise proxy sizes
    its TBs for it). With fewer PRBs than users it is still one PRB: the
    schedulers that share PRBs over slots time-share the carrier.

    :param num_prbs: PRBs of the carrier
    :param num_users: users sharing them
    :param num_pilot_symbols: pilot OFDM symbols per slot (no data there)

    >>> share = EqualShare(num_prbs=24, num_users=10, num_pilot_symbols=2)
    >>> share.prbs_per_user, share.data_symbols_per_slot, share.slots_for(500)
    (2, 288, 2)
    """

    num_prbs: int
    num_users: int
    num_pilot_symbols: int

    @property
    def prbs_per_user(self) -> int:
        return max(1, self.num_prbs // self.num_users)

    @property
    def data_symbols_per_slot(self) -> int:
        """Data resource elements one user has in one slot."""
        return self.prbs_per_user * NUM_SUBCARRIERS_PER_PRB * (NUM_OFDM_SYMBOLS_PER_SLOT - self.num_pilot_symbols)

    def slots_for(self, num_symbols: int) -> int:
        """Slots a user needs to send ``num_symbols`` complex symbols."""
        return math.ceil(num_symbols / self.data_symbols_per_slot)


class AllocationConfig(Strict):
    """``scheduler.policy: token-aware``: what the joint allocation weighs and may choose."""

    latency_weight: float = Field(1.0, ge=0, description="weight of a group's latency over traffic.deadline_ms")
    loss_weight: float = Field(1.0, ge=0, description="weight of a group's expected task loss (1 - accuracy)")
    token_factors: list[int] = Field(
        default_factory=lambda: [1, 2, 4], min_length=1, description="token-length reductions a group may use"
    )
    calibration_tasks_per_group: int = Field(100, gt=0, description="validation tasks per calibration point")
    calibration_snr_shifts_db: list[SnrDb] = Field(
        default_factory=lambda: [-12.0, -9.0, -6.0, -3.0, 0.0, 3.0, 6.0],
        min_length=2,
        description="SNR offsets at which accuracy and REs are measured (interpolated between)",
    )


@dataclass
class Calibration:
    """What the trained model and the PHY give at each token factor and SNR offset (validation tasks).

    ``accuracy``: [factors, shifts, groups]; ``res``: [factors, shifts, users], mean REs a user's
    payload takes on air (every attempt); ``harq_wait_slots``: same shape, mean slots of HARQ
    round trips beyond the attempts.
    """

    factors: list[int]
    shifts_db: np.ndarray
    accuracy: np.ndarray
    res: np.ndarray
    harq_wait_slots: np.ndarray

    def at(self, table: np.ndarray, factor_index: np.ndarray, shift_db: np.ndarray, column: np.ndarray):
        """``table[factor_index, shift_db (interpolated, clamped), column]``, elementwise over the arguments."""
        position = np.interp(shift_db, self.shifts_db, np.arange(len(self.shifts_db)))
        low = np.floor(position).astype(int).clip(0, len(self.shifts_db) - 2)
        frac = position - low
        return (1 - frac) * table[factor_index, low, column] + frac * table[factor_index, low + 1, column]


class TokenAwareAllocation:
    """Per-group token length and per-user PRB share that minimise latency and expected task loss.

    A user's transmit power is spread over its PRBs, so giving it ``b`` PRBs
    instead of the reference share ``b_ref`` moves its SNR per RE by the cell
    loop's power rule (:class:`~sim.mac.power.UplinkPower`: ``-10 log10(b / b_ref)``
    dB at full power). More PRBs shorten airtime but lower the SNR
    (analog: noisier tokens; digital: a lower MCS, more REs); fewer tokens
    shorten airtime and cost accuracy. The objective, per snapshot of the
    cell, is the mean over groups of

        latency_weight * latency_g / deadline + loss_weight * (1 - accuracy_g)

    with latency_g the slowest member's device compute, slot alignment and
    airtime on its own PRBs (plus HARQ round trips) plus edge compute, and
    accuracy_g measured on validation tasks (:class:`Calibration`) at the
    group's token factor and its worst member's SNR offset.

    Alternating optimisation, as in the paper's later version over bandwidth,
    power and token length: (1) PRBs given one at a time to whichever user
    lowers the objective most (every user starts from one PRB; a user's power
    follows its PRBs), (2) each group's token factor set to its best given the
    PRBs; repeated until neither step changes anything. The equal-share,
    full-length point is kept if nothing found beats it, so the result is
    never worse by this objective.

    :param calibration: measured accuracy and REs per factor and SNR offset
    :param group_of_user: [num_users] int
    :param num_prbs: PRBs of the carrier
    :param power: the cell's :class:`~sim.mac.power.UplinkPower` (its reference share is the equal share)
    :param res_per_prb: data REs of one PRB in one slot
    :param slot_s: slot duration
    :param device_s: [num_users] device compute; ``edge_s``: [num_groups] edge compute
    :param deadline_s: the latency the objective counts in
    """

    def __init__(self, calibration, group_of_user, num_prbs, power, res_per_prb, slot_s, device_s, edge_s,
                 deadline_s, latency_weight=1.0, loss_weight=1.0):  # fmt: skip
        self.cal = calibration
        self.group_of_user = np.asarray(group_of_user)
        self.num_groups = int(self.group_of_user.max()) + 1
        self.num_prbs, self.power, self.res_per_prb = num_prbs, power, res_per_prb
        self.reference_prbs = power.reference_prbs
        self.slot_s, self.deadline_s = slot_s, deadline_s
        self.ready_slots = np.ceil(np.asarray(device_s) / slot_s - 1e-6)
        self.edge_s = np.asarray(edge_s)
        self.latency_weight, self.loss_weight = latency_weight, loss_weight

    def shift_db(self, prbs: np.ndarray) -> np.ndarray:
        """[num_users] SNR per RE at ``prbs`` minus at the reference share, by the cell loop's power rule."""
        return self.power.shift_db(torch.as_tensor(np.asarray(prbs, dtype=float))).numpy()

    def terms(self, factor_index: np.ndarray, prbs: np.ndarray) -> dict[str, np.ndarray]:
        """Per group: ``latency_s``, ``accuracy`` and ``objective`` of per-group factor indices and per-user PRBs."""
        shift = self.shift_db(prbs)
        uplink_s = self.uplink_s(factor_index, prbs)
        latency = np.zeros(self.num_groups)
        np.maximum.at(latency, self.group_of_user, uplink_s)
        latency += self.edge_s
        worst = np.full(self.num_groups, np.inf)
        np.minimum.at(worst, self.group_of_user, shift)
        accuracy = self.cal.at(self.cal.accuracy, factor_index, worst, np.arange(self.num_groups))
        objective = self.latency_weight * latency / self.deadline_s + self.loss_weight * (1 - accuracy)
        return {"latency_s": latency, "accuracy": accuracy, "objective": objective}

    def uplink_s(self, factor_index, prbs) -> np.ndarray:
        """[num_users] seconds from a task's arrival to the user's last token at the base station."""
        users = np.arange(len(prbs))
        shift, f_user = self.shift_db(prbs), factor_index[self.group_of_user]
        res = self.cal.at(self.cal.res, f_user, shift, users)
        wait = self.cal.at(self.cal.harq_wait_slots, f_user, shift, users)
        return (self.ready_slots + np.ceil(res / (prbs * self.res_per_prb) - 1e-9) + wait) * self.slot_s

    def objective(self, factor_index, prbs) -> float:
        return float(self.terms(factor_index, prbs)["objective"].mean())

    def __call__(self) -> dict:
        """``{"token_factor": [users], "prbs": [users], "snr_shift_db": [users], "objective", "equal_objective",
        "iterations"}``; token factors are the calibration's, per user (its group's)."""
        num_users = len(self.group_of_user)
        if self.num_prbs < num_users:
            raise ValueError(f"a static share needs a PRB per user: {self.num_prbs} PRBs, {num_users} users")
        factor_index = np.zeros(self.num_groups, dtype=int)  # full length
        prbs = np.full(num_users, self.reference_prbs)
        equal = self.objective(factor_index, prbs)
        iterations = 0
        while iterations < 50:
            iterations += 1
            new_prbs = self._prb_step(factor_index)
            new_factors = self._factor_step(new_prbs)
            changed = not (np.array_equal(new_prbs, prbs) and np.array_equal(new_factors, factor_index))
            prbs, factor_index = new_prbs, new_factors
            if not changed:
                break
        best = self.objective(factor_index, prbs)
        if best > equal:  # keep the equal-share point if the search found nothing better
            factor_index, prbs, best = (
                np.zeros(self.num_groups, dtype=int),
                np.full(num_users, self.reference_prbs),
                equal,
            )
        factors = np.asarray(self.cal.factors)[factor_index]
        return {
            "token_factor": factors[self.group_of_user].tolist(),
            "prbs": prbs.astype(int).tolist(),
            "snr_shift_db": self.shift_db(prbs).tolist(),
            "objective": best,
            "equal_objective": equal,
            "iterations": iterations,
        }

    def _prb_step(self, factor_index) -> np.ndarray:
        """Greedy from one PRB each: take the move that lowers the objective most per PRB it costs.

        Airtime falls in whole slots and a group waits for its slowest member,
        so single PRBs often change nothing; the moves are (a) one user up to
        the fewest PRBs that save it a slot, (b) every member that is slowest
        in its group up to that point together, and (c) one more PRB to one
        user (its power spreads further: it may also lose accuracy).
        """
        users = np.arange(len(self.group_of_user))
        prbs = np.ones(len(users))
        current = self.objective(factor_index, prbs)
        while prbs.sum() < self.num_prbs:
            shift = self.shift_db(prbs)
            f_user = factor_index[self.group_of_user]
            res = self.cal.at(self.cal.res, f_user, shift, users)
            slots = np.ceil(res / (prbs * self.res_per_prb) - 1e-9)
            saving = np.where(slots > 1, np.ceil(res / (np.maximum(slots - 1, 1) * self.res_per_prb)), prbs + 1)
            uplink = self.uplink_s(factor_index, prbs)
            moves = [np.where(users == u, max(saving[u], prbs[u] + 1), prbs) for u in users]
            moves += [np.where(users == u, prbs[u] + 1, prbs) for u in users]
            for g in range(self.num_groups):
                mine = self.group_of_user == g
                critical = mine & (uplink >= uplink[mine].max() - 1e-12)
                moves.append(np.where(critical, np.maximum(saving, prbs + 1), prbs))
            best, best_rate = None, 0.0
            for move in moves:
                cost = move.sum() - prbs.sum()
                if cost <= 0 or move.sum() > self.num_prbs:
                    continue
                rate = (current - self.objective(factor_index, move)) / cost
                if rate > best_rate + 1e-12:
                    best, best_rate = move, rate
            if best is None:
                break
            prbs, current = best, self.objective(factor_index, best)
        return prbs

    def _factor_step(self, prbs) -> np.ndarray:
        """Each group's best token factor with the PRBs fixed (groups do not interact through factors)."""
        per_factor = np.stack(
            [self.terms(np.full(self.num_groups, f), prbs)["objective"] for f in range(len(self.cal.factors))]
        )
        return per_factor.argmin(0)
