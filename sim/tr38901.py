"""TR 38.901 by Sionna: a layout's defaults, users dropped in a cell, path loss and shadow fading, and the SNR
per resource element a link budget gives.

Plain functions of positions, states and the ``topology:`` and ``radio:`` sections, each a call into Sionna
(``set_3gpp_scenario_parameters``, :class:`~sionna.sys.HexGrid`, the ``UMiScenario``/``UMaScenario``/
``RMaScenario`` large-scale parameters, ``open_loop_uplink_power_control`` and ``geometry_sinr_db``), in double
precision on the CPU. Draws come from Sionna's generator; :func:`sim.topology.resolve_geometry` seeds it and
writes the results into the scenario's users.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sim.phy.channels import single_antenna_uplink

if TYPE_CHECKING:
    import torch

    from sim.topology import RadioConfig, TopologyConfig


def tr38901_defaults(scenario: str) -> dict[str, float]:
    """TR 38.901 layout values of ``scenario`` as Sionna tabulates them (``set_3gpp_scenario_parameters``)."""
    from sionna.phy.channel.utils import set_3gpp_scenario_parameters

    min_distance, isd, bs_height, _, _, indoor_probability, _, _ = set_3gpp_scenario_parameters(
        scenario, precision="double", device="cpu"
    )
    return {
        "isd_m": float(isd),
        "min_distance_m": float(min_distance),
        "bs_height_m": float(bs_height),
        "indoor_probability": float(indoor_probability),
    }


def drop_users(num_users: int, topology: TopologyConfig) -> torch.Tensor:
    """Drop users uniformly in the one BS's cell with Sionna's :class:`~sionna.sys.HexGrid`.

    ``drop: hex`` is the BS's hexagon in a layout of inter-site distance
    ``isd_m``; ``drop: cell`` the disc of radius ``cell_radius_m``: a hexagon
    whose inscribed circle is that disc, with the distance capped at the radius.
    Users take the three sectors in turn. Draws from Sionna's generator.

    :output: [num_users, 3], float64, positions in metres
    """
    from sionna.sys import HexGrid

    if topology.drop == "cell":
        isd, max_horizontal = 2 * topology.cell_radius_m, topology.cell_radius_m
    else:
        isd, max_horizontal = topology.isd_m, topology.isd_m / math.sqrt(3)
    grid = HexGrid(num_rings=1, isd=isd, cell_height=topology.bs_height_m, precision="double", device="cpu")
    height = topology.bs_height_m - topology.ut_height_m  # HexGrid takes 3D distances
    ut_loc, _, _ = grid(
        1,
        math.ceil(num_users / 3),
        min_bs_ut_dist=math.hypot(topology.min_distance_m, height),
        max_bs_ut_dist=math.hypot(max_horizontal, height),
        min_ut_height=topology.ut_height_m,
        max_ut_height=topology.ut_height_m,
    )
    # [batch, num_cells, 3 sectors, per sector, 3]: cell 0 is ours, at the origin
    return ut_loc[0, 0].transpose(0, 1).reshape(-1, 3)[:num_users]


def tr38901_pathloss(
    scenario: str,
    ut_positions_m: torch.Tensor,
    bs_position_m: list[float],
    carrier_frequency_hz: float,
    indoor: list[bool | None] | None = None,
    los: list[bool | None] | None = None,
    indoor_probability: float = 0.0,
    o2i_model: str = "low",
) -> dict[str, torch.Tensor]:
    """TR 38.901 path loss and shadow fading of single-antenna uplinks to one BS, from Sionna's scenario classes.

    States left ``None`` are drawn: indoor with ``indoor_probability``, LoS
    with the scenario's LoS probability (7.4.2). Draws from Sionna's generator.

    :param ut_positions_m: [num_users, 3], float
    :output: dict of [num_users] tensors: ``"pathloss_db"`` (basic path loss
        plus O2I loss, dB), ``"shadow_fading_db"`` (log-normal, a loss in dB:
        add it to the path loss), ``"indoor"`` and ``"los"`` (bool; LoS of the
        link's outdoor part, which sets the path loss of indoor users too).
    """
    import torch
    from sionna.phy.channel.tr38901 import LSPGenerator, RMaScenario, UMaScenario, UMiScenario
    from sionna.phy.utils import sample_bernoulli

    num_users = ut_positions_m.shape[0]
    indoor = indoor or [None] * num_users
    los = los or [None] * num_users
    scenarios = {"umi": UMiScenario, "uma": UMaScenario, "rma": RMaScenario}
    model = single_antenna_uplink(scenarios, scenario, carrier_frequency_hz, o2i_model, "double", "cpu")

    drawn = sample_bernoulli([num_users], indoor_probability, precision="double", device="cpu")
    in_state = torch.tensor([d if g is None else g for d, g in zip(drawn.tolist(), indoor)], dtype=torch.bool)[None]
    topology = dict(
        ut_loc=ut_positions_m.to(torch.float64)[None],
        bs_loc=torch.tensor(bs_position_m, dtype=torch.float64)[None, None],
        ut_orientations=torch.zeros(1, num_users, 3, dtype=torch.float64),
        bs_orientations=torch.zeros(1, 1, 3, dtype=torch.float64),
        ut_velocities=torch.zeros(1, num_users, 3, dtype=torch.float64),
        in_state=in_state,
    )
    if scenario == "rma":  # else Sionna puts every outdoor RMa user in a car, with ~9 dB penetration loss
        topology["in_car"] = torch.zeros(1, num_users, dtype=torch.bool)
    model.set_topology(**topology, los="random")  # TR 38.901 7.4.2 draws, then the states given override them
    drawn_los = model.outdoor_los[0, 0].tolist()
    model.set_topology(
        los=torch.tensor([d if g is None else g for d, g in zip(drawn_los, los)], dtype=torch.bool)[None]
    )
    sampler = LSPGenerator(model)
    sampler.topology_updated_callback()
    lsp = sampler()
    return {
        "pathloss_db": lsp.pathloss[0, 0],
        "shadow_fading_db": -10 * torch.log10(lsp.sf[0, 0]),  # Sionna's sf is a power gain
        "indoor": in_state[0],
        "los": model.outdoor_los[0, 0],
    }


def received_snr_db(
    coupling_loss_db: torch.Tensor, radio: RadioConfig, num_subcarriers: int, subcarrier_spacing_hz: float
) -> torch.Tensor:
    """SNR per resource element at the BS of users with ``coupling_loss_db`` (path loss + shadow fading).

    Transmit power by Sionna's ``open_loop_uplink_power_control`` (or full
    power), the -174 dBm/Hz + noise figure arithmetic by Sionna's
    ``geometry_sinr_db`` with one cell, so without interference.

    :input coupling_loss_db: [num_users], float
    :output: [num_users], float, dB
    """
    import torch
    from sionna.phy.utils import db_to_lin, watt_to_dbm
    from sionna.sys import geometry_sinr_db, open_loop_uplink_power_control

    if radio.p0_dbm is None:
        tx_power_dbm = torch.full_like(coupling_loss_db, radio.ut_max_power_dbm)
    else:
        tx_power_dbm = watt_to_dbm(
            open_loop_uplink_power_control(
                db_to_lin(coupling_loss_db, precision="double"),
                torch.full(coupling_loss_db.shape, num_subcarriers),
                alpha=radio.alpha,
                p0_dbm=radio.p0_dbm,
                ut_max_power_dbm=radio.ut_max_power_dbm,
                precision="double",
            ),
            precision="double",
        )
    # Sionna spreads power over a scheduled grid (spread_across_subcarriers); every user here holds the same
    # whole PRBs in every symbol, so that is an equal split, and one division says it.
    per_subcarrier_dbm = tx_power_dbm - 10 * math.log10(num_subcarriers)
    return geometry_sinr_db(
        coupling_loss_db[:, None],
        per_subcarrier_dbm[:, None],
        bandwidth_hz=subcarrier_spacing_hz,
        noise_figure_db=radio.bs_noise_figure_db,
        precision="double",
        device="cpu",
    )
