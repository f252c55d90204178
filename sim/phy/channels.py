"""Registry of the fading channels between a user and the base station.

Every model is a Sionna block producing channel impulse responses for one
SISO link; :class:`sionna.phy.channel.OFDMChannel` turns them into frequency
responses on the resource grid and adds noise. Users are folded into the
batch dimension so each (sample, user) pair draws its own realisation: Sionna's
TDL with ``num_tx > 1`` would give every user the same channel.

``umi``, ``uma`` and ``rma`` are Sionna's TR 38.901 system-level models for the
users' places (:class:`CellGeometry`), as small-scale fading only: path loss and
shadow fading are in each user's SNR already (``sim/topology.py``), so these
channels keep unit mean power.
"""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM_LEVEL_MODELS = ("umi", "uma", "rma")
CHANNEL_MODELS = ("awgn", "rayleigh", "tdl-a", "tdl-b", "tdl-c", "tdl-d", "tdl-e", *SYSTEM_LEVEL_MODELS)


@dataclass(frozen=True)
class CellGeometry:
    """Where the users of one cell and its base station are, and the users' TR 38.901 states.

    :param ut_positions_m: [num_users, 3], metres
    :param bs_position_m: [3], metres
    :param indoor: [num_users], whether each user is indoor
    :param los: [num_users], LoS state of each link's outdoor part (TR 38.901 7.4.2)
    """

    ut_positions_m: list[list[float]]
    bs_position_m: list[float]
    indoor: list[bool]
    los: list[bool]

    @property
    def num_users(self) -> int:
        return len(self.ut_positions_m)

    @classmethod
    def stand_in(cls, scenario: str) -> CellGeometry:
        """One outdoor NLoS user 100 m from a BS of ``scenario``'s TR 38.901 height, for links without a scenario."""
        from sionna.phy.channel.utils import set_3gpp_scenario_parameters

        bs_height_m = float(set_3gpp_scenario_parameters(scenario, device="cpu")[2])
        return cls(
            ut_positions_m=[[100.0, 0.0, 1.5]], bs_position_m=[0.0, 0.0, bs_height_m], indoor=[False], los=[False]
        )


def channel_model(
    name: str,
    *,
    carrier_frequency_hz: float,
    delay_spread_s: float,
    speed_mps: float,
    precision=None,
    device=None,
    geometry: CellGeometry | None = None,
):
    """The Sionna channel model called ``name``; ``None`` for AWGN (h = 1).

    :param name: one of :data:`CHANNEL_MODELS`
    :param geometry: the users' places, for ``umi``, ``uma`` and ``rma``
        (:data:`SYSTEM_LEVEL_MODELS`; without it, :meth:`CellGeometry.stand_in`),
        ignored by the others
    :output: a :class:`sionna.phy.channel.ChannelModel` with one transmit and
        one receive antenna, or ``None``
    """
    from sionna.phy.channel import RayleighBlockFading
    from sionna.phy.channel.tr38901 import TDL

    if name == "awgn":
        return None
    if name == "rayleigh":
        return RayleighBlockFading(num_rx=1, num_rx_ant=1, num_tx=1, num_tx_ant=1, precision=precision, device=device)
    if name.startswith("tdl-"):
        return TDL(
            name[-1].upper(),
            delay_spread=delay_spread_s,
            carrier_frequency=carrier_frequency_hz,
            min_speed=speed_mps,
            max_speed=speed_mps,
            precision=precision,
            device=device,
        )
    if name in SYSTEM_LEVEL_MODELS:
        geometry = geometry or CellGeometry.stand_in(name)
        return FoldedUsersChannel(name, geometry, carrier_frequency_hz, speed_mps, precision=precision, device=device)
    raise KeyError(f"channel.model {name!r} is not one of {', '.join(CHANNEL_MODELS)}")


