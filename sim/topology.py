"""Where the users stand and what their path to the base station costs: the ``topology:`` and ``radio:``
sections, their checks, and the geometry resolved into the users.

One base station stands at ``[0, 0, topology.bs_height_m]``. A user is *placed*
by ``position_m: [x, y, z]``, by ``distance_m`` (horizontal, from the BS), or by
a drop of the ``topology:`` section (``cell``: uniform in a disc,
``hex``: uniform in the BS's hexagonal cell of a 3GPP layout, both drawn by
Sionna's :class:`~sionna.sys.HexGrid`). For every placed user Sionna's TR 38.901
scenario (UMi, UMa or RMa) gives the LoS state (Section 7.4.2), the path loss
(7.4.1, plus O2I loss for indoor users, 7.4.3) and log-normal shadow fading
(the scenario's sigma, Table 7.5-6); the ``radio:`` section turns that into an
SNR per resource element at the BS (:func:`geometry_snr_db`). Sionna's computations
themselves are in :mod:`sim.tr38901`.

Every draw comes from the scenario seed alone. What :func:`resolve_geometry`
fills in (positions, distances, indoor and LoS states, path loss, shadow
fading, SNR) is written back into the users, so the resolved scenario shows it
and validates to itself: a value already given is kept, never redrawn.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from core.schema import SNR_DB_RANGE, Strict
from sim.errors import ScenarioError
from sim.phy.channels import SYSTEM_LEVEL_MODELS, CellGeometry
from sim.runtime import sionna_rng_at, stream_seed
from sim.tr38901 import drop_users, received_snr_db, tr38901_defaults, tr38901_pathloss

if TYPE_CHECKING:
    from sim.schema import Scenario, UserConfig

DROPS = ("none", "cell", "hex")
DECIMALS = 2  # decimals of filled-in metres and dB: centimetres and 0.01 dB read well and change nothing


class TopologyConfig(Strict):
    """The cell's layout. Keys left out take TR 38.901 Table 7.2-1 values of ``scenario`` once a user is placed."""

    scenario: Literal[SYSTEM_LEVEL_MODELS] | None = Field(  # type: ignore[valid-type]
        None, description="TR 38.901 path loss model; default channel.model if that is umi/uma/rma, else umi"
    )
    drop: Literal[DROPS] = Field(  # type: ignore[valid-type]
        "none", description="none: users give position_m or distance_m; cell: disc; hex: hexagonal cell"
    )
    isd_m: float | None = Field(None, gt=0, description="inter-site distance (3GPP: 200 umi, 500 uma, 5000 rma)")
    cell_radius_m: float | None = Field(None, gt=0, description="radius of drop: cell; default isd_m / sqrt(3)")
    min_distance_m: float | None = Field(
        None, ge=0, description="least horizontal BS-user distance of a drop (3GPP: 10 umi, 35 uma and rma)"
    )
    bs_height_m: float | None = Field(None, gt=0, description="3GPP: 10 umi, 25 uma, 35 rma")
    ut_height_m: float = Field(1.5, gt=0, description="height of users placed by distance_m or a drop")
    indoor_probability: float | None = Field(
        None, ge=0, le=1, description="chance a user without `indoor` is indoor (3GPP: 0.8 umi/uma, 0.5 rma)"
    )
    o2i_model: Literal["low", "high"] = Field("low", description="outdoor-to-indoor loss (RMa has only low)")
    shadow_fading: bool = Field(True, description="log-normal shadow fading with the scenario's sigma")


class RadioConfig(Strict):
    """Uplink power and receiver noise that turn path loss into each user's SNR."""

    ut_max_power_dbm: float = Field(23.0, ge=-40, le=60, description="user transmit power (3GPP power class 3: 23 dBm)")
    bs_noise_figure_db: float = Field(5.0, ge=0, le=30, description="base station receiver noise figure")
    p0_dbm: float | None = Field(
        None, ge=-202, le=24, description="open-loop power control target per PRB (TS 38.213 7.1.1); unset: full power"
    )
    alpha: float = Field(1.0, ge=0, le=1, description="path loss compensation of power control")
    reference_prbs: int | None = Field(
        None,
        ge=1,
        le=275,
        description="PRBs a user's power spreads over to give its snr_db (its SNR per RE); "
        "default the equal share, num_prbs // num_users (at least 1)",
    )


# ---------------------------------------------------------------- checks and resolution


