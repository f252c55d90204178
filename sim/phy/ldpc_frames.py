"""Frame-parallel layered offset min-sum: :class:`LayeredMinSumDecoder`'s algorithm on ``F`` codewords at once.

Scratch version (float32 only) for measuring.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from sim.phy.ldpc import LayeredMinSumDecoder
from sim.phy.threads import map_chunks


def _make_float_kernel(frames: int):
    F = frames

    @numba.njit(nogil=True, fastmath=False, boundscheck=False)
    def kernel(channel, bits, row_info, edge_var, num_iter, offset, app, c2v, tmp, min1, min2, sign, at_min):
        """channel [F, num_vns] float32 (rows past the batch may be anything); bits [F, k] float32 out.

        row_info [num_rows_total, 2] int64: first edge, degree of each lifted row, layer after layer.
        edge_var [num_edges] int64: variable of each edge, row after row.
        """
        offset = np.float32(offset)
        zero, one = np.float32(0.0), np.float32(1.0)
        inf = np.float32(np.inf)
        num_vns = channel.shape[1]
        for v in range(num_vns):
            for f in range(F):
                app[np.uintp(v), np.uintp(f)] = channel[np.uintp(f), np.uintp(v)]
        c2v[:, :] = zero
        num_rows = row_info.shape[0]
        for _ in range(num_iter):
            for i in range(num_rows):
                first = row_info[i, 0]
                degree = row_info[i, 1]
                for f in range(F):
                    min1[f] = inf
                    min2[f] = inf
                    sign[f] = one
                    at_min[f] = zero
                for e in range(degree):
                    var = np.uintp(edge_var[first + e])
                    edge = np.uintp(first + e)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = app[var, f] - c2v[edge, f]
                        tmp[np.uintp(e), f] = v
                        magnitude = abs(v)
                        smallest = min1[f]
                        at_min[f] = ef if magnitude < smallest else at_min[f]
                        min2[f] = smallest if magnitude < smallest else (magnitude if magnitude < min2[f] else min2[f])
                        min1[f] = magnitude if magnitude < smallest else smallest
                        sign[f] *= math.copysign(one, v)
                for f0 in range(F):
                    f = np.uintp(f0)
                    min1[f] = max(min1[f] - offset, zero) * sign[f]
                    min2[f] = max(min2[f] - offset, zero) * sign[f]
                for e in range(degree):
                    var = np.uintp(edge_var[first + e])
                    edge = np.uintp(first + e)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = tmp[np.uintp(e), f]
                        message = (min2[f] if at_min[f] == ef else min1[f]) * math.copysign(one, v)
                        c2v[edge, f] = message
                        app[var, f] = v + message
        for f in range(bits.shape[0]):
            for i in range(bits.shape[1]):
                bits[f, i] = one if app[i, f] < zero else zero

    return kernel


class FrameParallelMinSumDecoder(LayeredMinSumDecoder):
    """LayeredMinSumDecoder (no early stop) decoding ``frames`` codewords at once, frames innermost."""

    def __init__(self, encoder, num_iter: int = 10, offset: float = 0.5, frames: int = 16, **kwargs):
        super().__init__(encoder, num_iter=num_iter, offset=offset, early_stop=False, implementation="numba", **kwargs)
        self.frames = frames
        z = encoder.z
        row_info, edge_var, first = [], [], 0
        lifted_edge = 0
        for start, degree, rows in self._layers:
            column = self._edge_column[lifted_edge : lifted_edge + degree]
            shift = self._edge_shift[lifted_edge : lifted_edge + degree]
            for r in range(rows):
                row_info.append((first, degree))
                edge_var.append(column + (shift + r) % z)
                first += degree
            lifted_edge += degree
        self._row_info = np.array(row_info, dtype=np.int64)
        self._edge_var = np.concatenate(edge_var).astype(np.int64)
        self._kernel = _make_float_kernel(frames)

    def _decode_numba(self, channel: torch.Tensor) -> torch.Tensor:
        channel = channel.float().contiguous().numpy()
        batch, num_vns = channel.shape
        k = self.encoder.k
        F = self.frames
        bits = np.empty((batch, k), dtype=np.float32)
        max_degree = int(self._row_info[:, 1].max())

        def decode(part: slice) -> None:
            app = np.empty((num_vns, F), np.float32)
            c2v = np.empty((self._edge_var.shape[0], F), np.float32)
            tmp = np.empty((max_degree, F), np.float32)
            scratch = [np.empty(F, np.float32) for _ in range(4)]
            block = channel[part]
            if block.shape[0] < F:
                block = np.concatenate([block, np.zeros((F - block.shape[0], num_vns), np.float32)])
            out = np.empty((F, k), np.float32)
            self._kernel(block, out, self._row_info, self._edge_var, self.num_iter, self.offset, app, c2v, tmp, *scratch)
            bits[part] = out[: bits[part].shape[0]]

        map_chunks(decode, batch, F)
        self.iterations = torch.full((batch,), self.num_iter, dtype=torch.int64)
        return torch.from_numpy(bits).to(self.dtype)


def _make_unrolled_kernel(frames: int):
    """Same as _make_float_kernel, with each frame's state an explicit scalar (for LLVM's SLP vectoriser)."""
    F = frames
    L = range(F)

    def lines(template, indent):
        return "".join(" " * indent + template.format(f=f) + "\n" for f in L)

    src = "def kernel(channel, bits, row_info, edge_var, num_iter, offset, app, c2v, tmp, min1_, min2_, sign_, at_min_):\n"
    src += "    offset = np.float32(offset)\n    zero, one = np.float32(0.0), np.float32(1.0)\n    inf = np.float32(np.inf)\n"
    src += "    num_vns = channel.shape[1]\n"
    src += "    for v in range(num_vns):\n        for f in range(F):\n            app[np.uintp(v), np.uintp(f)] = channel[np.uintp(f), np.uintp(v)]\n"
    src += "    c2v[:, :] = zero\n    num_rows = row_info.shape[0]\n"
    src += "    for _ in range(num_iter):\n        for i in range(num_rows):\n"
    src += "            first = row_info[i, 0]\n            degree = row_info[i, 1]\n"
    src += lines("m1_{f} = inf; m2_{f} = inf; s_{f} = one; am_{f} = zero", 12)
    src += "            for e in range(degree):\n"
    src += "                var = np.uintp(edge_var[first + e]); edge = np.uintp(first + e); ef = np.float32(e); ue = np.uintp(e)\n"
    src += lines("a_{f} = app[var, np.uintp({f})]", 16)
    src += lines("c_{f} = c2v[edge, np.uintp({f})]", 16)
    src += lines("v_{f} = a_{f} - c_{f}", 16)
    src += lines("tmp[ue, np.uintp({f})] = v_{f}", 16)
    src += lines("mag_{f} = abs(v_{f})", 16)
    src += lines("lt_{f} = mag_{f} < m1_{f}", 16)
    src += lines("am_{f} = ef if lt_{f} else am_{f}", 16)
    src += lines("m2_{f} = m1_{f} if lt_{f} else (mag_{f} if mag_{f} < m2_{f} else m2_{f})", 16)
    src += lines("m1_{f} = mag_{f} if lt_{f} else m1_{f}", 16)
    src += lines("s_{f} *= math.copysign(one, v_{f})", 16)
    src += lines("m1_{f} = max(m1_{f} - offset, zero) * s_{f}", 12)
    src += lines("m2_{f} = max(m2_{f} - offset, zero) * s_{f}", 12)
    src += "            for e in range(degree):\n"
    src += "                var = np.uintp(edge_var[first + e]); edge = np.uintp(first + e); ef = np.float32(e); ue = np.uintp(e)\n"
    src += lines("v_{f} = tmp[ue, np.uintp({f})]", 16)
    src += lines("msg_{f} = (m2_{f} if am_{f} == ef else m1_{f}) * math.copysign(one, v_{f})", 16)
    src += lines("c2v[edge, np.uintp({f})] = msg_{f}", 16)
    src += lines("app[var, np.uintp({f})] = v_{f} + msg_{f}", 16)
    src += "    for f in range(bits.shape[0]):\n        for i in range(bits.shape[1]):\n"
    src += "            bits[f, i] = one if app[i, f] < zero else zero\n"
    namespace = {"np": np, "math": math, "F": F}
    exec(compile(src, f"<frame-parallel kernel F={F}>", "exec"), namespace)
    return numba.njit(nogil=True, boundscheck=False)(namespace["kernel"])


class UnrolledDecoder(FrameParallelMinSumDecoder):
    def __init__(self, encoder, num_iter=10, offset=0.5, frames=16, **kw):
        super().__init__(encoder, num_iter=num_iter, offset=offset, frames=frames, **kw)
        self._kernel = _make_unrolled_kernel(frames)


def _make_state_kernel(frames: int):
    """Inner loops over frames touch app, c2v, tmp and one state array indexed with the constant F."""
    F = frames

    @numba.njit(nogil=True, boundscheck=False)
    def kernel(channel, bits, row_info, edge_var, num_iter, offset, app, c2v, tmp, st, _a, _b, _c):
        offset = np.float32(offset)
        zero, one = np.float32(0.0), np.float32(1.0)
        inf = np.float32(np.inf)
        num_vns = channel.shape[1]
        for v in range(num_vns):
            for f in range(F):
                app[np.uintp(v * F + f)] = channel[np.uintp(f), np.uintp(v)]
        c2v[:] = zero
        num_rows = row_info.shape[0]
        for _ in range(num_iter):
            for i in range(num_rows):
                first = row_info[i, 0]
                degree = row_info[i, 1]
                for f0 in range(F):
                    f = np.uintp(f0)
                    st[f] = inf
                    st[F + f] = inf
                    st[2 * F + f] = one
                    st[3 * F + f] = zero
                for e in range(degree):
                    var = np.uintp(edge_var[first + e] * F)
                    edge = np.uintp((first + e) * F)
                    te = np.uintp(e * F)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = app[var + f] - c2v[edge + f]
                        tmp[te + f] = v
                        magnitude = abs(v)
                        smallest = st[f]
                        second = st[F + f]
                        lt = magnitude < smallest
                        st[3 * F + f] = ef if lt else st[3 * F + f]
                        st[F + f] = smallest if lt else (magnitude if magnitude < second else second)
                        st[f] = magnitude if lt else smallest
                        st[2 * F + f] *= math.copysign(one, v)
                for f0 in range(F):
                    f = np.uintp(f0)
                    st[f] = max(st[f] - offset, zero) * st[2 * F + f]
                    st[F + f] = max(st[F + f] - offset, zero) * st[2 * F + f]
                for e in range(degree):
                    var = np.uintp(edge_var[first + e] * F)
                    edge = np.uintp((first + e) * F)
                    te = np.uintp(e * F)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = tmp[te + f]
                        message = (st[F + f] if st[3 * F + f] == ef else st[f]) * math.copysign(one, v)
                        c2v[edge + f] = message
                        app[var + f] = v + message
        for f in range(bits.shape[0]):
            for i in range(bits.shape[1]):
                bits[f, i] = one if app[i * F + f] < zero else zero

    return kernel


class StateDecoder(FrameParallelMinSumDecoder):
    def __init__(self, encoder, num_iter=10, offset=0.5, frames=16, **kw):
        super().__init__(encoder, num_iter=num_iter, offset=offset, frames=frames, **kw)
        self._kernel = _make_state_kernel(frames)

    def _decode_numba(self, channel):
        channel = channel.float().contiguous().numpy()
        batch, num_vns = channel.shape
        k, F = self.encoder.k, self.frames
        bits = np.empty((batch, k), dtype=np.float32)
        max_degree = int(self._row_info[:, 1].max())

        def decode(part):
            app = np.empty(num_vns * F, np.float32)
            c2v = np.empty(self._edge_var.shape[0] * F, np.float32)
            tmp = np.empty(max_degree * F, np.float32)
            st = np.empty(4 * F, np.float32)
            block = channel[part]
            if block.shape[0] < F:
                block = np.concatenate([block, np.zeros((F - block.shape[0], num_vns), np.float32)])
            out = np.empty((F, k), np.float32)
            self._kernel(block, out, self._row_info, self._edge_var, self.num_iter, self.offset, app, c2v, tmp, st, st, st, st)
            bits[part] = out[: bits[part].shape[0]]

        map_chunks(decode, batch, F)
        self.iterations = torch.full((batch,), self.num_iter, dtype=torch.int64)
        return torch.from_numpy(bits).to(self.dtype)


def _make_merged_kernel(frames: int):
    """v2c messages stored in c2v in place (as ldpc.py does); branch-free min1/min2."""
    F = frames

    @numba.njit(nogil=True, boundscheck=False)
    def kernel(channel, bits, row_info, edge_var, num_iter, offset, app, c2v, tmp, st, _a, _b, _c):
        offset = np.float32(offset)
        zero, one = np.float32(0.0), np.float32(1.0)
        inf = np.float32(np.inf)
        num_vns = channel.shape[1]
        for v in range(num_vns):
            for f in range(F):
                app[np.uintp(v * F + f)] = channel[np.uintp(f), np.uintp(v)]
        c2v[:] = zero
        num_rows = row_info.shape[0]
        for _ in range(num_iter):
            for i in range(num_rows):
                first = row_info[i, 0]
                degree = row_info[i, 1]
                for f0 in range(F):
                    f = np.uintp(f0)
                    st[f] = inf
                    st[F + f] = inf
                    st[2 * F + f] = one
                    st[3 * F + f] = zero
                for e in range(degree):
                    var = np.uintp(edge_var[first + e] * F)
                    edge = np.uintp((first + e) * F)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = app[var + f] - c2v[edge + f]
                        c2v[edge + f] = v
                        magnitude = abs(v)
                        smallest = st[f]
                        second = st[F + f]
                        st[3 * F + f] = ef if magnitude < smallest else st[3 * F + f]
                        big = magnitude if magnitude > smallest else smallest
                        st[F + f] = big if big < second else second
                        st[f] = magnitude if magnitude < smallest else smallest
                        st[2 * F + f] *= math.copysign(one, v)
                for f0 in range(F):
                    f = np.uintp(f0)
                    st[f] = max(st[f] - offset, zero) * st[2 * F + f]
                    st[F + f] = max(st[F + f] - offset, zero) * st[2 * F + f]
                for e in range(degree):
                    var = np.uintp(edge_var[first + e] * F)
                    edge = np.uintp((first + e) * F)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = c2v[edge + f]
                        message = (st[F + f] if st[3 * F + f] == ef else st[f]) * math.copysign(one, v)
                        c2v[edge + f] = message
                        app[var + f] = v + message
        for f in range(bits.shape[0]):
            for i in range(bits.shape[1]):
                bits[f, i] = one if app[i * F + f] < zero else zero

    return kernel


class MergedDecoder(StateDecoder):
    def __init__(self, encoder, num_iter=10, offset=0.5, frames=16, **kw):
        super().__init__(encoder, num_iter=num_iter, offset=offset, frames=frames, **kw)
        self._kernel = _make_merged_kernel(frames)


from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def _stack_empty(typingctx, size, dtype):
    """Pointer to ``size`` (a compile-time constant) uninitialised elements of ``dtype`` on the stack."""
    element = dtype.dtype

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(element), size=args[0])

    return types.CPointer(element)(size, dtype), codegen


def _make_stack_kernel(frames: int, tmp_in_c2v: bool = True):
    F = frames

    @numba.njit(nogil=True, boundscheck=False)
    def kernel(channel, bits, row_info, edge_var, num_iter, offset, app, c2v, tmp_, st_, _a, _b, _c):
        offset = np.float32(offset)
        zero, one = np.float32(0.0), np.float32(1.0)
        inf = np.float32(np.inf)
        min1 = numba.carray(_stack_empty(F, np.float32), (F,))
        min2 = numba.carray(_stack_empty(F, np.float32), (F,))
        sign = numba.carray(_stack_empty(F, np.float32), (F,))
        at_min = numba.carray(_stack_empty(F, np.float32), (F,))
        num_vns = channel.shape[1]
        for v in range(num_vns):
            for f in range(F):
                app[np.uintp(v * F + f)] = channel[np.uintp(f), np.uintp(v)]
        c2v[:] = zero
        num_rows = row_info.shape[0]
        for _ in range(num_iter):
            for i in range(num_rows):
                first = row_info[i, 0]
                degree = row_info[i, 1]
                for f0 in range(F):
                    f = np.uintp(f0)
                    min1[f] = inf
                    min2[f] = inf
                    sign[f] = one
                    at_min[f] = zero
                for e in range(degree):
                    var = np.uintp(edge_var[first + e] * F)
                    edge = np.uintp((first + e) * F)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = app[var + f] - c2v[edge + f]
                        c2v[edge + f] = v
                        magnitude = abs(v)
                        smallest = min1[f]
                        second = min2[f]
                        at_min[f] = ef if magnitude < smallest else at_min[f]
                        big = magnitude if magnitude > smallest else smallest
                        min2[f] = big if big < second else second
                        min1[f] = magnitude if magnitude < smallest else smallest
                        sign[f] *= math.copysign(one, v)
                for f0 in range(F):
                    f = np.uintp(f0)
                    min1[f] = max(min1[f] - offset, zero) * sign[f]
                    min2[f] = max(min2[f] - offset, zero) * sign[f]
                for e in range(degree):
                    var = np.uintp(edge_var[first + e] * F)
                    edge = np.uintp((first + e) * F)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = c2v[edge + f]
                        message = (min2[f] if at_min[f] == ef else min1[f]) * math.copysign(one, v)
                        c2v[edge + f] = message
                        app[var + f] = v + message
        for f in range(bits.shape[0]):
            for i in range(bits.shape[1]):
                bits[f, i] = one if app[i * F + f] < zero else zero

    return kernel


class StackDecoder(StateDecoder):
    def __init__(self, encoder, num_iter=10, offset=0.5, frames=16, **kw):
        super().__init__(encoder, num_iter=num_iter, offset=offset, frames=frames, **kw)
        self._kernel = _make_stack_kernel(frames)


def _make_runtime_kernel(frames: int):
    FMAX = frames

    @numba.njit(nogil=True, boundscheck=False)
    def kernel(channel, bits, row_info, edge_var, num_iter, offset, app, c2v, tmp_, st_, _a, _b, _c):
        F = app.shape[0] // channel.shape[1]
        offset = np.float32(offset)
        zero, one = np.float32(0.0), np.float32(1.0)
        inf = np.float32(np.inf)
        min1 = numba.carray(_stack_empty(FMAX, np.float32), (FMAX,))
        min2 = numba.carray(_stack_empty(FMAX, np.float32), (FMAX,))
        sign = numba.carray(_stack_empty(FMAX, np.float32), (FMAX,))
        at_min = numba.carray(_stack_empty(FMAX, np.float32), (FMAX,))
        num_vns = channel.shape[1]
        for v in range(num_vns):
            for f in range(F):
                app[np.uintp(v * F + f)] = channel[np.uintp(f), np.uintp(v)]
        c2v[:] = zero
        num_rows = row_info.shape[0]
        for _ in range(num_iter):
            for i in range(num_rows):
                first = row_info[i, 0]
                degree = row_info[i, 1]
                for f0 in range(F):
                    f = np.uintp(f0)
                    min1[f] = inf
                    min2[f] = inf
                    sign[f] = one
                    at_min[f] = zero
                for e in range(degree):
                    var = np.uintp(edge_var[first + e] * F)
                    edge = np.uintp((first + e) * F)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = app[var + f] - c2v[edge + f]
                        c2v[edge + f] = v
                        magnitude = abs(v)
                        smallest = min1[f]
                        second = min2[f]
                        at_min[f] = ef if magnitude < smallest else at_min[f]
                        big = magnitude if magnitude > smallest else smallest
                        min2[f] = big if big < second else second
                        min1[f] = magnitude if magnitude < smallest else smallest
                        sign[f] *= math.copysign(one, v)
                for f0 in range(F):
                    f = np.uintp(f0)
                    min1[f] = max(min1[f] - offset, zero) * sign[f]
                    min2[f] = max(min2[f] - offset, zero) * sign[f]
                for e in range(degree):
                    var = np.uintp(edge_var[first + e] * F)
                    edge = np.uintp((first + e) * F)
                    ef = np.float32(e)
                    for f0 in range(F):
                        f = np.uintp(f0)
                        v = c2v[edge + f]
                        small, second = min1[f], min2[f]
                        message = (second if at_min[f] == ef else small) * math.copysign(one, v)
                        c2v[edge + f] = message
                        app[var + f] = v + message
        for f in range(bits.shape[0]):
            for i in range(bits.shape[1]):
                bits[f, i] = one if app[i * F + f] < zero else zero

    return kernel



class RuntimeDecoder(StateDecoder):
    def __init__(self, encoder, num_iter=10, offset=0.5, frames=16, **kw):
        super().__init__(encoder, num_iter=num_iter, offset=offset, frames=frames, **kw)
        self._kernel = _make_runtime_kernel(frames)


def _make_slp_kernel(frames: int):
    """Each frame's state an explicit scalar (branch-free), compiled with LLVM's SLP vectoriser on."""
    F = frames
    L = range(F)

    def lines(template, indent):
        return "".join(" " * indent + template.format(f=f) + "\n" for f in L)

    src = "def kernel(channel, bits, row_info, edge_var, num_iter, offset, app, c2v, tmp, st_, _a, _b, _c):\n"
    src += "    offset = np.float32(offset)\n    zero, one = np.float32(0.0), np.float32(1.0)\n    inf = np.float32(np.inf)\n"
    src += "    num_vns = channel.shape[1]\n"
    src += "    for v in range(num_vns):\n        for f in range(F):\n            app[np.uintp(v * F + f)] = channel[np.uintp(f), np.uintp(v)]\n"
    src += "    c2v[:] = zero\n    num_rows = row_info.shape[0]\n"
    src += "    for _ in range(num_iter):\n        for i in range(num_rows):\n"
    src += "            first = row_info[i, 0]\n            degree = row_info[i, 1]\n"
    src += lines("m1_{f} = inf; m2_{f} = inf; s_{f} = one; am_{f} = zero", 12)
    src += "            for e in range(degree):\n"
    src += "                var = np.uintp(edge_var[first + e] * F); edge = np.uintp((first + e) * F); ef = np.float32(e)\n"
    src += lines("a_{f} = app[var + np.uintp({f})]", 16)
    src += lines("c_{f} = c2v[edge + np.uintp({f})]", 16)
    src += lines("v_{f} = a_{f} - c_{f}", 16)
    src += lines("c2v[edge + np.uintp({f})] = v_{f}", 16)
    src += lines("mag_{f} = abs(v_{f})", 16)
    src += lines("am_{f} = ef if mag_{f} < m1_{f} else am_{f}", 16)
    src += lines("big_{f} = mag_{f} if mag_{f} > m1_{f} else m1_{f}", 16)
    src += lines("m2_{f} = big_{f} if big_{f} < m2_{f} else m2_{f}", 16)
    src += lines("m1_{f} = mag_{f} if mag_{f} < m1_{f} else m1_{f}", 16)
    src += lines("s_{f} = s_{f} * math.copysign(one, v_{f})", 16)
    src += lines("m1_{f} = max(m1_{f} - offset, zero) * s_{f}", 12)
    src += lines("m2_{f} = max(m2_{f} - offset, zero) * s_{f}", 12)
    src += "            for e in range(degree):\n"
    src += "                var = np.uintp(edge_var[first + e] * F); edge = np.uintp((first + e) * F); ef = np.float32(e)\n"
    src += lines("v_{f} = c2v[edge + np.uintp({f})]", 16)
    src += lines("msg_{f} = (m2_{f} if am_{f} == ef else m1_{f}) * math.copysign(one, v_{f})", 16)
    src += lines("c2v[edge + np.uintp({f})] = msg_{f}", 16)
    src += lines("app[var + np.uintp({f})] = v_{f} + msg_{f}", 16)
    src += "    for f in range(bits.shape[0]):\n        for i in range(bits.shape[1]):\n"
    src += "            bits[f, i] = one if app[i * F + f] < zero else zero\n"
    namespace = {"np": np, "math": math, "F": F}
    exec(compile(src, f"<frame-parallel kernel F={F}>", "exec"), namespace)
    jitted = numba.njit(nogil=True, boundscheck=False)(namespace["kernel"])
    sig = (numba.float32[:, ::1], numba.float32[:, ::1], numba.int64[:, ::1], numba.int64[::1], numba.int64, numba.float64,
           numba.float32[::1], numba.float32[::1], numba.float32[::1], numba.float32[::1], numba.float32[::1], numba.float32[::1], numba.float32[::1])
    saved = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        jitted.compile(sig)
    finally:
        numba.config.SLP_VECTORIZE = saved
    jitted.disable_compile()
    return jitted


class SlpDecoder(StateDecoder):
    def __init__(self, encoder, num_iter=10, offset=0.5, frames=16, **kw):
        super().__init__(encoder, num_iter=num_iter, offset=offset, frames=frames, **kw)
        self._kernel = _make_slp_kernel(frames)


_APP_MAX = 16383
_C2V_MAX = 8191


def _make_int16_kernel(frames: int):
    """int16 messages: app in [-A, A], c2v in [-C, C] (A + C < 2^15, so app - c2v fits int16)."""
    F = frames
    L = range(F)

    def lines(template, indent):
        return "".join(" " * indent + template.format(f=f) + "\n" for f in L)

    src = "def kernel(channel, bits, row_info, edge_var, num_iter, offset, app, c2v):\n"
    src += "    zero = np.int16(0)\n    offset = np.int16(offset)\n"
    src += "    num_vns = channel.shape[1]\n"
    src += "    for v in range(num_vns):\n        for f in range(F):\n            app[np.uintp(v * F + f)] = channel[np.uintp(f), np.uintp(v)]\n"
    src += "    c2v[:] = zero\n    num_rows = row_info.shape[0]\n"
    src += "    for _ in range(num_iter):\n        for i in range(num_rows):\n"
    src += "            first = row_info[i, 0]\n            degree = row_info[i, 1]\n"
    src += lines("m1_{f} = np.int16(32767); m2_{f} = np.int16(32767); s_{f} = np.int16(0); am_{f} = np.int16(0)", 12)
    src += "            for e in range(degree):\n"
    src += "                var = np.uintp(edge_var[np.uintp(first + e)] * F); edge = np.uintp((first + e) * F); ei = np.int16(e)\n"
    src += lines("v_{f} = np.int16(app[var + np.uintp({f})] - c2v[edge + np.uintp({f})])", 16)
    src += lines("c2v[edge + np.uintp({f})] = v_{f}", 16)
    src += lines("mag_{f} = np.int16(abs(v_{f}))", 16)
    src += lines("am_{f} = ei if mag_{f} < m1_{f} else am_{f}", 16)
    src += lines("big_{f} = mag_{f} if mag_{f} > m1_{f} else m1_{f}", 16)
    src += lines("m2_{f} = big_{f} if big_{f} < m2_{f} else m2_{f}", 16)
    src += lines("m1_{f} = mag_{f} if mag_{f} < m1_{f} else m1_{f}", 16)
    src += lines("s_{f} = np.int16(s_{f} ^ v_{f})", 16)
    src += lines("m1_{f} = np.int16(min(max(np.int16(m1_{f} - offset), zero), C2V_MAX))", 12)
    src += lines("m2_{f} = np.int16(min(max(np.int16(m2_{f} - offset), zero), C2V_MAX))", 12)
    src += "            for e in range(degree):\n"
    src += "                var = np.uintp(edge_var[np.uintp(first + e)] * F); edge = np.uintp((first + e) * F); ei = np.int16(e)\n"
    src += lines("v_{f} = c2v[edge + np.uintp({f})]", 16)
    src += lines("mm_{f} = m2_{f} if am_{f} == ei else m1_{f}", 16)
    src += lines("msg_{f} = np.int16(-mm_{f} if np.int16(s_{f} ^ v_{f}) < 0 else mm_{f})", 16)
    src += lines("c2v[edge + np.uintp({f})] = msg_{f}", 16)
    src += lines("app[var + np.uintp({f})] = np.int16(min(max(np.int16(v_{f} + msg_{f}), -APP_MAX), APP_MAX))", 16)
    src += "    for f in range(bits.shape[0]):\n        for i in range(bits.shape[1]):\n"
    src += "            bits[f, i] = np.float32(1.0) if app[i * F + f] < 0 else np.float32(0.0)\n"
    namespace = {"np": np, "math": math, "F": F, "APP_MAX": np.int16(_APP_MAX), "C2V_MAX": np.int16(_C2V_MAX)}
    exec(compile(src, f"<frame-parallel int16 kernel F={F}>", "exec"), namespace)
    jitted = numba.njit(nogil=True, boundscheck=False)(namespace["kernel"])
    sig = (numba.int16[:, ::1], numba.float32[:, ::1], numba.int64[:, ::1], numba.int64[::1], numba.int64, numba.int64,
           numba.int16[::1], numba.int16[::1])
    saved = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        jitted.compile(sig)
    finally:
        numba.config.SLP_VECTORIZE = saved
    jitted.disable_compile()
    return jitted


class Int16Decoder(StateDecoder):
    def __init__(self, encoder, num_iter=10, offset=0.5, frames=16, scale=8.0, **kw):
        super().__init__(encoder, num_iter=num_iter, offset=offset, frames=frames, **kw)
        self.scale = scale
        self._kernel = _make_int16_kernel(frames)

    def _decode_numba(self, channel):
        channel = channel.float().contiguous().numpy()
        q = np.clip(np.rint(channel * self.scale), -_APP_MAX, _APP_MAX).astype(np.int16)
        batch, num_vns = q.shape
        k, F = self.encoder.k, self.frames
        bits = np.empty((batch, k), dtype=np.float32)
        off = int(round(self.offset * self.scale))

        def decode(part):
            app = np.empty(num_vns * F, np.int16)
            c2v = np.empty(self._edge_var.shape[0] * F, np.int16)
            block = q[part]
            if block.shape[0] < F:
                block = np.concatenate([block, np.zeros((F - block.shape[0], num_vns), np.int16)])
            out = np.empty((F, k), np.float32)
            self._kernel(block, out, self._row_info, self._edge_var, self.num_iter, off, app, c2v)
            bits[part] = out[: bits[part].shape[0]]

        map_chunks(decode, batch, F)
        self.iterations = torch.full((batch,), self.num_iter, dtype=torch.int64)
        return torch.from_numpy(bits).to(self.dtype)
