"""Science checks of the digital link: QAM closed forms, Sionna's reference chain, Shannon, HARQ, quantiser."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.special import erfc
from sionna.phy import config
from sionna.phy.channel import AWGN
from sionna.phy.fec.ldpc import LDPC5GEncoder
from sionna.phy.mapping import Demapper, Mapper
from sionna.phy.nr import TBDecoder, TBEncoder

from sim.cell import CellLoop
from sim.phy.digital import DigitalProxy, TransportBlockLink, TransportBlockTable, transport_block_size
from sim.phy.qam_demapper import QamDemapper
from sim.phy.quantization import UniformQuantizer, gaussian_uniform_step
from sim.phy.tb_encoder import TransportBlockEncoder
from sim.scenario import validate_scenario

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
    demapper = QamDemapper(bits_per_symbol)
    # the CPU path (numba, float64 inside) and the torch path (other devices, autograd); README: "within 1e-3"
    for llr in (demapper(y, no), demapper._call_torch(y, no)):
        torch.testing.assert_close(llr, reference, rtol=0.0, atol=1e-3)
    # Very confident symbols (no = 1e-7, LLRs in the thousands): the numba loop's underflow fallback keeps them
    # finite and Sionna's, within float32's rounding of logits near 1e6 (Sionna's; the loop's are float64).
    tiny = torch.full_like(no, 1e-7)
    confident = demapper(y, tiny)
    assert bool(confident.isfinite().all())
    torch.testing.assert_close(confident, Demapper("app", "qam", bits_per_symbol)(y, tiny), rtol=1e-3, atol=0.5)


@pytest.mark.parametrize("mcs, num_prbs", [(5, 24), (16, 2), (16, 24), (27, 24)])
def test_transport_block_encoder_gives_sionnas_bits(mcs, num_prbs):
    tb = transport_block_size(mcs, num_prbs, len(PILOTS))
    args = (tb["tb_size"], tb["num_coded_bits"], tb["code_rate"], tb["bits_per_symbol"])
    bits = torch.randint(0, 2, (4, 2, tb["tb_size"]), generator=torch.Generator().manual_seed(mcs)).float()
    encoder = TransportBlockEncoder(*args)
    assert torch.equal(encoder(bits), TBEncoder(*args)(bits))
    # the numba XOR gathers (CPU) against Sionna's gather-and-sum (GPU path), on the same code blocks
    ldpc = encoder._encoder
    blocks = torch.randint(0, 2, (3, ldpc.k_ldpc), generator=torch.Generator().manual_seed(mcs)).float()
    sent = LDPC5GEncoder._encode_fast(ldpc, blocks)  # the reference: Sionna's, with the trimmed gather tables
    assert torch.equal(ldpc._encode_fast(blocks)[:, : sent.shape[1]], sent)
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


def digital_cell(
    tiny,
    mcs,
    snr_db,
    fidelity="link",
    max_retx=0,
    round_trip_slots=4,
    channel="awgn",
    csi="perfect",
    timelines=4,
    values=(256, 64),
    seed=0,
):
    """Two users (256 and 64 token values) on 4 PRBs, equal shares, through the cell loop's digital link.
    ``fidelity``: link, abstraction (link.abstraction's default, llr-mi) or eesm (the other abstraction)."""
    tiny["users"] = [
        {"id": "q", "modalities": ["text"], "snr_db": snr_db},
        {"id": "cam", "modalities": ["image"], "snr_db": snr_db},
    ]
    tiny["groups"] = [{"id": "g", "users": ["q", "cam"]}]
    tiny["cell"] = {"num_prbs": 4}
    tiny["channel"] = {"model": channel, "csi": csi}
    link = {
        "mode": "digital",
        "mcs": mcs,
        "fidelity": "link" if fidelity == "link" else "abstraction",
        "abstraction": "eesm" if fidelity == "eesm" else "llr-mi",
        "harq": {"max_retx": max_retx, "round_trip_slots": round_trip_slots},
    }
    tiny["link"] = link
    s = validate_scenario(tiny)
    config.seed = seed
    generator = torch.Generator().manual_seed(seed)
    payload = torch.randn(timelines, 2, 1, max(values), generator=generator) / math.sqrt(2)
    loop = CellLoop(s, list(values), [0.0, 0.0], [0.0], timelines, torch.device("cpu"))
    return s, loop(torch.zeros(timelines, 1, 1, dtype=torch.float64), payload), payload


def test_clean_link_delivers_the_quantised_payload_and_counts_its_blocks(tiny):
    s, records, payload = digital_cell(tiny, 16, 30.0)
    tb = records.tbs
    quantizer = UniformQuantizer(8)
    for u, n in enumerate((256, 64)):
        torch.testing.assert_close(records.received[:, u, 0, :n], quantizer(payload[:, u, 0, :n]))
        mine = tb["user"] == u
        assert int(tb["payload_bits"][mine].sum()) == 4 * n * 8  # every payload bit in exactly one TB ...
        assert bool(tb["ack"][mine].all()) and bool((tb["attempt"][mine] == 1).all())  # ... delivered at once
    table = TransportBlockTable(4, len(PILOTS))
    assert torch.equal(tb["tbs"], table.tb_size[tb["mcs"], tb["prbs"]])
    assert torch.equal(tb["coded_bits"], table.coded_bits[tb["mcs"], tb["prbs"]])
    assert bool((tb["prbs"] <= 2).all())  # equal shares: 2 PRBs each
    assert int(records.jobs["erased_values"].sum()) == 0


@pytest.mark.parametrize("fidelity", ["link", "abstraction", "eesm"])
def test_failed_blocks_are_retransmitted_after_each_round_trip_then_erased(tiny, fidelity):
    """Far below MCS 27's waterfall every TB fails: 1 + max_retx attempts each, a round trip apart; every
    value is erased."""
    s, records, _ = digital_cell(tiny, 27, 0.0, fidelity=fidelity, max_retx=2, round_trip_slots=4, timelines=3)
    tb = records.tbs
    assert not bool(tb["ack"].any())
    for b in range(3):
        for k in tb["tb"][tb["timeline"] == b].unique():
            slots = tb["slot"][(tb["timeline"] == b) & (tb["tb"] == k)].sort().values
            assert len(slots) == 3 and bool((slots.diff() >= 4).all())
    assert float(records.received.abs().sum()) == 0.0
    assert torch.equal(records.jobs["erased_values"][:, :, 0], torch.tensor([256, 64]).expand(3, -1))


def test_harq_lowers_the_residual_block_error_rate(tiny):
    """At the waterfall, Chase combining of up to 3 retransmissions leaves far fewer TBs lost."""
    residual = {}
    for max_retx in (0, 3):
        _, records, _ = digital_cell(copy.deepcopy(tiny), 14, 7.0, max_retx=max_retx, timelines=24, seed=1)
        tb = records.tbs
        first = tb["attempt"] == 1
        lost = (~tb["ack"]) & (tb["attempt"] == max_retx + 1)
        residual[max_retx] = float(lost.sum() / first.sum())
    assert residual[0] > 0.05 and residual[3] < residual[0] / 4, residual


@pytest.mark.parametrize("fidelity", ["link", "abstraction", "eesm"])
@pytest.mark.parametrize("channel, csi", [("awgn", "perfect"), ("rayleigh", "ls"), ("tdl-a", "ls")])
def test_information_bits_never_exceed_the_shannon_capacity_of_the_resource_elements_used(tiny, channel, csi, fidelity):
    """TB bits delivered <= sum over every attempt's REs of log2(1 + SNR per RE), at every SNR, MCS fixed or
    adapted (fading only lowers the ergodic capacity below that of its mean SNR).

    With LS estimates at low SNR the receiver's own SINR estimate is optimistic; the abstraction must not
    be (it judges the symbols against the channel's realisation).
    """
    for fixed in ("auto", 27):
        for snr in (-10.0, -5.0, 0.0, 10.0, 25.0):
            s, records, _ = digital_cell(
                copy.deepcopy(tiny), fixed, snr, fidelity, max_retx=3, channel=channel, csi=csi, timelines=4, seed=2
            )
            tb = records.tbs
            snr_re = snr - 10 * torch.log10(tb["prbs"] / 2.0)  # the power of 2 PRBs spread over the grant
            capacity = (tb["prbs"] * 144 * torch.log2(1 + 10 ** (snr_re / 10))).sum()
            assert float((tb["tbs"] * tb["ack"]).sum()) <= float(capacity), (fixed, snr)


def test_the_llr_mi_abstraction_loses_the_blocks_decoding_loses_on_common_random_numbers(tiny):
    """MCS 9 at its waterfall on TDL-A with LS estimates and one Chase-combined retransmission: the same
    channels and noise decoded bit by bit and judged by the llr-mi abstraction lose as many TBs at the first
    attempt and after HARQ (within 3 binomial standard errors), and the eesm abstraction, on the same draws,
    loses fewer after HARQ than the llr-mi one misses by (its optimism on retransmissions with LS estimates:
    docs/digital/harq.md)."""
    first, residual = {}, {}
    for fidelity in ("link", "abstraction", "eesm"):
        _, records, _ = digital_cell(
            copy.deepcopy(tiny), 9, 8.0, fidelity, max_retx=1, channel="tdl-a", csi="ls", timelines=32, seed=0
        )
        tb = records.tbs
        once = tb["attempt"] == 1
        first[fidelity] = float((~tb["ack"][once]).float().mean())
        residual[fidelity] = float(((~tb["ack"]) & (tb["attempt"] == 2)).sum() / once.sum())
        n = int(once.sum())
    for rate in (first, residual):
        std_error = math.sqrt(rate["link"] * (1 - rate["link"]) / n)
        assert abs(rate["abstraction"] - rate["link"]) <= 3 * std_error, (first, residual)
    assert residual["link"] - residual["eesm"] > abs(residual["abstraction"] - residual["link"]), residual


def test_information_bits_are_payload_bits_and_the_capacity_gap_is_per_resource_element(tiny):
    """Hand-computed on AWGN with perfect CSI, where every RE sees exactly the SNR per RE: 4 timelines of
    256 + 64 values at 8 bits are 10240 information bits, although the TBs that carry them hold padding;
    the capacity is (REs of every attempt) x log2(1 + SNR per RE)."""
    from sim.metrics import digital_counts

    _, records, _ = digital_cell(tiny, 16, 30.0)
    tb = {k: v.cpu().numpy() for k, v in records.tbs.items()}
    counts = digital_counts(tb, erased=0, payload_values=4 * 320, channel_uses=1, max_attempts=1, num_tasks=8)
    assert counts["information_bits"] == 4 * (256 + 64) * 8
    assert counts["information_bits_per_task"] == 4 * (256 + 64) * 8 / 8
    assert (tb["tbs"] * tb["ack"]).sum() > counts["information_bits"]  # the last TB of each payload is padded
    snr_re = 10 ** ((30.0 - 10 * np.log10(tb["prbs"] / 2.0)) / 10)  # 2 PRBs' power spread over the grant
    capacity = (tb["prbs"] * 144 * np.log2(1 + snr_re)).sum()
    assert counts["capacity_gap"] == pytest.approx(capacity / (4 * 320 * 8), rel=1e-5)


def test_link_adaptation_delivers_most_blocks_where_a_fixed_mcs_falls_off_its_cliff(tiny):
    lost = {}
    for mcs in ("auto", 20):
        _, records, _ = digital_cell(copy.deepcopy(tiny), mcs, 2.0, timelines=16, seed=3)
        tb = records.tbs
        lost[mcs] = float((~tb["ack"]).float().mean())
    assert lost[20] > 0.9 and lost["auto"] < 0.3, lost


def test_training_proxy_quantises_erases_by_the_abstractions_bler_and_passes_gradients():
    proxy = DigitalProxy(num_prbs=2, num_pilot_symbols=2, bits_per_value=8, mcs=16, max_retx=0)
    values = (torch.randn(64, 2, 256, generator=torch.Generator().manual_seed(0)) / math.sqrt(2)).requires_grad_()
    g = torch.Generator().manual_seed(0)
    high = proxy(values, torch.full((64, 2), 30.0), g)
    torch.testing.assert_close(high, proxy.quantizer(values))
    low = proxy(values, torch.full((64, 2), -10.0), g)
    assert float((low == 0).float().mean()) > 0.99  # MCS 16 at -10 dB: every TB lost
    high.sum().backward()  # straight through the rounding: d(sum)/d(value) = 1 wherever nothing is erased
    torch.testing.assert_close(values.grad, torch.ones_like(values))


@pytest.mark.parametrize("bits, mse", [(1, 0.3634), (2, 0.1175), (3, 0.03744), (4, 0.01154)])
def test_quantiser_mse_matches_max_1960_for_gaussian_values(bits, mse):
    """Optimal uniform quantiser of a unit Gaussian: Max's (1960) table of distortions."""
    q = UniformQuantizer(bits, std=1.0)
    x = torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    assert abs(float((q(x) - x).square().mean()) - mse) / mse < 0.02
    assert gaussian_uniform_step(bits) == pytest.approx({1: 1.596, 2: 0.9957, 3: 0.5860, 4: 0.3352}[bits], rel=2e-3)
    torch.testing.assert_close(q.from_bits(q.to_bits(x[:1000])), q.reconstruct(q.indices(x[:1000])))


def _quadrature_mse(step: float, levels: int) -> float:
    """MSE of the ``levels``-level mid-rise quantiser of step ``step`` on a unit Gaussian, by quadrature:
    8-point Gauss-Legendre in every inner cell, adaptive quadrature over the two overload tails (the
    code's closed form is not used)."""
    from scipy import integrate, stats

    x, w = np.polynomial.legendre.leggauss(8)
    edges = (np.arange(1, levels) - levels / 2) * step
    centre, half = (edges[:-1] + edges[1:]) / 2, step / 2
    points = centre[:, None] + half * x
    inner = ((points - centre[:, None]) ** 2 * stats.norm.pdf(points) * w).sum() * half
    top = (levels / 2 - 0.5) * step  # the outermost level
    tail = integrate.quad(lambda v: (v - top) ** 2 * stats.norm.pdf(v), edges[-1], np.inf, epsrel=1e-10)[0]
    return float(inner + 2 * tail)


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 10, 12, 16])
def test_quantiser_step_is_mse_optimal_at_every_width(bits):
    """The step's MSE is within 1 % of the least MSE over 121 steps log-spaced from 0.5 / levels to
    20 / levels (clipping at 0.25 to 10 sigma; 3 % apart, so the grid's least is within 0.1 % of the
    optimum), every MSE by quadrature."""
    levels = 2**bits
    grid = np.exp(np.linspace(math.log(0.5 / levels), math.log(20 / levels), 121))
    least = min(_quadrature_mse(step, levels) for step in grid)
    assert _quadrature_mse(gaussian_uniform_step(bits), levels) <= 1.01 * least


def test_how_tbs_are_judged_does_not_change_the_digital_checkpoint_key(tiny):
    """The noise proxy trains the same whether evaluation decodes every bit or abstracts, by either
    abstraction, with any decoder: one checkpoint serves them all (a new link key must not orphan the
    cached ones). What the proxy does see, the bits per value, changes the key."""
    from sim.checkpoint_plan import checkpoint_key

    def key(**link):
        raw = copy.deepcopy(tiny)
        raw["link"] = {"mode": "digital", **link}
        return checkpoint_key(validate_scenario(raw))[0]

    judged = [
        key(fidelity="abstraction", abstraction="eesm"),
        key(fidelity="abstraction", abstraction="llr-mi"),
        key(decoder="layered-oms-int16", num_bp_iter=8),
    ]
    assert judged == [key()] * 3
    assert key(bits_per_value=4) != key()