class FoldedUsersChannel:
    r"""Sionna's UMi, UMa or RMa model for all users of a cell, unfolded into the SISO batch layout.

    It has the interface of :class:`sionna.phy.channel.ChannelModel`, which
    :class:`~sionna.phy.channel.OFDMChannel` calls; it does not subclass it so
    that this registry (read by the scenario schema) imports without Sionna.

    The Sionna model draws one uplink per user (``num_ut = num_users``, one BS,
    one antenna each) for ``num_samples = batch_size / num_users`` topologies;
    its output is permuted so element ``b * num_users + u`` is user ``u`` of
    sample ``b``, as :class:`~sim.phy.analog.AnalogLink` folds them. Every user
    has its own clusters, delays and angles, so users' channels differ (unlike
    TDL with ``num_tx > 1``). Path loss and shadow fading are off: unit mean
    power. Large-scale parameters (delay and angle spreads, K-factor) are
    redrawn on every call, so the link averages over the scenario's
    distribution of them for each user's distance, LoS and indoor state.

    :param name: ``"umi"``, ``"uma"`` or ``"rma"``
    :param geometry: the users' places and states
    :param carrier_frequency_hz: carrier frequency
    :param speed_mps: user speed, in a random horizontal direction (Doppler)

    :input batch_size: int, ``num_samples * num_users``
    :input num_time_steps: int
    :input sampling_frequency: float, Hz

    :output a: [batch_size, 1, 1, 1, 1, num_paths, num_time_steps], complex
    :output tau: [batch_size, 1, 1, num_paths], float, seconds

    >>> model = FoldedUsersChannel("umi", geometry, 3.5e9, speed_mps=1.0)
    >>> a, tau = model(64 * geometry.num_users, 14, 1 / 35.7e-6)
    """

    def __init__(
        self,
        name: str,
        geometry: CellGeometry,
        carrier_frequency_hz: float,
        speed_mps: float = 0.0,
        precision=None,
        device=None,
    ):
        from sionna.phy.channel.tr38901 import RMa, UMa, UMi

        self.geometry = geometry
        self.speed_mps = speed_mps
        models = {"umi": UMi, "uma": UMa, "rma": RMa}
        # small-scale fading only, with large-scale parameters drawn on every call (see above)
        options = dict(enable_pathloss=False, enable_shadow_fading=False, always_generate_lsp=True)
        self._model = single_antenna_uplink(models, name, carrier_frequency_hz, "low", precision, device, **options)
        self.precision, self.device, self.dtype = self._model.precision, self._model.device, self._model.dtype
        self._num_samples = None

    def _set_topology(self, num_samples: int) -> None:
        import torch
        from sionna.phy.channel.utils import random_ut_properties

        g, num_users = self.geometry, self.geometry.num_users
        shape = (num_samples, num_users)
        if self._num_samples is not None:
            self._model.reset_topology()  # Sionna freezes the batch size of a topology
        _, velocities, _ = random_ut_properties(
            num_samples, num_users, 0.0, self.speed_mps, self.speed_mps, precision=self.precision, device=self.device
        )
        self._model.set_topology(
            ut_loc=torch.tensor(g.ut_positions_m, dtype=self.dtype, device=self.device).expand(*shape, 3),
            bs_loc=torch.tensor(g.bs_position_m, dtype=self.dtype, device=self.device).expand(num_samples, 1, 3),
            # Upright devices: Sionna's random UT tilts would cost ~3 dB of polarisation mismatch on average,
            # a loss the SNR does not budget for.
            ut_orientations=torch.zeros(*shape, 3, dtype=self.dtype, device=self.device),
            bs_orientations=torch.zeros(num_samples, 1, 3, dtype=self.dtype, device=self.device),
            ut_velocities=velocities,
            in_state=torch.tensor(g.indoor, device=self.device).expand(*shape),
            los=torch.tensor(g.los, device=self.device)[None],  # the states the path loss was drawn with
        )
        self._num_samples = num_samples

    def __call__(self, batch_size: int, num_time_steps: int, sampling_frequency: float):
        num_users = self.geometry.num_users
        num_samples, rest = divmod(batch_size, num_users)
        if rest:
            raise ValueError(f"batch_size {batch_size} is not a multiple of the {num_users} users folded into it")
        if num_samples != self._num_samples:
            self._set_topology(num_samples)
        # a: [num_samples, num_rx=1, 1, num_tx=num_users, 1, num_paths, num_time_steps]; tau: [.., 1, num_users, ..]
        a, tau = self._model(num_time_steps, sampling_frequency)
        a = a.permute(0, 3, 1, 2, 4, 5, 6).reshape(batch_size, 1, 1, 1, 1, *a.shape[-2:])
        tau = tau.permute(0, 2, 1, 3).reshape(batch_size, 1, 1, tau.shape[-1])
        return a, tau


def single_antenna_uplink(
    models: dict, name: str, carrier_frequency_hz: float, o2i_model: str = "low", precision=None, device=None, **options
):
    """Sionna's TR 38.901 ``models[name]`` for single-antenna uplinks to one BS (:func:`single_antenna_array` at
    both ends), built before its topology is set.

    :param models: ``{"umi": ..., "uma": ..., "rma": ...}``: Sionna's classes of one kind (the channel models
        ``UMi``, ``UMa``, ``RMa`` or the scenarios ``UMiScenario``, ``UMaScenario``, ``RMaScenario``)
    :param name: ``"umi"``, ``"uma"`` or ``"rma"``
    :param o2i_model: outdoor-to-indoor loss, ``"low"`` or ``"high"`` (RMa has only the low-loss model)
    :param options: further keyword arguments of the class

    >>> model = single_antenna_uplink({"umi": UMi, "uma": UMa, "rma": RMa}, "umi", 3.5e9)
    """
    arrays = {end: single_antenna_array(carrier_frequency_hz, precision, device) for end in ("ut_array", "bs_array")}
    common = dict(direction="uplink", precision=precision, device=device, **arrays, **options)
    if name == "rma":  # RMa has only the low-loss O2I model
        return models[name](carrier_frequency_hz, **common)
    return models[name](carrier_frequency_hz, o2i_model, **common)


def single_antenna_array(carrier_frequency_hz: float, precision=None, device=None):
    """One vertically polarised omnidirectional element: the SISO link's antenna at either end (0 dBi)."""
    from sionna.phy.channel.tr38901 import PanelArray

    return PanelArray(
        num_rows_per_panel=1,
        num_cols_per_panel=1,
        polarization="single",
        polarization_type="V",
        antenna_pattern="omni",
        carrier_frequency=carrier_frequency_hz,
        precision=precision,
        device=device,
    )
