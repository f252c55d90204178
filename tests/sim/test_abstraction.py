"""The transport-block abstraction against link-level decoding, its TB sizes, HARQ, and link adaptation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sionna.phy import config
from sionna.phy.channel import AWGN
from sionna.phy.mapping import BinarySource, Demapper, Mapper
from sionna.phy.nr import TBDecoder, TBEncoder
from sionna.phy.nr.utils import calculate_tb_size, decode_mcs_index
from sionna.phy.utils import db_to_lin

from sim.bench.abstraction import bench_abstraction
from sim.bench.timing import BenchRun
from sim.phy.abstraction import DATA_RES_PER_PRB, TransportBlockAbstraction
from sim.phy.digital import transport_block_size
from sim.phy.link_adaptation import LinkAdaptation


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are small (a few hundred links, a few hundred TBs); on a 2-core machine shared with other
    jobs, a second OpenMP thread makes each op wait for a descheduled peer (measured 10-20x slower per slot)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tba():
    return TransportBlockAbstraction()


def abstraction_bler(tba, mcs, snr_db, num_re):
    snr_db = torch.as_tensor(snr_db, dtype=torch.float32)
    mcs = torch.full(snr_db.shape, mcs, dtype=torch.int32)
    return tba(mcs, sinr_eff=db_to_lin(snr_db), num_allocated_re=num_re)["bler"]


def link_level_bler(mcs, snr_db, num_tbs, num_prbs=1):
    """BLER of Sionna's stock PUSCH chain on AWGN: TBEncoder -> QAM Mapper -> AWGN -> APP Demapper -> TBDecoder."""
    num_bits_per_symbol, coderate = decode_mcs_index(mcs, table_index=1, is_pusch=True)
    num_bits_per_symbol, coderate = int(num_bits_per_symbol), float(coderate)
    tb_size = transport_block_size(mcs, num_prbs, num_pilot_symbols=2)["tb_size"]
    encoder = TBEncoder(tb_size, num_bits_per_symbol * DATA_RES_PER_PRB * num_prbs, coderate, num_bits_per_symbol)
    decoder = TBDecoder(encoder, num_bp_iter=20)  # 20 iterations of boxplus-phi BP, as Sionna's BLER tables
    mapper, demapper = Mapper("qam", num_bits_per_symbol), Demapper("app", "qam", num_bits_per_symbol)
    # One batch for all SNRs: the decoder's cost is per TB, its overhead per call
    no = db_to_lin(-torch.tensor(snr_db)).repeat_interleave(num_tbs)[:, None]  # unit-energy symbols: Es/N0 = SNR
    bits = BinarySource()([no.shape[0], tb_size])
    _, crc_ok = decoder(demapper(AWGN()(mapper(encoder(bits)), no), no))
    return (~crc_ok).float().reshape(len(snr_db), num_tbs).mean(-1)


