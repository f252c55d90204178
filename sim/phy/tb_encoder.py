"""The TB encoder of the digital link: Sionna's ``TBEncoder`` with an LDPC stage that computes only the
parity bits rate matching sends (numba XORs over bytes on a CPU). Same bits as Sionna's, faster."""

from __future__ import annotations

import numba
import numpy as np
import torch
from sionna.phy.fec.ldpc import LDPC5GEncoder
from sionna.phy.nr import TBEncoder
from torch import nn


# Hand-written because Sionna's gather-and-sum encoding builds a float [batch, rows, row degree] tensor per
# parity part; XOR over bytes needs no such tensor. Same indices, same bits.
@numba.njit(cache=True, nogil=True)
def _xor_gather(indices, bits, out):
    """out[b, r] = XOR of bits[b, indices[r, :]] (an index equal to bits.shape[1] - 1 reads the zero pad)."""
    for b in range(bits.shape[0]):
        for r in range(indices.shape[0]):
            acc = np.uint8(0)
            for c in range(indices.shape[1]):
                acc ^= bits[b, indices[r, c]]
            out[b, r] = acc


@numba.njit(cache=True, nogil=True)
def _ldpc5g_parity(s, pcm_a, pcm_b_inv, pcm_c1, pcm_c2, num_core, num_rest):
    """Sionna's ``LDPC5GEncoder._encode_fast`` on bytes: [batch, k_ldpc] 0/1 -> [batch, k_ldpc + 4Z + rest]."""
    batch, k = s.shape
    padded = np.zeros((batch, k + 1), np.uint8)  # one zero column: the gather tables' padding index
    padded[:, :k] = s
    p_a = np.zeros((batch, num_core + 1), np.uint8)
    _xor_gather(pcm_a, padded, p_a[:, :num_core])
    core = np.zeros((batch, num_core + 1), np.uint8)
    _xor_gather(pcm_b_inv, p_a, core[:, :num_core])
    rest = np.empty((batch, num_rest), np.uint8)
    rest_from_core = np.empty((batch, num_rest), np.uint8)
    _xor_gather(pcm_c1, padded, rest)
    _xor_gather(pcm_c2, core, rest_from_core)
    out = np.empty((batch, k + num_core + num_rest), np.uint8)
    out[:, :k] = s
    out[:, k : k + num_core] = core[:, :num_core]
    out[:, k + num_core :] = rest ^ rest_from_core
    return out


class SentParityLDPC5GEncoder(LDPC5GEncoder):
    r"""Sionna's ``LDPC5GEncoder`` that computes only the parity bits rate matching sends.

    Sionna encodes the whole mother codeword (``68 Z`` or ``52 Z`` bits) and
    rate matching (redundancy version 0) then keeps the ``n`` bits after the
    first ``2 Z``: at code rates above about 1/3 most of the last parity part
    is computed to be dropped. This encoder gathers only the rows of that part
    that are sent; the rest of the mother codeword is left zero, which rate
    matching never reads. On a CPU the gathers are XORs over bytes in numba.
    Same arguments and outputs as ``LDPC5GEncoder``; ``rv`` (the other
    redundancy versions) is not supported.

    :input bits: [..., k], float 0/1.
    :output: [..., n], float 0/1. The rate-matched codeword bits.
    """

    def __init__(self, k: int, n: int, **kwargs):
        super().__init__(k, n, **kwargs)
        # The mother codeword is [k_ldpc systematic, 4Z parity, the rest]; rate matching reads it up to
        # 2Z + n bits past the fillers.
        num_sent_rest = min(max(self.n - self.k - 2 * self.z, 0), self._pcm_c1_ind.shape[0])
        self._pcm_c1_ind = self._pcm_c1_ind[:num_sent_rest]
        self._pcm_c2_ind = self._pcm_c2_ind[:num_sent_rest]

    def _encode_fast(self, s: torch.Tensor) -> torch.Tensor:
        if s.device.type == "cpu":
            gathers = (self._pcm_a_ind, self._pcm_b_inv_ind, self._pcm_c1_ind, self._pcm_c2_ind)
            tables = [t.cpu().numpy() for t in gathers]
            bits = _ldpc5g_parity(
                s.to(torch.uint8).numpy(), *tables, self._pcm_a_ind.shape[0], self._pcm_c1_ind.shape[0]
            )
            c = torch.from_numpy(bits).to(s.dtype)[..., None]
        else:
            c = super()._encode_fast(s)  # [batch, k_ldpc + 4Z + num_sent_rest, 1]
        return nn.functional.pad(c, (0, 0, 0, self._n_ldpc - c.shape[1]))

    def call(self, bits: torch.Tensor, /, *, rv=None) -> torch.Tensor:
        if rv is not None:
            raise ValueError("SentParityLDPC5GEncoder computes the bits of redundancy version 0 only; rv must be None")
        return super().call(bits)


class TransportBlockEncoder(TBEncoder):
    r"""Sionna's ``TBEncoder`` with :class:`SentParityLDPC5GEncoder` as its LDPC stage: the same bits, faster.

    Same arguments, inputs and outputs as ``TBEncoder``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._encoder = SentParityLDPC5GEncoder(
            self._cb_size,
            self._cw_lengths_max,
            num_bits_per_symbol=1,  # as TBEncoder: its own interleaver spans the code blocks
            precision=self._encoder.precision,
            device=self._encoder.device,
        )
