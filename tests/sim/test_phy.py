"""Science checks of the PHY: closed forms, agreement with Sionna's stock blocks, numerology."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sionna.phy import config
from sionna.phy.channel import OFDMChannel
from sionna.phy.mimo import StreamManagement
from sionna.phy.ofdm import LMMSEEqualizer, LSChannelEstimator, ResourceGrid, ResourceGridMapper

from sim.mac.allocation import EqualShare
from sim.phy.analog import AnalogLink
from sim.phy.channels import CHANNEL_MODELS, channel_model
from sim.phy.estimation import PilotLSEstimator, mmse_equalize
from sim.phy.numerology import num_prbs_for_bandwidth, pilot_symbol_indices, slot_duration_s


def grid(num_prbs=4, num_slots=1, pilots=(2, 11)):
    return ResourceGrid(
        num_ofdm_symbols=14 * num_slots,
        fft_size=12 * num_prbs,
        subcarrier_spacing=30e3,
        pilot_pattern="kronecker",
        pilot_ofdm_symbol_indices=pilot_symbol_indices(num_slots, list(pilots)),
    )


def model(name):
    return channel_model(name, carrier_frequency_hz=3.5e9, delay_spread_s=300e-9, speed_mps=30.0)


def unit_power_tokens(batch, num_values, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_values, generator=g) / np.sqrt(2)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_analog_mse_on_awgn_matches_mmse_closed_form(snr_db):
    """Linear MMSE of unit-power symbols in AWGN: MSE = 1 / (1 + SNR)."""
    config.seed = 1
    rg = grid()
    link = AnalogLink(rg, None, csi="perfect")
    x = unit_power_tokens(400, 2 * rg.num_data_symbols)
    y = link(x, torch.full((400,), snr_db))["tokens"]
    nmse = float((y - x).square().sum() / x.square().sum())
    expected = 1 / (1 + 10 ** (snr_db / 10))
    assert abs(nmse - expected) / expected < 0.05


def test_ls_estimator_equals_sionna_and_mmse_equals_scaled_lmmse():
    """Our fast LS + one-tap MMSE give Sionna's LSChannelEstimator(lin) + LMMSEEqualizer results."""
    config.seed = 2
    rg = grid(num_prbs=3, num_slots=2)
    x = (torch.randn(16, 1, 1, rg.num_data_symbols) + 1j * torch.randn(16, 1, 1, rg.num_data_symbols)) / np.sqrt(2)
    no = torch.linspace(0.01, 1.0, 16)
    y, _ = OFDMChannel(model("tdl-c"), rg, return_channel=True)(ResourceGridMapper(rg)(x.to(torch.complex64)), no)
    h_ref, err_ref = LSChannelEstimator(rg, interpolation_type="lin")(y, no)
    h_hat, err_var = PilotLSEstimator(rg)(y, no)
    # README: "equal to Sionna's to 1e-6": every estimate and error variance within 1e-6 (|h| is up to ~4 here)
    torch.testing.assert_close(h_hat, h_ref[:, 0, 0, 0, 0], rtol=0.0, atol=1e-6)
    torch.testing.assert_close(err_var, err_ref[:, 0, 0, 0, 0], rtol=0.0, atol=1e-6)

    x_unbiased, no_eff = LMMSEEqualizer(rg, StreamManagement(np.ones([1, 1], int), 1))(y, h_ref, err_ref, no)
    data = torch.nonzero(rg.build_type_grid()[0, 0].flatten() == 0).squeeze(-1)
    ours = mmse_equalize(y[:, 0, 0], h_hat, no[:, None, None], err_var).flatten(1)[:, data]
    torch.testing.assert_close(ours, (x_unbiased / (1 + no_eff))[:, 0, 0], rtol=1e-3, atol=1e-4)


def test_mmse_stays_bounded_in_deep_fades_where_unbiased_explodes():
    config.seed = 3
    rg = grid()
    link = AnalogLink(rg, model("rayleigh"), csi="perfect")
    x = unit_power_tokens(2000, 2 * rg.num_data_symbols)
    out = link(x, torch.full((2000,), 0.0))
    nmse = float((out["tokens"] - x).square().sum() / x.square().sum())
    assert torch.isfinite(out["tokens"]).all() and nmse < 1.0
    unbiased = out["symbols"] * (out["h"].abs().square() + 1.0) / out["h"].abs().square()  # zero-forcing
    zf_power = float(unbiased.abs().square().mean())
    assert zf_power > 5 * float(out["symbols"].abs().square().mean())  # E[1/|h|^2] diverges for Rayleigh


def test_every_link_in_the_batch_draws_its_own_channel():
    config.seed = 4
    rg = grid()
    for name in ("rayleigh", "tdl-a"):
        out = AnalogLink(rg, model(name), csi="perfect")(unit_power_tokens(8, 64), torch.full((8,), 30.0))
        first = out["h"][:, 0]
        assert (first[:, None] - first[None]).abs().add(torch.eye(8)).min() > 1e-6, name