def wilson_interval(p_hat, n, z=3.0):
    """Score interval of a binomial proportion; z = 3 keeps the check quiet at ~0.3 % per point."""
    centre = (p_hat + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * torch.sqrt(p_hat * (1 - p_hat) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


# (MCS of 38.214 table 1, SNRs in dB) on 1 PRB (144 data REs): QPSK r=0.37, 16-QAM r=0.48, 64-QAM r=0.55. The SNRs
# lie where the link-level BLER falls from ~0.3 to ~0.03, the region link adaptation runs in (target 0.1).
WATERFALLS = [(5, [0.25, 0.75, 1.25]), (13, [6.25, 6.75, 7.25]), (20, [11.9, 12.4, 12.9])]
NUM_TBS = 150
SNR_TOLERANCE_DB = 1.0


def agrees(tba, mcs, snr_db, link_bler, num_re, shift_db=0.0):
    """Per point: is the link-level BLER (z=3 interval) inside the abstraction's BLER over SNR +-1 dB?"""
    snr = torch.tensor(snr_db) + shift_db
    optimistic = abstraction_bler(tba, mcs, snr + SNR_TOLERANCE_DB, num_re)
    pessimistic = abstraction_bler(tba, mcs, snr - SNR_TOLERANCE_DB, num_re)
    low, high = wilson_interval(link_bler, NUM_TBS)
    return (high >= optimistic) & (low <= pessimistic)


def test_bler_agrees_with_link_level_decoding_on_awgn(tba):
    """Link-level and abstraction BLER agree within 1 dB of SNR on a grid of 3 MCS x 3 SNRs.

    Why 1 dB: the SNR the link needs for BLER 0.1, minus the abstraction's, measured +0.8 dB (MCS 5), +0.6 (13),
    -0.5 (20) on 1 PRB and +0.75, +0.4, -0.4 on 4 PRBs. Sionna's tables sample SNR every 1.79 dB, so a code
    block's waterfall is a spline through two or three points; they also count the TB CRC as free (on 1 PRB it
    raises the true code rate by 3-13 %). Passes for seeds 1-5 too; a 1.5 dB shift fails for all of them.
    """
    config.seed = 42
    results = []
    for mcs, snr_db in WATERFALLS:
        link = link_level_bler(mcs, snr_db, NUM_TBS)
        results.append((mcs, snr_db, link))
        abstraction = abstraction_bler(tba, mcs, snr_db, DATA_RES_PER_PRB)
        ok = agrees(tba, mcs, snr_db, link, DATA_RES_PER_PRB)
        table = ", ".join(f"{s} dB: link {lb:.3f} abs {ab:.3f}" for s, lb, ab in zip(snr_db, link, abstraction))
        assert ok.all(), f"MCS {mcs}: {table}"
        # the waterfall is really sampled: the link-level BLER falls across the points
        assert link[0] > link[-1]
    # The check can fail: the abstraction shifted by 2 dB either way disagrees somewhere
    for shift_db in (-2.0, 2.0):
        assert not all(agrees(tba, m, s, lb, DATA_RES_PER_PRB, shift_db).all() for m, s, lb in results)


def test_tb_sizes_are_sionnas_calculate_tb_size(tba):
    """The abstraction's TB sizes are 38.214 TB sizes of calculate_tb_size for 14 symbols, 24 pilot REs/PRB."""
    mcs = torch.tensor(tba.available_mcs, dtype=torch.int32)
    prbs = [1, 2, 3, 5, 8, 24, 51, 106, 273]
    mcs, num_prbs = torch.meshgrid(mcs, torch.tensor(prbs, dtype=torch.int32), indexing="ij")
    modulation_order, coderate = decode_mcs_index(mcs, table_index=1, is_pusch=True, transform_precoding=False)
    expected, *_ = calculate_tb_size(
        modulation_order, coderate, num_prbs=num_prbs, num_ofdm_symbols=14, num_dmrs_per_prb=24, return_cw_length=False
    )
    out = tba(mcs, sinr_eff=torch.full(mcs.shape, 10.0), num_allocated_re=DATA_RES_PER_PRB * num_prbs)
    assert torch.equal(out["tb_size"], expected)
    # the digital link's TB of a slot (2 pilot symbols: 24 pilot REs per PRB) has the same size
    for m, b in [(3, 1), (9, 3), (16, 51), (27, 273)]:
        assert transport_block_size(m, b, num_pilot_symbols=2)["tb_size"] == expected[m - 3, prbs.index(b)]
    # worked by hand from 38.214 6.1.4.2 (small-TB table; two code blocks)
    assert transport_block_size(5, 1, 2)["tb_size"] == 104 and transport_block_size(20, 24, 2)["tb_size"] == 11528


def test_ack_draws_follow_bler_and_repeat_per_seed(tba):
    mcs = torch.full((200_000,), 13, dtype=torch.int32)
    sinr = torch.full(mcs.shape, db_to_lin(6.2).item())
    config.seed = 7
    first = tba(mcs, sinr_eff=sinr, num_allocated_re=DATA_RES_PER_PRB)
    config.seed = 7
    again = tba(mcs, sinr_eff=sinr, num_allocated_re=DATA_RES_PER_PRB)
    assert torch.equal(first["tb_ok"], again["tb_ok"])
    bler = first["bler"][0].item()
    assert 0.05 < bler < 0.95
    nack_rate = 1 - first["tb_ok"].float().mean().item()
    assert abs(nack_rate - bler) < 4 * math.sqrt(bler * (1 - bler) / mcs.numel())
    assert torch.equal(first["num_decoded_bits"], torch.where(first["tb_ok"], first["tb_size"], 0))


def test_unscheduled_links_and_uncalibrated_mcs(tba):
    # an unscheduled link's MCS is not looked at (OLLA fills 0, outside table 1's calibrated 3..27)
    out = tba(torch.tensor([5, 0, 99]), sinr_eff=torch.full((3,), 2.0), num_allocated_re=torch.tensor([144, 0, 0]))
    assert out["harq_feedback"].tolist() == [out["harq_feedback"][0].item(), -1, -1]
    assert not out["tb_ok"][1:].any() and (out["tb_size"][1:] == 0).all() and (out["bler"][1:] == -1).all()
    with pytest.raises(ValueError, match="no BLER table"):
        tba(torch.tensor([2]), sinr_eff=torch.tensor([2.0]), num_allocated_re=144)


def test_bench_reports_json(tba):
    result = bench_abstraction(BenchRun(repeats=1), num_user_slots=2000, num_users=1000, threads=1)
    json.dumps(result)
    assert result["num_user_slots"] == 2000 and result["sinr_eff"]["user_slots_per_s"] > 0


def test_chase_combining_adds_sinr_per_re(tba):
    """Two transmissions of the same TB at SINR s decode like one at 2 s; unequal REs are combined per RE."""
    mcs = torch.tensor([13, 13])
    sinr = torch.full((2, DATA_RES_PER_PRB), db_to_lin(4.0).item())
    sinr[1, ::2] *= 4  # a frequency-selective TB: EESM, not the mean, makes its effective SINR
    first = tba(mcs, sinr=sinr)
    second = tba(mcs, sinr=sinr, harq_sinr=first["harq_sinr"])
    assert torch.allclose(second["harq_sinr"], 2 * sinr)
    assert torch.equal(second["tb_size"], first["tb_size"])
    assert (second["bler"] < first["bler"]).all()
    assert torch.allclose(second["sinr_eff_db"][0], first["sinr_eff_db"][0] + 10 * math.log10(2), atol=1e-3)
    assert torch.allclose(second["bler"], tba(mcs, sinr=2 * sinr)["bler"])
    # flat TB: effective-SINR combining equals per-RE combining
    eff = tba(mcs[:1], sinr_eff=sinr[0, :1], num_allocated_re=DATA_RES_PER_PRB, harq_sinr=sinr[0, :1])
    assert torch.allclose(eff["bler"], second["bler"][:1])


def test_illa_picks_highest_mcs_meeting_target(tba):
    sinr_db = torch.arange(-5.0, 25.01, 0.5)
    num_re = DATA_RES_PER_PRB * 4
    mcs = LinkAdaptation(num_users=sinr_db.numel(), bler_target=0.1, olla=False)(sinr_db, num_re)
    assert (mcs[1:] >= mcs[:-1]).all(), "a higher SINR never gets a lower MCS"
    assert mcs[sinr_db == 20.0] > mcs[sinr_db == 10.0] > mcs[sinr_db == 0.0]
    lowest, highest = tba.available_mcs[0], tba.available_mcs[-1]
    bler = tba(mcs, sinr_eff=db_to_lin(sinr_db), num_allocated_re=num_re)["bler"]
    meets = bler <= 0.1
    assert (meets | (mcs == lowest)).all(), "only the lowest MCS is picked above the target"
    above = mcs < highest
    bler_next = tba(mcs[above] + 1, sinr_eff=db_to_lin(sinr_db[above]), num_allocated_re=num_re)["bler"]
    assert (bler_next > 0.1).all(), "the next MCS up would miss the target"


def test_olla_brings_long_run_bler_to_target_despite_biased_sinr(tba):
    """SINR reports off by +3 dB (half the users) or -3 dB: ILLA alone misses the BLER target, OLLA meets it."""
    config.seed = 5
    num_users, num_slots, burn_in, num_re, target = 200, 250, 100, DATA_RES_PER_PRB * 4, 0.1
    # true SINRs inside the range the MCS table spans, so neither end of the table caps the adaptation
    true_sinr_db = torch.linspace(2.0, 16.0, num_users // 2).repeat(2)
    bias_db = torch.tensor([3.0, -3.0]).repeat_interleave(num_users // 2)
    reported_db = true_sinr_db + bias_db

    # ILLA is memoryless: one slot tells its BLER
    illa_mcs = LinkAdaptation(num_users, bler_target=target, olla=False)(reported_db, num_re)
    illa_bler = tba(illa_mcs, sinr_eff=db_to_lin(true_sinr_db), num_allocated_re=num_re)["bler"]

    la = LinkAdaptation(num_users, bler_target=target, olla=True)
    nacks = []
    for _ in range(num_slots):
        out = tba(la(reported_db, num_re), sinr_eff=db_to_lin(true_sinr_db), num_allocated_re=num_re)
        la.update(out["harq_feedback"])
        nacks.append(~out["tb_ok"])
    nack_rate = torch.stack(nacks[burn_in:]).float().mean(0)

    for group, bias in ((bias_db > 0, "+3 dB"), (bias_db < 0, "-3 dB")):
        olla_bler, illa = nack_rate[group].mean().item(), illa_bler[group].mean().item()
        assert abs(olla_bler - target) < 0.01, f"{bias}: OLLA long-run BLER {olla_bler:.3f}, ILLA {illa:.3f}"
        assert (illa > 0.5) if bias == "+3 dB" else (illa < 0.02), f"{bias}: ILLA BLER {illa:.3f}"
    # the back-off converged to about the bias
    assert abs(la.offset_db[bias_db > 0].mean().item() - 3.0) < 1.0
    assert abs(la.offset_db[bias_db < 0].mean().item() + 3.0) < 1.0
