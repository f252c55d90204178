"""The arithmetic of layered offset min-sum on a 5G LDPC graph, in two implementations that give the same bits.

- :func:`layered_oms_kernel` (numba, CPU): every codeword in turn, in cache; each lifted edge's ``Z`` rows are
  a run of consecutive variables (a cyclic shift) that LLVM vectorises.
- :func:`layer_update` (torch, any device): one layer of checks updated for all codewords at once.

:class:`~sim.phy.ldpc.LayeredMinSumDecoder` lays out the graph (layers, cyclic shifts, edge order) and calls
them; the algorithm is described there.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

# Added to the magnitude at a check's minimum so that the second-smallest one can be read with amin.
_EXCLUDED = 1e30

# The CPU kernel below is hand-written because no maintained library decodes batches of 5G LDPC codewords fast on
# a CPU: Sionna's decoder is a flooding BP (see sim/phy/ldpc.py), and the PyPI `ldpc` package's C++ BpDecoder takes
# one codeword per call and was measured slower than the torch layered decoder. Its loops index with unsigned
# integers: numba then drops its negative-index wrap-around, whose branch otherwise keeps LLVM from vectorising them.


@numba.njit(cache=True, nogil=True)
def _minimum_pass(app, c2v, min1, min2, sign, at_min, app_start, edge_start, first_row, end_row, edge):
    """Rows [first_row, end_row) of one lifted edge: variable-to-check messages (into ``c2v``), and each row's
    smallest and second-smallest magnitude, the edge at the smallest, and the product of signs so far."""
    one = np.float32(1.0)
    for i in range(first_row, end_row):
        row = np.uintp(i)
        v = app[np.uintp(app_start + i)] - c2v[np.uintp(edge_start + i)]
        c2v[np.uintp(edge_start + i)] = v
        magnitude = abs(v)
        smallest = min1[row]
        at_min[row] = edge if magnitude < smallest else at_min[row]
        min2[row] = smallest if magnitude < smallest else (magnitude if magnitude < min2[row] else min2[row])
        min1[row] = magnitude if magnitude < smallest else smallest
        # copysign, not a comparison: a zero message (punctured bits) counts as +1, as in Sionna
        sign[row] *= math.copysign(one, v)


@numba.njit(cache=True, nogil=True)
def _message_pass(app, c2v, min1, min2, at_min, app_start, edge_start, first_row, end_row, edge):
    """Rows [first_row, end_row) of one lifted edge: new check-to-variable messages (``min1``/``min2`` hold the
    rows' offset magnitudes times their sign products) and the variables' a-posteriori LLRs."""
    one = np.float32(1.0)
    for i in range(first_row, end_row):
        row = np.uintp(i)
        v = c2v[np.uintp(edge_start + i)]
        # The edge at the minimum gets the second minimum, every other edge the minimum; the product of the
        # other edges' signs is the row's product times the edge's own.
        message = (min2[row] if at_min[row] == edge else min1[row]) * math.copysign(one, v)
        c2v[np.uintp(edge_start + i)] = message
        app[np.uintp(app_start + i)] = v + message


@numba.njit(cache=True, nogil=True)
def _parity_pass(app, parity, app_start, first_row, end_row):
    """Rows [first_row, end_row) of one lifted edge: multiply each row's parity (+1 even, -1 odd) by its variable's
    hard decision (-1 where app < 0)."""
    one = np.float32(1.0)
    for i in range(first_row, end_row):
        parity[np.uintp(i)] *= math.copysign(one, app[np.uintp(app_start + i)] + np.float32(0.0))


@numba.njit(cache=True, nogil=True)
def layered_oms_kernel(channel, bits, iterations, layers, edge_column, edge_shift, z, offset, num_iter, early_stop):
    """Layered offset min-sum of every codeword of ``channel``, one after the other.

    :param channel: [num_codewords, num_vns], float32. LLRs log p(0)/p(1) of the pruned mother codeword.
    :param bits: [num_codewords, k], float32. Output: hard decisions (0/1) of the first ``k`` variables.
    :param iterations: [num_codewords], int64. Output: the iterations each codeword ran.
    :param layers: [num_layers, 3], int64. First edge, degree and rows of each layer; layer ``l``'s edge ``e``
        of row ``r`` is message ``layers[l, 0] + e * layers[l, 2] + r``.
    :param edge_column: [num_lifted_edges], int64. First variable of each lifted edge's ``Z``-column block,
        layer by layer, edge by edge.
    :param edge_shift: [num_lifted_edges], int64. Its cyclic shift: row ``r`` touches variable
        ``edge_column + (edge_shift + r) % z``.
    :param early_stop: a codeword stops after the first iteration whose hard decisions satisfy every check;
        otherwise every codeword runs ``num_iter`` iterations (the work Sionna's decoder does)
    """
    offset = np.float32(offset)
    zero, one = np.float32(0.0), np.float32(1.0)
    num_edges = layers[-1, 0] + layers[-1, 1] * layers[-1, 2]
    max_rows = layers[:, 2].max()
    c2v = np.empty(num_edges, np.float32)
    min1, min2 = np.empty(max_rows, np.float32), np.empty(max_rows, np.float32)
    sign, at_min = np.empty(max_rows, np.float32), np.empty(max_rows, np.float32)
    for codeword in range(channel.shape[0]):
        app = channel[codeword].copy()
        c2v[:] = zero
        iterations[codeword] = num_iter
        for iteration in range(num_iter):
            lifted_edge = 0
            for layer in range(layers.shape[0]):
                start, degree, rows = layers[layer, 0], layers[layer, 1], layers[layer, 2]
                min1[:rows] = np.inf
                min2[:rows] = np.inf
                sign[:rows] = one
                at_min[:rows] = zero
                # Each lifted edge's rows touch two runs of consecutive variables: before and after the wrap.
                for e in range(degree):
                    column, shift = edge_column[lifted_edge + e], edge_shift[lifted_edge + e]
                    wrap = min(rows, z - shift)
                    edge_start, edge = start + e * rows, np.float32(e)
                    _minimum_pass(app, c2v, min1, min2, sign, at_min, column + shift, edge_start, 0, wrap, edge)
                    _minimum_pass(app, c2v, min1, min2, sign, at_min, column + shift - z, edge_start, wrap, rows, edge)
                for i in range(rows):
                    row = np.uintp(i)
                    min1[row] = max(min1[row] - offset, zero) * sign[row]
                    min2[row] = max(min2[row] - offset, zero) * sign[row]
                for e in range(degree):
                    column, shift = edge_column[lifted_edge + e], edge_shift[lifted_edge + e]
                    wrap = min(rows, z - shift)
                    edge_start, edge = start + e * rows, np.float32(e)
                    _message_pass(app, c2v, min1, min2, at_min, column + shift, edge_start, 0, wrap, edge)
                    _message_pass(app, c2v, min1, min2, at_min, column + shift - z, edge_start, wrap, rows, edge)
                lifted_edge += degree
            if early_stop and _syndrome_is_zero(app, layers, edge_column, edge_shift, z, sign):
                iterations[codeword] = iteration + 1
                break
        for i in range(bits.shape[1]):
            bits[codeword, i] = one if app[i] < zero else zero


@numba.njit(cache=True, nogil=True)
def _syndrome_is_zero(app, layers, edge_column, edge_shift, z, parity):
    """True where the hard decisions of ``app`` satisfy every check (``parity`` is scratch, [max_rows])."""
    lifted_edge = 0
    for layer in range(layers.shape[0]):
        degree, rows = layers[layer, 1], layers[layer, 2]
        parity[:rows] = np.float32(1.0)
        for e in range(degree):
            column, shift = edge_column[lifted_edge + e], edge_shift[lifted_edge + e]
            wrap = min(rows, z - shift)
            _parity_pass(app, parity, column + shift, 0, wrap)
            _parity_pass(app, parity, column + shift - z, wrap, rows)
        lifted_edge += degree
        if parity[:rows].min() < 0:
            return False
    return True


def layer_update(app: torch.Tensor, c2v: torch.Tensor, index: torch.Tensor, offset: float, one: torch.Tensor) -> None:
    r"""Offset min-sum update of one layer of checks, in place.

    :param app: [num_vns, batch_size], float. A-posteriori LLRs log p(0)/p(1);
        the rows of this layer's variables are updated.
    :param c2v: [degree, num_rows * batch_size], float. This layer's check-to-variable
        messages (edge ``e`` of every row, then row, then codeword); overwritten with the new ones.
    :param index: [degree * num_rows], int64. Variable of each edge, in the order of ``c2v``.
    :param offset: ``beta`` subtracted from every outgoing magnitude (floored at zero).
    :param one: [], float. The constant 1 on ``app``'s device (a fresh one per call costs a fill).
    """
    degree = c2v.shape[0]
    # Every op below is a float op: on CPU, comparisons to bool and bool-to-float casts cost as much as
    # ten float passes, and the decoder's time goes to the ~16 passes over [degree, rows * batch] here.
    v2c = app.index_select(0, index).view(degree, -1).sub_(c2v)
    magnitude = v2c.abs()
    min1 = magnitude.amin(0)
    at_min = torch.rsub(torch.sub(magnitude, min1).sign_(), 1.0)  # 1 at the smallest magnitude (every tie)
    min2 = torch.add(magnitude, at_min, alpha=_EXCLUDED).amin(0)
    # A minimum reached twice is also the second minimum: excluding one edge leaves the other.
    min2 = torch.where(at_min.sum(0) > 1.5, min1, min2)
    # The outgoing sign is the product of the other edges' signs: the row's product times the edge's own.
    # copysign rather than sign so that a zero message (punctured bits) counts as +1, as in Sionna.
    edge_sign = torch.copysign(one, v2c)
    row_sign = edge_sign.prod(0)
    min1 = (min1 - offset).clamp_(min=0.0).mul_(row_sign)
    min2 = (min2 - offset).clamp_(min=0.0).mul_(row_sign)
    # The edge at the minimum gets the second minimum, every other edge the minimum. lerp returns its end
    # points exactly at weights 0 and 1 (min1 + (min2 - min1) may not round back to min2), so the messages are
    # the numba kernel's to the bit.
    torch.mul(torch.lerp(min1, min2, at_min), edge_sign, out=c2v)
    app.index_copy_(0, index, v2c.add_(c2v).view(-1, app.shape[1]))