@pytest.mark.parametrize("name", CHANNEL_MODELS)
def test_channels_have_unit_average_gain_and_ls_tracks_them(name):
    config.seed = 5
    rg = grid()
    link = AnalogLink(rg, model(name), csi="ls")
    x = unit_power_tokens(1000, 2 * rg.num_data_symbols)
    out = link(x, torch.full((1000,), 30.0))
    assert abs(float(out["h"].abs().square().mean()) - 1) < 0.1
    assert float((out["tokens"] - x).square().sum() / x.square().sum()) < 0.1


def test_gradients_reach_the_transmitter_through_the_channel():
    from models.transceivers import TokenTransmitter

    config.seed = 6
    rg = grid()
    tx = TokenTransmitter(in_dim=16, length=4, dim=8)
    link = AnalogLink(rg, model("tdl-a"), csi="ls")
    sent = tx(torch.randn(5, 8, 16))
    received = link(sent.flatten(1), torch.full((5,), 5.0))["tokens"]
    received.square().sum().backward()
    assert tx.project.weight.grad is not None and tx.project.weight.grad.abs().sum() > 0


def test_link_rejects_payloads_that_do_not_fit():
    rg = grid(num_prbs=1)
    with pytest.raises(ValueError, match="do not fit"):
        AnalogLink(rg, None, csi="perfect")(torch.zeros(2, 2 * rg.num_data_symbols + 2), torch.zeros(2))


def test_numerology():
    assert num_prbs_for_bandwidth(10e6, 30e3) == 24
    assert num_prbs_for_bandwidth(20e6, 15e3) == 106
    assert num_prbs_for_bandwidth(100e6, 30e3) == 273
    assert slot_duration_s(15e3) == pytest.approx(1e-3)
    assert slot_duration_s(30e3) == pytest.approx(0.5e-3)
    assert pilot_symbol_indices(2, [2, 11]) == [2, 11, 16, 25]


@pytest.mark.parametrize("num_prbs, num_users", [(24, 10), (52, 7), (6, 6), (273, 1)])
def test_equal_share_conserves_resources(num_prbs, num_users):
    share = EqualShare(num_prbs, num_users, num_pilot_symbols=2)
    assert share.prbs_per_user >= 1
    # every user the same share, as large as the carrier allows: fewer than num_users PRBs left idle
    assert share.prbs_per_user * num_users <= num_prbs < (share.prbs_per_user + 1) * num_users
    assert share.data_symbols_per_slot == share.prbs_per_user * 12 * 12
    assert share.slots_for(share.data_symbols_per_slot) == 1
    assert share.slots_for(share.data_symbols_per_slot + 1) == 2


def test_uplink_sends_pooled_tokens_for_a_token_factor_and_repeats_them_at_the_edge(tiny):
    """A user with token factor 2 puts half the values on air: each received token is the mean of its window."""
    from models.compression import sliding_window_pool
    from sim.scenario import validate_scenario
    from sim.uplink import Uplink

    tiny["tokens"] = {m: {"length": 4, "dim": 8} for m in ("text", "image", "audio")}
    scenario = validate_scenario(tiny | {"channel": {"model": "awgn", "csi": "perfect"}})
    full = Uplink(scenario, torch.device("cpu"))
    half = Uplink(scenario, torch.device("cpu"), token_factor=[1, 2, 1, 1, 2])
    assert half.values_per_user == [full.values_per_user[u] // (2 if u in (1, 4) else 1) for u in range(5)]
    tokens = {m: torch.randn(3 * 2, 4, 8) for m in ("text", "image", "audio")}  # 3 slots x 2 groups
    out = half.unpack(half.pack(tokens), tokens)
    pooled = sliding_window_pool(tokens["image"], 2).repeat_interleave(2, dim=1)
    torch.testing.assert_close(out["image"], pooled)  # cam1 (group a) and both2 (group b) send images at factor 2
    torch.testing.assert_close(out["text"], tokens["text"])  # q1 and q2 send all their tokens
    # the pooled payload goes on air at full power (1/2 per value), and the edge undoes the gain
    on_air, gain = half.normalise(half.pack(tokens))
    for u in (1, 4):
        torch.testing.assert_close(on_air[:, u, : half.values_per_user[u]].square().mean(-1), torch.full((3,), 0.5))
    assert torch.equal(gain[:, [0, 2, 3]], torch.ones(3, 3, 1))
    received = half(tokens, torch.full((3, 5), 60.0))  # the training channel, each user on its equal share
    torch.testing.assert_close(received["image"], pooled, atol=5e-3, rtol=0)
