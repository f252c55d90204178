"""Science checks of the digital link: QAM closed forms, Sionna's reference chain, Shannon, HARQ, quantiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import erfc
from sionna.phy import config
from sionna.phy.channel import AWGN
from sionna.phy.mapping import Demapper, Mapper
from sionna.phy.nr import TBDecoder, TBEncoder

from sim.phy.channels import channel_model
from sim.phy.digital import (
    DigitalLink,
    QamDemapper,
    TransportBlockEncoder,
    TransportBlockLink,
    transport_block_size,
)
from sim.phy.quantization import UniformQuantizer, gaussian_uniform_step

PILOTS = [2, 11]
QAM_MCS = {2: 5, 4: 10, 6: 20}  # bits per symbol -> an MCS of table 1 with that modulation


def gray_qam_ber(bits_per_symbol: int, es_n0_db: float) -> float:
    """Exact bit error rate of Gray-coded square M-QAM on AWGN (Cho and Yoon, IEEE Trans. Commun. 2002)."""
    m = 2**bits_per_symbol
    root = int(math.isqrt(m))
    gamma_b = 10 ** (es_n0_db / 10) / bits_per_symbol
    total = 0.0
    for k in range(1, int(math.log2(root)) + 1):
        pk = 0.0
        for i in range(int((1 - 2**-k) * root)):
            w = math.floor(i * 2 ** (k - 1) / root)
            pk += (
                (-1) ** w
                * (2 ** (k - 1) - math.floor(i * 2 ** (k - 1) / root + 0.5))
                * erfc((2 * i + 1) * math.sqrt(3 * bits_per_symbol * gamma_b / (2 * (m - 1))))
            )
        total += pk / root
    return total / math.log2(root)


def tb_link(mcs, num_prbs=2, channel=None, csi="perfect", **kwargs):
    return TransportBlockLink(
        mcs,
        num_prbs=num_prbs,
        subcarrier_spacing_hz=30e3,
        pilot_ofdm_symbol_indices=PILOTS,
        channel_model=channel,
        csi=csi,
        **kwargs,
    )


@pytest.mark.parametrize("bits_per_symbol", [2, 4, 6])
def test_uncoded_qam_ber_on_awgn_matches_the_closed_form(bits_per_symbol):
    """Mapper -> OFDM grid -> AWGN -> equaliser -> demapper, hard decisions: BER within 10 % where >= 1e-4."""
    config.seed = 4
    link = tb_link(QAM_MCS[bits_per_symbol], num_prbs=4)
    g = torch.Generator().manual_seed(0)
    for snr_db, target in _snrs_spanning(bits_per_symbol):
        num_bits = int(1500 / target) + 1  # about 1500 errors per point: 2.6 % standard error
        slots = math.ceil(num_bits / link.num_coded_bits)
        bits = torch.randint(0, 2, (slots, 1, link.num_coded_bits), generator=g).float()
        llr = link.modem(bits, torch.full((slots,), snr_db))["llr"]
        ber = float(((llr > 0).float() != bits).float().mean())
        expected = gray_qam_ber(bits_per_symbol, snr_db)
        assert expected >= 1e-4
        assert abs(ber - expected) / expected < 0.10, (bits_per_symbol, snr_db, ber, expected)


def _snrs_spanning(bits_per_symbol):
    """SNRs where the closed form gives BER about 1e-1, 1e-2, 1e-3 and 3e-4."""
    grid = np.arange(-5, 30, 0.05)
    ber = np.array([gray_qam_ber(bits_per_symbol, s) for s in grid])
    return [(float(grid[np.argmin(np.abs(np.log(ber / t)))]), t) for t in (1e-1, 1e-2, 1e-3, 3e-4)]


def _snr_at_bler(snrs, blers, target=0.1):
    """SNR where the BLER curve crosses ``target`` (log-linear interpolation)."""
    blers = np.clip(np.asarray(blers), 1e-4, 1)
    for i in range(len(snrs) - 1):
        if blers[i] >= target > blers[i + 1]:
            f = (np.log(blers[i]) - np.log(target)) / (np.log(blers[i]) - np.log(blers[i + 1]))
            return snrs[i] + f * (snrs[i + 1] - snrs[i])
    raise AssertionError(f"BLER {blers} never crosses {target} over {snrs}")


@pytest.mark.parametrize("bits_per_symbol", [2, 4, 6, 8])
def test_per_dimension_demapper_gives_sionnas_app_llrs(bits_per_symbol):
    generator = torch.Generator().manual_seed(bits_per_symbol)
    bits = torch.randint(0, 2, (8, 300 * bits_per_symbol), generator=generator).float()
    no = torch.rand(8, 300, generator=generator) * 0.3 + 1e-3
    noise = torch.complex(torch.randn(8, 300, generator=generator), torch.randn(8, 300, generator=generator))
    y = Mapper("qam", bits_per_symbol)(bits) + (no / 2).sqrt() * noise
    reference = Demapper("app", "qam", bits_per_symbol)(y, no)
    torch.testing.assert_close(QamDemapper(bits_per_symbol)(y, no), reference, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mcs, num_prbs", [(5, 24), (16, 2), (16, 24), (27, 24)])
def test_transport_block_encoder_gives_sionnas_bits(mcs, num_prbs):
    tb = transport_block_size(mcs, num_prbs, len(PILOTS))
    args = (tb["tb_size"], tb["num_coded_bits"], tb["code_rate"], tb["bits_per_symbol"])
    bits = torch.randint(0, 2, (4, 2, tb["tb_size"]), generator=torch.Generator().manual_seed(mcs)).float()
    encoder = TransportBlockEncoder(*args)
    assert torch.equal(encoder(bits), TBEncoder(*args)(bits))
    with pytest.raises(ValueError, match="rv must be None"):  # other redundancy versions send unsent parity
        encoder.ldpc_encoder(torch.zeros(1, encoder.ldpc_encoder.k), rv=[1])


@pytest.mark.parametrize("mcs", [5, 14])
def test_coded_bler_waterfall_within_1db_of_sionnas_reference_chain(mcs):
    """Our TB link (OFDM grid, fast decoder) against TBEncoder -> Mapper -> AWGN -> Demapper -> TBDecoder."""
    link = tb_link(mcs)
    reference_decoder = TBDecoder(link.encoder, num_bp_iter=20, cn_update="boxplus-phi")
    mapper, demapper, awgn = Mapper("qam", link.bits_per_symbol), Demapper("app", "qam", link.bits_per_symbol), AWGN()
    g = torch.Generator().manual_seed(1)
    num_tbs = 200
    start = {5: -2.0, 14: 5.5}[mcs]  # half a dB steps across both waterfalls
    snrs = [start + 0.5 * k for k in range(7)]
    ours, reference = [], []
    for snr in snrs:
        bits = torch.randint(0, 2, (num_tbs, 1, link.tb_size), generator=g).float()
        config.seed = 7
        _, ok = link.decode(link(bits, torch.full((num_tbs,), snr))["llr"])
        ours.append(1 - float(ok.float().mean()))
        no = torch.full((num_tbs, 1, 1), 10 ** (-snr / 10))
        y = awgn(mapper(link.encoder(bits)), no)
        _, ok_ref = reference_decoder(demapper(y, no))
        reference.append(1 - float(ok_ref.float().mean()))
    gap = _snr_at_bler(snrs, ours) - _snr_at_bler(snrs, reference)
    assert abs(gap) < 1.0, (snrs, ours, reference)


def awgn_link(mcs, **kwargs):
    args = dict(
        values_per_user=[256, 64],
        num_prbs=2,
        subcarrier_spacing_hz=30e3,
        pilot_ofdm_symbol_indices=PILOTS,
        channel_model=None,
        csi="perfect",
        bits_per_value=8,
        mcs=mcs,
    )
    return DigitalLink(**(args | kwargs))


def payload(batch, num_values=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, num_values, generator=g) / math.sqrt(2)


def test_clean_link_delivers_the_quantised_payload_and_counts_its_blocks():
    config.seed = 0
    link = awgn_link(16, max_retx=0)
    values = payload(4)
    out = link(values, torch.full((4, 2), 30.0))
    expected = link.quantizer(values)
    expected[:, 1, 64:] = 0  # the second user sends 64 values; the rest is padding
    torch.testing.assert_close(out["values"] * (torch.arange(256) < torch.tensor([256, 64])[:, None]), expected)
    tb = transport_block_size(16, 2, len(PILOTS))
    tbs = torch.tensor([math.ceil(256 * 8 / tb["tb_size"]), math.ceil(64 * 8 / tb["tb_size"])])
    assert torch.equal(out["tbs"][0], tbs) and torch.equal(out["attempts"][0], tbs)
    assert torch.equal(out["airtime_slots"][0], tbs)  # one TB per slot, none again
    assert torch.equal(out["coded_bits"][0], tbs * tb["num_coded_bits"])
    assert int(out["erased_values"].sum()) == 0 and int(out["failed_tbs"].sum()) == 0


def test_a_short_payload_in_small_blocks_beside_a_long_one_in_large_blocks():
    """One TB each: the far user's small TB holds less than the near user's payload, and that is fine."""
    config.seed = 0
    link = awgn_link("auto", num_prbs=8, max_retx=3)
    values = payload(4)
    out = link(values, torch.tensor([[30.0, 5.0]]).expand(4, -1))
    assert torch.equal(out["tbs"], torch.ones(4, 2, dtype=torch.long))  # both payloads fit one TB
    assert out["mcs"][0, 0] > out["mcs"][0, 1]
    delivered = out["failed_tbs"] == 0
    expected = link.quantizer(values)
    for u, n in ((0, 256), (1, 64)):
        torch.testing.assert_close(out["values"][delivered[:, u], u, :n], expected[delivered[:, u], u, :n])


@pytest.mark.parametrize("fidelity", ["link", "abstraction"])
def test_failed_blocks_are_retransmitted_then_erased(fidelity):
    """Far below MCS 27's waterfall every TB fails: 1 + max_retx attempts each, every value erased."""
    config.seed = 0
    link = awgn_link(27, max_retx=2, round_trip_slots=4, fidelity=fidelity)
    out = link(payload(3), torch.full((3, 2), 0.0))
    assert int(out["failed_tbs"].sum()) == int(out["tbs"].sum())
    assert torch.equal(out["attempts"], 3 * out["tbs"])
    # the last TB's third attempt waits two round trips after its first slot
    assert torch.equal(out["airtime_slots"], torch.maximum(3 * out["tbs"], out["tbs"] + 2 * 4))
    assert float(out["values"].abs().sum()) == 0.0
    assert torch.equal(out["erased_values"], torch.tensor([256, 64]).expand(3, -1))