def is_placed(scenario: Scenario, user: UserConfig) -> bool:
    """Whether ``user`` has a place: its own position or distance, or the topology's drop."""
    return user.position_m is not None or user.distance_m is not None or scenario.topology.drop != "none"


def geometry_errors(s: Scenario) -> list[ScenarioError]:
    """What the geometry keys cannot check alone (``_cross_check`` of the scenario calls this)."""
    errors: list[ScenarioError] = []
    topo = s.topology
    if topo.scenario is not None and s.channel.model in SYSTEM_LEVEL_MODELS and topo.scenario != s.channel.model:
        errors.append(
            ScenarioError(
                "topology.scenario",
                topo.scenario,
                f"disagrees with channel.model {s.channel.model!r} (path loss and fading of one scenario)",
                s.channel.model,
            )
        )
    if s.channel.model in SYSTEM_LEVEL_MODELS:
        unplaced = [u.id for u in s.users if not is_placed(s, u)]
        if unplaced:
            errors.append(
                ScenarioError(
                    "channel.model",
                    s.channel.model,
                    f"needs every user's place; none for {', '.join(unplaced)}",
                    "users[i].position_m: [x, y, z], users[i].distance_m, or topology.drop: cell | hex",
                )
            )
    if topo.drop != "none":
        errors += _drop_errors(topo, topo.scenario or _default_scenario(s))
    for i, user in enumerate(s.users):
        if user.position_m is not None:
            horizontal = math.hypot(user.position_m[0], user.position_m[1])
            if horizontal == 0:
                errors.append(
                    ScenarioError(f"users[{i}].position_m", user.position_m, "stands on the base station (0 m away)")
                )
            elif user.position_m[2] <= 0:
                errors.append(
                    ScenarioError(f"users[{i}].position_m", user.position_m, "is underground", "a height z > 0 m")
                )
            elif horizontal > 1e5:
                errors.append(
                    ScenarioError(f"users[{i}].position_m", user.position_m, "is more than 100 km from the BS")
                )
            elif user.distance_m is not None and abs(horizontal - user.distance_m) > 10**-DECIMALS:
                errors.append(
                    ScenarioError(
                        f"users[{i}].distance_m",
                        user.distance_m,
                        f"disagrees with position_m, {horizontal:.{DECIMALS}f} m from the base station",
                    )
                )
        if not is_placed(s, user):
            for key in ("indoor", "los", "pathloss_db", "shadow_fading_db"):
                if getattr(user, key) is not None:
                    errors.append(
                        ScenarioError(
                            f"users[{i}].{key}",
                            getattr(user, key),
                            "belongs to a placed user; this one has no place",
                            "users[i].position_m, users[i].distance_m, or topology.drop: cell | hex",
                        )
                    )
    return errors


def _drop_errors(topo: TopologyConfig, scenario: str) -> list[ScenarioError]:
    defaults = tr38901_defaults(scenario)
    min_distance = topo.min_distance_m if topo.min_distance_m is not None else defaults["min_distance_m"]
    isd = topo.isd_m if topo.isd_m is not None else defaults["isd_m"]
    if topo.drop == "cell":
        radius = topo.cell_radius_m if topo.cell_radius_m is not None else isd / math.sqrt(3)
        if min_distance >= radius:
            return [
                ScenarioError("topology.min_distance_m", min_distance, f"is not below the cell radius ({radius:g} m)")
            ]
    elif min_distance > isd / 2:
        return [
            ScenarioError(
                "topology.min_distance_m", min_distance, f"is beyond half the inter-site distance ({isd:g} m)"
            )
        ]
    return []


