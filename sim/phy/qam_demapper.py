"""The digital link's APP demapper: Sionna's QAM demapper computed as two PAMs, in numba on a CPU."""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from sionna.phy import Block
from sionna.phy.mapping import Constellation, SymbolLogits2LLRs

from sim.phy.threads import map_chunks

# Symbols one CPU thread demaps at a time.
_SYMBOLS_PER_TASK = 1 << 15


# Hand-written because Sionna's SymbolLogits2LLRs (logsumexp over masked [..., points] tensors) was the largest
# cost of the digital link on a CPU, ahead of decoding; this loop needs one exp per point and one log per bit.
@numba.njit(cache=True, nogil=True)
def _pam_app_llrs(y, no, pam, out):
    """APP LLRs of both dimensions of square-QAM symbols, each a Gray-labelled PAM.

    :param y: [num_symbols, 2], float32. Real and imaginary parts of the unbiased symbol estimates.
    :param no: [num_symbols], float32. Their noise variances (complex).
    :param pam: [num_points], float64. The PAM's points in Sionna's label order (label = index, MSB first),
        in units where a dimension's noise variance is ``no``: ``sqrt(2)`` times the QAM's per-dimension points.
    :param out: [num_symbols, 2 * log2(num_points)], float32. LLRs log p(1)/p(0); bit ``j`` of the real part
        at ``2 j``, of the imaginary part at ``2 j + 1`` (Sionna's QAM labelling).
    """
    num_points = pam.shape[0]
    bits = out.shape[1] // 2
    logits = np.empty(num_points, np.float64)
    weight = np.empty(num_points, np.float64)
    root2 = math.sqrt(2.0)
    for s in range(y.shape[0]):
        scale = -0.5 / max(np.float64(no[s]), 1.1754943508222875e-38)  # Sionna clamps no at float32's tiny
        for d in range(2):
            r = np.float64(y[s, d]) * root2
            if num_points == 2:  # BPSK per dimension: the LLR is the difference of the two logits
                out[s, d] = ((r - pam[1]) * (r - pam[1]) - (r - pam[0]) * (r - pam[0])) * scale
                continue
            largest = -np.inf
            for p in range(num_points):
                logits[p] = (r - pam[p]) * (r - pam[p]) * scale
                largest = max(largest, logits[p])
            for p in range(num_points):
                weight[p] = math.exp(logits[p] - largest)
            for j in range(bits):
                shift = bits - 1 - j
                sum0, sum1 = 0.0, 0.0
                for p in range(num_points):
                    if (p >> shift) & 1:
                        sum1 += weight[p]
                    else:
                        sum0 += weight[p]
                if sum0 > 1e-300 and sum1 > 1e-300:
                    out[s, 2 * j + d] = math.log(sum1 / sum0)
                    continue
                # One side underflowed against the overall largest logit: scale each side by its own largest.
                max0, max1 = -np.inf, -np.inf
                for p in range(num_points):
                    if (p >> shift) & 1:
                        max1 = max(max1, logits[p])
                    else:
                        max0 = max(max0, logits[p])
                sum0, sum1 = 0.0, 0.0
                for p in range(num_points):
                    if (p >> shift) & 1:
                        sum1 += math.exp(logits[p] - max1)
                    else:
                        sum0 += math.exp(logits[p] - max0)
                out[s, 2 * j + d] = (max1 + math.log(sum1)) - (max0 + math.log(sum0))


class QamDemapper(Block):
    r"""Sionna's ``Demapper("app", "qam", num_bits_per_symbol)``, one PAM per dimension.

    Sionna's QAM labels the real part with the even bits and the imaginary part
    with the odd bits, each a Gray-labelled PAM, and the noise is circular, so
    the APP LLRs of the square QAM factor exactly into those of two PAMs
    (points ``sqrt(2)`` times larger, noise variance ``no / 2`` per dimension):
    ``2 * 2**(m/2)`` real distances per symbol instead of Sionna's ``2**m``
    complex ones. CPU tensors outside autograd go through a numba loop (one
    exp per point, one log per bit, float64 inside, complex64 symbols in) on
    ``torch.get_num_threads()`` threads; others through Sionna's
    ``SymbolLogits2LLRs`` on each dimension. Both give Sionna's LLRs within
    1e-3 (tested); on a CPU the numba loop is 2x (16-QAM) to 5x (256-QAM)
    faster than the torch one, which is itself 3.5x to 16x faster than Sionna's.

    :param num_bits_per_symbol: bits per QAM symbol (even)

    :input y: [..., n], complex. Received symbols (unbiased estimates).
    :input no: [..., n], float (or broadcastable). Noise variance of each symbol.
    :output: [..., n * num_bits_per_symbol], float. LLRs log p(b=1)/p(b=0) (Sionna's sign).

    >>> demapper = QamDemapper(4)
    >>> llr = demapper(y, no)  # y [64, 3456] -> llr [64, 13824]
    """

    def __init__(self, num_bits_per_symbol: int, precision=None, device=None):
        super().__init__(precision=precision, device=device)
        if num_bits_per_symbol % 2:
            raise ValueError(f"a square QAM has an even number of bits per symbol, not {num_bits_per_symbol}")
        bits_per_dimension = num_bits_per_symbol // 2
        pam = Constellation("pam", bits_per_dimension, precision=precision, device=device).points.real
        self.register_buffer("_pam", pam, persistent=False)
        self._pam_numpy = pam.detach().cpu().double().numpy()
        self._logits_to_llrs = SymbolLogits2LLRs("app", bits_per_dimension, precision=precision, device=device)

    def call(self, y: torch.Tensor, no: torch.Tensor) -> torch.Tensor:
        differentiable = torch.is_grad_enabled() and (y.requires_grad or getattr(no, "requires_grad", False))
        if y.device.type == "cpu" and not differentiable:
            return self._call_numba(y, no)
        return self._call_torch(y, no)

    def _call_numba(self, y: torch.Tensor, no: torch.Tensor) -> torch.Tensor:
        no = torch.as_tensor(no, device=y.device).broadcast_to(y.shape)
        symbols = torch.view_as_real(y.to(torch.complex64)).reshape(-1, 2).contiguous().numpy()
        variances = no.to(torch.float32).reshape(-1).contiguous().numpy()
        llr = np.empty((symbols.shape[0], 2 * (self._pam_numpy.shape[0].bit_length() - 1)), np.float32)

        def demap(part: slice) -> None:
            _pam_app_llrs(symbols[part], variances[part], self._pam_numpy, llr[part])

        map_chunks(demap, symbols.shape[0], _SYMBOLS_PER_TASK)
        return torch.from_numpy(llr).reshape(*y.shape[:-1], -1).to(self.dtype)

    def _call_torch(self, y: torch.Tensor, no: torch.Tensor) -> torch.Tensor:
        # [..., n, 2 (real, imaginary), num_points]: distances in units of the PAM's points
        distance = torch.view_as_real(y).mul(2**0.5).unsqueeze(-1) - self._pam
        no = torch.as_tensor(no, dtype=distance.dtype, device=distance.device).clamp_min(
            torch.finfo(distance.dtype).tiny
        )
        logits = distance.square_().mul_((-0.5 / no)[..., None, None])
        # [..., n, 2, bits_per_dimension] -> bits in the order b0 (real), b1 (imaginary), b2 (real), ...
        return self._logits_to_llrs(logits).transpose(-1, -2).flatten(-3)