def test_harq_lowers_the_residual_block_error_rate():
    """At the waterfall, Chase combining of up to 3 retransmissions leaves far fewer TBs lost."""
    config.seed = 1
    snr = torch.full((40, 2), 7.0)
    once = awgn_link(14, max_retx=0)(payload(40), snr)
    config.seed = 1
    harq = awgn_link(14, max_retx=3)(payload(40), snr)
    first = float(once["failed_tbs"].sum() / once["tbs"].sum())
    residual = float(harq["failed_tbs"].sum() / harq["tbs"].sum())
    assert first > 0.05 and residual < first / 4, (first, residual)


@pytest.mark.parametrize("fidelity", ["link", "abstraction"])
@pytest.mark.parametrize("channel, csi", [("awgn", "perfect"), ("rayleigh", "ls"), ("tdl-a", "ls")])
def test_goodput_never_exceeds_the_shannon_capacity_of_the_granted_resource_elements(channel, csi, fidelity):
    """Information bits delivered per data resource element <= log2(1 + SNR), at every SNR, MCS fixed or adapted.

    With LS estimates at low SNR the receiver's own SINR estimate is optimistic; the abstraction must not
    be (it judges the symbols against the channel's realisation).
    """
    config.seed = 2
    model = channel_model(channel, carrier_frequency_hz=3.5e9, delay_spread_s=100e-9, speed_mps=1.0)
    for fixed in ("auto", 27):
        link = awgn_link(fixed, channel_model=model, csi=csi, max_retx=3, fidelity=fidelity)
        for snr in (-10.0, -5.0, 0.0, 10.0, 25.0):
            out = link(payload(16), torch.full((16, 2), snr))
            goodput = out["information_bits"].sum(0).double() / out["channel_uses"].sum(0)
            assert (goodput <= math.log2(1 + 10 ** (snr / 10))).all(), (fixed, snr, goodput)


