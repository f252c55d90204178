"""Uplink power: what a grant of ``b`` PRBs does to a user's SNR per resource element.

A user device has one transmit power for the whole grant and spreads it
evenly over the subcarriers it is granted (Sionna's
``spread_across_subcarriers``). Its SNR per resource element therefore depends
on how many PRBs the scheduler gives it:

- A user with a fixed ``snr_db`` (given, or filled in from geometry at full
  power): ``snr_db`` is the SNR per RE at the **reference share** ``b_ref``
  (``radio.reference_prbs``; by default the equal share ``max(1, num_prbs //
  num_users)``, :class:`~sim.mac.allocation.EqualShare`) and a grant of ``b``
  PRBs moves it by ``-10 log10(b / b_ref)`` dB.
- A placed user with ``radio.p0_dbm`` set: TS 38.213 open-loop power control
  (Sionna's ``open_loop_uplink_power_control``): ``P(b) = min(P_max,
  P0 + alpha PL + 10 log10(b))``, so the power per PRB stays at
  ``P0 + alpha PL`` until the user reaches ``radio.ut_max_power_dbm`` and
  spreads from there. Its ``snr_db`` again anchors the SNR at ``b_ref``.

The cell loop, the token-aware allocation and the PF metric all read this one rule.
"""

from __future__ import annotations

import math

import torch


def reference_share(scenario) -> int:
    """``b_ref``: the PRBs over which a user's power gives its ``snr_db`` (``radio.reference_prbs``, or the
    equal share ``max(1, num_prbs // num_users)``)."""
    return scenario.radio.reference_prbs or max(1, scenario.cell.num_prbs // len(scenario.users))


class UplinkPower:
    """SNR per resource element of every user for a grant of ``b`` PRBs.

    :param scenario: validated scenario (users' ``snr_db``, ``pathloss_db``, ``shadow_fading_db``; ``radio``)
    :param reference_prbs: ``b_ref``, the share the users' ``snr_db`` refer to (``None``: the scenario's,
        :func:`reference_prbs`)

    :input prbs: [..., num_users], int or float. PRBs granted (0: none).
    :output snr_re_db: [..., num_users], float64. SNR per RE, dB (``-inf`` where nothing is granted).

    >>> power = UplinkPower(scenario, reference_prbs=2)
    >>> power.shift_db(torch.tensor([[1, 2, 4]]))  # fixed-SNR users: +3, 0, -3 dB
    """

    def __init__(self, scenario, reference_prbs: int | None = None):
        self.reference_prbs = reference_prbs or reference_share(scenario)
        self.snr_db = torch.tensor([u.snr_db for u in scenario.users], dtype=torch.float64)
        radio = scenario.radio
        controlled = [radio.p0_dbm is not None and u.pathloss_db is not None for u in scenario.users]
        self.controlled = torch.tensor(controlled)
        coupling = [(u.pathloss_db or 0.0) + (u.shadow_fading_db or 0.0) for u in scenario.users]
        self.coupling_loss_db = torch.tensor(coupling, dtype=torch.float64)
        self.radio = radio

    def per_re_power_db(self, prbs: torch.Tensor) -> torch.Tensor:
        """[..., num_users] transmit power per RE relative to an arbitrary reference, dB (on ``prbs``' device)."""
        b = torch.as_tensor(prbs).to(torch.float64).clamp_min(1e-12)
        spread = -10 * torch.log10(b)  # full power over b PRBs
        if not bool(self.controlled.any()):
            return spread
        from sionna.phy.utils import db_to_lin, watt_to_dbm
        from sionna.sys import open_loop_uplink_power_control

        loss = db_to_lin(self.coupling_loss_db.to(b.device).expand_as(b), precision="double")
        tx_dbm = watt_to_dbm(
            open_loop_uplink_power_control(
                loss,
                (12 * b).round().to(torch.int64).clamp_min(1),
                alpha=self.radio.alpha,
                p0_dbm=self.radio.p0_dbm,
                ut_max_power_dbm=self.radio.ut_max_power_dbm,
                precision="double",
            ),
            precision="double",
        )
        return torch.where(self.controlled.to(b.device), tx_dbm - 10 * torch.log10(b), spread)

    def shift_db(self, prbs: torch.Tensor) -> torch.Tensor:
        """[..., num_users]: SNR per RE at ``prbs`` minus SNR per RE at the reference share, dB."""
        prbs = torch.as_tensor(prbs)
        reference = self.per_re_power_db(torch.full(prbs.shape, float(self.reference_prbs), device=prbs.device))
        return self.per_re_power_db(prbs) - reference

    def __call__(self, prbs: torch.Tensor) -> torch.Tensor:
        prbs = torch.as_tensor(prbs)
        snr = self.snr_db.to(prbs.device) + self.shift_db(prbs)
        return torch.where(prbs > 0, snr, -math.inf)
