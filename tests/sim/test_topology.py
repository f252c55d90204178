"""Geometry: TR 38.901 path loss against its formulas, SNR arithmetic, drops, and the folded UMi channel."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from sim.errors import ScenarioError
from sim.phy.channels import CellGeometry, channel_model
from sim.scenario import validate_scenario
from sim.scenario_yaml import resolved_yaml
from sim.tr38901 import tr38901_pathloss

NOISE_PER_SUBCARRIER_DBM = -174 + 10 * math.log10(30e3) + 5.0  # 30 kHz spacing, 5 dB noise figure


def placed(tiny, **topology) -> dict:
    """The tiny scenario with every fixed SNR removed and a ``topology:`` section."""
    for user in tiny["users"]:
        del user["snr_db"]
    tiny["topology"] = topology
    return tiny


def test_los_and_nlos_umi_pathloss_equal_tr38901_formulas():
    """Table 7.4.1-1 UMi at 3.5 GHz, BS 10 m, user 1.5 m at 50 m: d_3D = 50.72 m, below the 210 m breakpoint.

    LoS:  32.4 + 21 log10(50.72) + 20 log10(3.5) = 79.09 dB
    NLoS: max(LoS, 35.3 log10(50.72) + 22.4 + 21.3 log10(3.5)) = 94.18 dB
    """
    path = tr38901_pathloss(
        "umi",
        torch.tensor([[50.0, 0.0, 1.5], [0.0, 50.0, 1.5]]),
        [0.0, 0.0, 10.0],
        3.5e9,
        [False, False],
        [True, False],
    )
    assert path["pathloss_db"].tolist() == pytest.approx([79.09, 94.18], abs=0.01)
    assert path["los"].tolist() == [True, False] and path["indoor"].tolist() == [False, False]


def test_snr_is_power_minus_pathloss_minus_noise(tiny):
    raw = placed(tiny, scenario="umi", shadow_fading=False)
    raw["users"][0].update(distance_m=50, indoor=False, los=True)
    raw["users"][1].update(position_m=[0, 50, 1.5], indoor=False, los=False)
    raw["users"][2].update(distance_m=80)
    for user in raw["users"][3:]:
        user["snr_db"] = 0.0
    s = validate_scenario(raw)
    los, nlos = s.users[0], s.users[1]
    assert (los.pathloss_db, nlos.pathloss_db, los.shadow_fading_db) == (79.09, 94.18, 0.0)
    # 6 PRBs for 5 users: one PRB each, 23 dBm over its 12 subcarriers
    per_subcarrier_dbm = 23 - 10 * math.log10(12)
    assert los.snr_db == pytest.approx(per_subcarrier_dbm - 79.09 - NOISE_PER_SUBCARRIER_DBM, abs=0.01)  # 51.34
    assert nlos.snr_db == pytest.approx(per_subcarrier_dbm - 94.18 - NOISE_PER_SUBCARRIER_DBM, abs=0.01)
    assert s.users[2].distance_m == 80 and s.users[2].position_m[2] == 1.5

    # Full compensation (alpha 1): the BS hears p0 per PRB from both, whatever their path loss.
    raw["radio"] = {"p0_dbm": -90, "alpha": 1.0}
    s = validate_scenario(raw)
    expected = -90 - 10 * math.log10(12) - NOISE_PER_SUBCARRIER_DBM  # 23.44 dB
    assert s.users[0].snr_db == pytest.approx(expected, abs=0.01) == s.users[1].snr_db


def test_explicit_snr_overrides_geometry(tiny):
    raw = placed(tiny, drop="cell")
    raw["users"][1]["snr_db"] = 3.0
    s = validate_scenario(raw)
    assert s.users[1].snr_db == 3.0 and s.users[1].pathloss_db is not None  # placed and reported, SNR as given
    assert len({u.snr_db for u in s.users}) == 5
    raw["snr_db"] = 7.0
    assert [u.snr_db for u in validate_scenario(raw).users] == [7.0] * 5


@pytest.mark.parametrize("drop", ["hex", "cell"])
def test_drops_are_deterministic_per_seed_and_inside_the_cell(tiny, drop):
    raw = placed(tiny, drop=drop, cell_radius_m=60.0)
    s = validate_scenario(raw)
    topo = s.topology
    assert (topo.scenario, topo.isd_m, topo.bs_height_m, topo.min_distance_m) == ("umi", 200.0, 10.0, 10.0)
    xy = torch.tensor([u.position_m[:2] for u in s.users])
    assert all(u.position_m[2] == 1.5 for u in s.users)
    distance = xy.norm(dim=1)
    assert torch.allclose(distance, torch.tensor([u.distance_m for u in s.users]), atol=0.01)
    assert (distance >= topo.min_distance_m - 0.01).all()
    if drop == "cell":
        assert (distance <= 60.0 + 0.01).all()
    else:  # inside the hexagon of corners at 0, 60, ... degrees: within isd / 2 of the centre along each edge normal
        normals = torch.tensor([[math.cos(a), math.sin(a)] for a in (math.pi / 6 + k * math.pi / 3 for k in range(6))])
        assert ((xy @ normals.T) <= topo.isd_m / 2 + 0.01).all()
    assert validate_scenario(yaml.safe_load(yaml.safe_dump(raw))) == s  # same seed, same drop
    assert validate_scenario(yaml.safe_load(resolved_yaml(s))) == s  # the resolved form validates to itself
    raw["seed"] += 1
    assert [u.position_m for u in validate_scenario(raw).users] != [u.position_m for u in s.users]


def test_umi_channel_gives_each_folded_user_its_own_unit_power_channel():
    """Element b * 3 + u is user u: the LoS user (K-factor ~9 dB) fades far less than the indoor NLoS users."""
    from sionna.phy import config

    config.seed = 5
    geometry = CellGeometry(
        ut_positions_m=[[20.0, 0.0, 1.5], [0.0, 60.0, 1.5], [-60.0, 0.0, 1.5]],
        bs_position_m=[0.0, 0.0, 10.0],
        indoor=[False, True, True],
        los=[True, False, False],
    )
    model = channel_model("umi", carrier_frequency_hz=3.5e9, delay_spread_s=1e-7, speed_mps=1.0, geometry=geometry)
    num_samples = 200
    a, tau = model(num_samples * 3, 2, 1e6)
    assert (
        a.shape[:5] == (num_samples * 3, 1, 1, 1, 1) and a.shape[-1] == 2 and tau.shape[:3] == (num_samples * 3, 1, 1)
    )
    h = a[..., 0].sum(-1).reshape(num_samples, 3)  # frequency response at the carrier, per sample and user
    power = h.abs().square()
    assert power.mean(0).tolist() == pytest.approx([1.0] * 3, abs=0.3)  # path loss and shadowing are in the SNR
    assert a.abs().square().sum(-2)[..., 0].reshape(num_samples, 3).mean(0).tolist() == pytest.approx(
        [1.0] * 3, abs=0.1
    )
    assert power[:, 0].var() < 0.5 < power[:, 1].var() and power[:, 2].var() > 0.5  # Rician vs Rayleigh-like
    nlos1, nlos2 = h[:, 1], h[:, 2]
    correlation = (nlos1 * nlos2.conj()).mean().abs() / (
        nlos1.abs().square().mean() * nlos2.abs().square().mean()
    ).sqrt()
    assert correlation < 0.3  # independent channels, not one channel for all (Sionna's TDL with num_tx > 1)
    with pytest.raises(ValueError, match="multiple of the 3 users"):
        model(10, 1, 1e6)


BAD = [
    ("unknown drop", lambda s: s.update(topology={"drop": "ring"}), ["topology.drop", "'ring'", "hex"]),
    ("unknown key", lambda s: s.update(topology={"isd": 200}), ["topology.isd", "not a known key", "isd_m"]),
    ("short position", lambda s: s["users"][0].update(position_m=[1, 2]), ["users[0].position_m", "at least 3"]),
    (
        "no snr and no place",
        lambda s: s["users"][0].pop("snr_db"),
        ["users[0].snr_db", "is required unless the top-level snr_db is set", "position_m"],
    ),
    (
        "umi fading without places",
        lambda s: s["channel"].update(model="umi"),
        ["channel.model", "'umi'", "q1, cam1, mic1, q2, both2", "topology.drop"],
    ),
    (
        "position and distance disagree",
        lambda s: s["users"][0].update(position_m=[30, 40, 1.5], distance_m=60),
        ["users[0].distance_m", "60", "50.00 m"],
    ),
    (
        "scenarios disagree",
        lambda s: s.update(topology={"scenario": "uma", "drop": "hex"}) or s["channel"].update(model="umi"),
        ["topology.scenario", "'uma'", "umi"],
    ),
]


@pytest.mark.parametrize("what, edit, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_geometry_names_key_value_and_allowed(tiny, what, edit, expected):
    edit(tiny)
    with pytest.raises(ScenarioError) as info:
        validate_scenario(tiny)
    for text in expected:
        assert text in str(info.value), f"{what}: {text!r} not in {str(info.value)!r}"
