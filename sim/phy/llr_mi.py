r"""PHY abstraction from the LLRs' mutual information, calibrated on the link-level chain it stands in for.

Sionna's ``PHYAbstraction`` (:mod:`sim.phy.abstraction`) maps the per-RE SINR to a BLER. Two things part it
from the chain tokensim decodes (``docs/digital/abstraction_gap.py`` measures both):

- its AWGN tables were made with another chain: on 2-PRB TBs they are 0.6-0.8 dB optimistic against
  Sionna's own TB encoder, demapper and either LDPC decoder;
- a per-RE SINR cannot see an LS channel estimate's error. The error is common to the REs of a
  subcarrier and turns them together, so the demapper's LLRs come out confidently wrong, which no per-RE
  SINR (even one that counts the error's variance as noise) describes, and Chase combining does not
  outvote them.

This abstraction looks at what the decoder would be given instead: the LLRs of the TB's coded bits after
Chase combining. Their mean bit information,
:math:`\bar I = 1 - \mathrm{E}[\log_2(1 + e^{-s L})]` over the coded bits (``s = +-1`` the sent bit; the
generalised mutual information of a bit-metric decoder that trusts the LLRs as they are, so a confidently
wrong LLR counts against it), is mapped to the BLER by a curve measured on AWGN with the chain's own
encoder, demapper and decoder for that MCS and grant (:func:`calibrate`): a logistic
:math:`\mathrm{BLER} = 1 / (1 + e^{(\bar I - I_{50}) / w})`, fitted by maximum likelihood to the
decode outcomes of TBs spread over the waterfall. What it skips is the decoding, by far the dearest step.

On one TB at a time (no HARQ) it predicts the link's BLER within its binomial error on AWGN and on per-PRB
Rayleigh fading with perfect or LS estimates (``tests/sim/test_llr_mi.py``; the table in docs/digital).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CALIBRATION_VERSION = 1  # bump when what calibrate() measures changes (a cached curve is then stale)
# The SNRs calibrated, around the waterfall's centre, and TBs at each: 416 TBs place the curve's midpoint
# within some 0.002 of mean bit information (its spread over calibration seeds), as 1008 TBs do.
_OFFSETS_DB = torch.arange(-3.0, 3.01, 0.5)
_TBS_PER_SNR = 32


def bit_information(llr: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """``1 - log2(1 + exp(-s L))`` per bit, ``s = 2b - 1`` (Sionna's sign: ``L = log p(1)/p(0)``): 1 for a
    sure right LLR, 0 for an LLR of 0, negative for a confidently wrong one."""
    return 1 - torch.nn.functional.softplus(-(2 * bits - 1) * llr) / math.log(2)


@dataclass(frozen=True)
class BlerCurve:
    """BLER against the mean bit information of a TB's LLRs: ``1 / (1 + exp((I - mi50) / width))``."""

    mi50: float  # the mean bit information at which half the TBs fail
    width: float  # how many units of mean bit information the waterfall spans (per e-fold of the odds)

    def bler(self, information: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((self.mi50 - information.double()) / self.width)


def calibrate(codec, centre_db: float, seed: int = 0) -> BlerCurve:
    """Measure ``codec``'s BLER curve on AWGN: TBs at SNRs around ``centre_db`` (moved until the lowest fails
    nearly always and the highest nearly never), each encoded, mapped, sent, demapped and decoded by
    ``codec`` (a :class:`~sim.phy.digital.TransportBlockLink`); the curve is the logistic fit of each TB's
    outcome to its LLRs' mean bit information.

    Draws from a generator of its own (seeded by ``seed``), so a run's draws do not depend on whether a curve
    was cached.
    """
    generator = torch.Generator().manual_seed(seed)
    for _ in range(8):
        snr_db = (centre_db + _OFFSETS_DB).repeat_interleave(_TBS_PER_SNR)
        information, failed = _waterfall(codec, snr_db, generator)
        per_snr = failed.double().view(len(_OFFSETS_DB), -1).mean(-1)
        if per_snr[0] < 0.9:
            centre_db -= 2.0
        elif per_snr[-1] > 0.1:
            centre_db += 2.0
        else:
            return _fit(information, failed)
    raise RuntimeError(f"no waterfall within 16 dB of {centre_db:.1f} dB for {codec.tb_size}-bit TBs")


def _waterfall(codec, snr_db: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean bit information, failed) of one TB at each of ``snr_db`` on AWGN with perfect CSI."""
    n = len(snr_db)
    bits = torch.randint(0, 2, (n, codec.tb_size), generator=generator).float()
    coded = codec.encoder(bits)
    x = codec.mapper(coded)
    no = torch.pow(10.0, -snr_db / 10)[:, None]
    # the noise by hand, not Sionna's AWGN block: that one draws from Sionna's generator, which the run's
    # channels share, and a calibration must leave their draws as they were
    noise = torch.complex(torch.randn(x.shape, generator=generator), torch.randn(x.shape, generator=generator))
    llr = codec.demap(x + torch.sqrt(no / 2) * noise, (1 / no).expand(x.shape))
    return bit_information(llr, coded).mean(-1), ~codec.decode(llr)[1]


def _fit(information: torch.Tensor, failed: torch.Tensor) -> BlerCurve:
    """Logistic regression of ``failed`` on ``information`` by Newton's method (two parameters: torch has no
    generalised linear model, and scikit-learn is not a dependency)."""
    design = torch.stack([torch.ones_like(information), information], 1).double()
    y = failed.double()
    w = torch.zeros(2, dtype=torch.float64)
    for _ in range(100):
        p = torch.sigmoid(design @ w)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hessian, design.T @ (p - y))
        w = w - step
        if float(step.abs().max()) < 1e-10:
            break
    a, b = float(w[0]), float(w[1])
    if not b < 0:
        raise RuntimeError("the calibration's BLER does not fall as the information rises")
    return BlerCurve(mi50=-a / b, width=-1 / b)
