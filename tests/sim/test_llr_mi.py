"""The llr-mi PHY abstraction: its bit information, its curve fit, and its BLER against decoding every bit."""

import math

import numpy as np
import pytest
import torch
from sionna.phy import config

from sim.cell.tb_configs import calibrated_curve, carrier_tables, tb_codec
from sim.phy.analog import GrantedPrbLink
from sim.phy.llr_mi import BlerCurve, _fit, bit_information

PRBS = 2


def test_bit_information_of_true_llrs_is_the_mutual_information_of_the_binary_input_gaussian_channel():
    """QPSK on AWGN: each bit's LLR is Gaussian with mean mu = 2 Es/N0 and variance 2 mu, so the mean bit
    information of Sionna's demapper's LLRs is J(mu) = 1 - E[log2(1 + exp(-L))], here by Gauss-Hermite
    quadrature; sure-right, zero and wrong LLRs give 1, 0 and less than 0."""
    codec = tb_codec(5, PRBS, 30e3, (2, 11), 1, None, None, "cpu")  # MCS 5: QPSK
    assert codec.bits_per_symbol == 2
    generator = torch.Generator().manual_seed(0)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # E[f(Z)], Z ~ N(0, 1)
    for snr_db in (-5.0, 0.0, 5.0):
        es_n0 = 10 ** (snr_db / 10)
        bits = torch.randint(0, 2, (1, 400_000), generator=generator).float()
        x = codec.mapper(bits)
        no = 1 / es_n0
        noise = torch.complex(torch.randn(x.shape, generator=generator), torch.randn(x.shape, generator=generator))
        llr = codec.demap(x + math.sqrt(no / 2) * noise, torch.full(x.shape, es_n0))
        mu = 2 * es_n0
        llr_of_a_one = mu + math.sqrt(2 * mu) * nodes
        expected = 1 - float(np.sum(weights * np.logaddexp(0, -llr_of_a_one)) / np.sum(weights) / math.log(2))
        assert float(bit_information(llr, bits).mean()) == pytest.approx(expected, abs=3e-3), snr_db
    ones = torch.ones(3)
    assert bit_information(torch.tensor([40.0, 0.0, -5.0]), ones).tolist() == pytest.approx(
        [1.0, 0.0, 1 - math.log2(1 + math.exp(5))], abs=1e-6
    )


def test_the_fit_recovers_the_logistic_curve_it_is_drawn_from():
    generator = torch.Generator().manual_seed(1)
    truth = BlerCurve(mi50=0.62, width=0.01)
    information = 0.55 + 0.14 * torch.rand(20_000, generator=generator, dtype=torch.float64)
    failed = torch.rand(20_000, generator=generator, dtype=torch.float64) < truth.bler(information)
    fitted = _fit(information, failed)
    assert fitted.mi50 == pytest.approx(truth.mi50, abs=1e-3)
    assert fitted.width == pytest.approx(truth.width, rel=0.05)


@pytest.mark.parametrize(
    "mcs, snr_db, eesm_far", [(3, 6.0, True), (9, 10.0, False), (9, 14.0, True), (16, 16.0, False)]
)
def test_the_calibrated_curve_predicts_the_link_bler_with_ls_estimates_on_fading(mcs, snr_db, eesm_far):
    """One Rayleigh gain per PRB (flat over it and the slot), LS estimates from the slot's two pilot symbols:
    the BLER of decoding every TB lies within 3 binomial standard errors of the mean BLER the calibrated
    curve gives the same TBs' LLRs. Sionna's tables at the EESM of the per-RE SINR (the eesm abstraction)
    predict less, far less at the highest SNR of an MCS (docs/digital/abstraction_gap.py: 0.37 and 0.46 of
    the link's BLER at MCS 3, 6 dB and MCS 9, 14 dB)."""
    from sim.phy.abstraction import TransportBlockAbstraction

    n = 500
    torch.manual_seed(mcs)
    config.seed = mcs
    codec = tb_codec(mcs, PRBS, 30e3, (2, 11), 1, None, None, "cpu")
    link = GrantedPrbLink(30e3, [2, 11], csi="ls")
    bits = torch.randint(0, 2, (n, codec.tb_size)).float()
    coded = codec.encoder(bits)
    h = torch.randn(n * PRBS, 1, dtype=torch.complex64).expand(-1, 12)
    out = link(codec.mapper(coded).reshape(n * PRBS, -1), h, torch.full((n * PRBS,), 10 ** (-snr_db / 10)))
    llr = codec.demap(out["x"].reshape(n, -1), out["sinr"].reshape(n, -1))
    link_bler = float((~codec.decode(llr)[1]).float().mean())
    centre_db = float(carrier_tables(PRBS, 2, 1, 0.1)[1][mcs, PRBS])
    curve = calibrated_curve(mcs, PRBS, 30e3, (2, 11), 1, None, None, centre_db)
    predicted = float(curve.bler(bit_information(llr, coded).mean(-1)).mean())
    std_error = math.sqrt(link_bler * (1 - link_bler) / n)
    assert abs(predicted - link_bler) <= 3 * std_error, (link_bler, predicted)
    eesm = TransportBlockAbstraction(1)(torch.full((n,), mcs), sinr=out["sinr_abstraction"].reshape(n, -1))["bler"]
    assert float(eesm.mean()) < link_bler - (3 * std_error if eesm_far else 0), (link_bler, float(eesm.mean()))