def test_link_adaptation_delivers_most_blocks_where_a_fixed_mcs_falls_off_its_cliff():
    config.seed = 3
    snr = torch.full((16, 2), 2.0)
    adaptive = awgn_link("auto", max_retx=0)(payload(16), snr)
    fixed = awgn_link(20, max_retx=0)(payload(16), snr)
    assert float(fixed["failed_tbs"].sum() / fixed["tbs"].sum()) > 0.9
    assert float(adaptive["failed_tbs"].sum() / adaptive["tbs"].sum()) < 0.3


def test_training_proxy_quantises_erases_by_the_abstractions_bler_and_passes_gradients():
    link = awgn_link(16, max_retx=0)
    values = payload(64).requires_grad_()
    g = torch.Generator().manual_seed(0)
    high = link.proxy(values, torch.full((64, 2), 30.0), g)
    in_payload = torch.arange(256) < torch.tensor([256, 64])[:, None]
    torch.testing.assert_close(high * in_payload, link.quantizer(values) * in_payload)
    low = link.proxy(values, torch.full((64, 2), -10.0), g)
    assert float((low[:, 0] == 0).float().mean()) > 0.99  # MCS 16 at -10 dB: every TB lost
    high.sum().backward()  # straight through the rounding: d(sum)/d(value) = 1 wherever nothing is erased
    torch.testing.assert_close(values.grad * in_payload, in_payload.float().expand_as(values))


@pytest.mark.parametrize("bits, mse", [(1, 0.3634), (2, 0.1175), (3, 0.03744), (4, 0.01154)])
def test_quantiser_mse_matches_max_1960_for_gaussian_values(bits, mse):
    """Optimal uniform quantiser of a unit Gaussian: Max's (1960) table of distortions."""
    q = UniformQuantizer(bits, std=1.0)
    x = torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    assert abs(float((q(x) - x).square().mean()) - mse) / mse < 0.02
    assert gaussian_uniform_step(bits) == pytest.approx({1: 1.596, 2: 0.9957, 3: 0.5860, 4: 0.3352}[bits], rel=2e-3)
    torch.testing.assert_close(q.from_bits(q.to_bits(x[:1000])), q.reconstruct(q.indices(x[:1000])))