def resolve_geometry(s: Scenario, prbs_per_user: int) -> None:
    """Fill in the topology's defaults and every placed user's geometry and (unless given) SNR, in place.

    Run after the top-level ``snr_db`` has been copied to the users: a user's
    ``snr_db`` that is set already wins over geometry.
    """
    placed = [i for i, u in enumerate(s.users) if is_placed(s, u)]
    if not placed:  # the topology stays as given: scenarios without geometry validate without torch and Sionna
        return
    import torch

    topo = s.topology
    topo.scenario = topo.scenario or _default_scenario(s)
    for key, value in tr38901_defaults(topo.scenario).items():
        if getattr(topo, key) is None:
            setattr(topo, key, value)
    if topo.cell_radius_m is None:
        topo.cell_radius_m = _round(topo.isd_m / math.sqrt(3))

    with sionna_rng_at(stream_seed(s.seed, "geometry")):  # the scenario seed alone; the run's streams untouched
        dropped = [i for i in placed if s.users[i].position_m is None and s.users[i].distance_m is None]
        if dropped:
            for i, position in zip(dropped, drop_users(len(dropped), topo).tolist()):
                s.users[i].position_m = [_round(c) for c in position]
        for i in placed:
            user = s.users[i]
            if user.position_m is None:  # on a ray of its own: users spread evenly around the BS by index
                azimuth = 2 * math.pi * i / len(s.users)
                d = user.distance_m
                user.position_m = [_round(d * math.cos(azimuth)), _round(d * math.sin(azimuth)), topo.ut_height_m]
            if user.distance_m is None:
                user.distance_m = _round(math.hypot(user.position_m[0], user.position_m[1]))

        users = [s.users[i] for i in placed]
        if any(None in (u.indoor, u.los, u.pathloss_db, u.shadow_fading_db) for u in users):
            path = tr38901_pathloss(
                topo.scenario,
                torch.tensor([u.position_m for u in users], dtype=torch.float64),
                [0.0, 0.0, topo.bs_height_m],
                s.cell.carrier_frequency_hz,
                indoor=[u.indoor for u in users],
                los=[u.los for u in users],
                indoor_probability=topo.indoor_probability,
                o2i_model=topo.o2i_model,
            )
            for k, user in enumerate(users):
                for key in ("indoor", "los"):
                    if getattr(user, key) is None:
                        setattr(user, key, bool(path[key][k]))
                if user.pathloss_db is None:
                    user.pathloss_db = _round(float(path["pathloss_db"][k]))
                if user.shadow_fading_db is None:
                    user.shadow_fading_db = _round(float(path["shadow_fading_db"][k])) if topo.shadow_fading else 0.0

    for i, (user, snr) in enumerate(zip(s.users, geometry_snr_db(s, prbs_per_user))):
        if user.snr_db is None and snr is not None:
            low, high = SNR_DB_RANGE
            if not low <= snr <= high:
                raise ScenarioError(
                    f"users[{i}]",
                    user.id,
                    f"is placed where its link budget gives an SNR of {snr:.1f} dB (path loss "
                    f"{user.pathloss_db:.1f} dB), outside {low:g}..{high:g} dB",
                    "a place nearer to or farther from the base station, or its snr_db",
                )
            user.snr_db = _round(snr)


def geometry_snr_db(scenario: Scenario, prbs_per_user: int) -> list[float | None]:
    """Each user's SNR per resource element at the BS from its path loss and shadow fading, dB.

    The user's transmit power (full power, or open-loop power control when
    ``radio.p0_dbm`` is set) is spread evenly over the ``prbs_per_user * 12``
    subcarriers of the reference share (``radio.reference_prbs``, by default the
    equal share); noise is -174 dBm/Hz plus the noise figure over one subcarrier.
    ``None`` for a user without geometry (no path loss resolved).
    """
    import torch

    users = [u for u in scenario.users if u.pathloss_db is not None]
    snr = iter(
        received_snr_db(
            torch.tensor([u.pathloss_db + (u.shadow_fading_db or 0.0) for u in users], dtype=torch.float64),
            scenario.radio,
            num_subcarriers=prbs_per_user * 12,
            subcarrier_spacing_hz=scenario.cell.subcarrier_spacing_hz,
        ).tolist()
        if users
        else []
    )
    return [next(snr) if u.pathloss_db is not None else None for u in scenario.users]


def cell_geometry(scenario: Scenario) -> CellGeometry | None:
    """Where the (resolved) users and the BS are, for the 3GPP fading models; ``None`` if a user has no place."""
    users = scenario.users
    if any(u.position_m is None or u.indoor is None or u.los is None for u in users):
        return None
    return CellGeometry(
        ut_positions_m=[list(u.position_m) for u in users],
        bs_position_m=[0.0, 0.0, scenario.topology.bs_height_m],
        indoor=[u.indoor for u in users],
        los=[u.los for u in users],
    )


def _round(value: float) -> float:
    return round(value, DECIMALS) + 0.0  # + 0.0: no "-0.0" in the YAML


def _default_scenario(s: Scenario) -> str:
    return s.channel.model if s.channel.model in SYSTEM_LEVEL_MODELS else "umi"
