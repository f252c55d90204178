"""5G NR transport-block decoders: Sionna's stock belief propagation and a layered min-sum that is fast on CPUs.

Sionna's ``TBDecoder`` runs ``LDPC5GDecoder``, a flooding decoder written for
any parity-check matrix: each of its 20 iterations gathers the messages into
``[batch, num_checks, max_check_degree]`` tensors padded to the largest check
degree and evaluates boxplus-phi (logs and exps) on every slot. On this
project's 2-core CPU that decodes 0.01-0.05 Mbit/s of information bits.

:class:`LayeredMinSumDecoder` decodes the same pruned 5G graph with layered
offset min-sum. The ``Z`` check rows lifted from one base-graph row touch
disjoint variables, so they form a layer that is updated at once, and each
layer already sees the a-posteriori LLRs the layers before it refined: layered
decoding converges in about half the iterations of flooding. Min-sum needs
only the two smallest magnitudes of a check (no transcendental functions), a
codeword leaves the batch as soon as its syndrome is zero (and a waiting one
takes its place), and every tensor keeps the batch innermost so gathers move
contiguous rows. The offset (``beta = 0.5``) recovers what min-sum loses to
boxplus: with 16 iterations its 10 % BLER point is within 0.1 dB of the stock
decoder's for QPSK, 16-QAM and 64-QAM codes, and it decodes 20-70x faster
(about 0.5-2 Mbit/s at 10 % BLER and 1.5-5 Mbit/s 2 dB above it, measured on
a shared, loaded 2-core machine; see :func:`bench_decoders`).

Decoders are named in :data:`TB_DECODERS`; :func:`tb_decoder` builds one for a
``TBEncoder``; :func:`bench_decoders` measures their throughput and BLER on AWGN.
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch
from sionna.phy import Block
from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
from sionna.phy.nr import TBDecoder, TBEncoder

# Known zeros (the filler bits of 5G shortening) as an LLR no channel LLR reaches (those are clipped at
# llr_max), so they never set a check's smallest magnitude while the decoder is still uncertain.
_KNOWN_BIT_LLR = 1e4
# Added to the magnitude at a check's minimum so that the second-smallest one can be read with amin.
_EXCLUDED = 1e30


def _layer_update(app: torch.Tensor, c2v: torch.Tensor, index: torch.Tensor, offset: float, one: torch.Tensor) -> None:
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
    # The edge at the minimum gets the second minimum, every other edge the minimum.
    torch.mul(torch.addcmul(min1, at_min, min2 - min1), edge_sign, out=c2v)
    app.index_copy_(0, index, v2c.add_(c2v).view(-1, app.shape[1]))


class LayeredMinSumDecoder(Block):
    r"""Layered offset min-sum decoder of a 5G NR LDPC code, a drop-in for Sionna's ``LDPC5GDecoder``.

    Takes and returns what ``LDPC5GDecoder(encoder, hard_out=True,
    return_infobits=True)`` does, on the same graph: Sionna's rate recovery
    (punctured first ``2Z`` systematic bits and unsent parity bits at LLR 0,
    filler bits known) and its pruned parity-check matrix. One iteration updates
    every layer (the ``Z`` rows lifted from one base-graph row) once, in order.
    After each iteration the codewords whose hard decisions satisfy every check
    are done and leave the batch; the rest go on up to ``num_iter`` iterations.

    :param encoder: the code's ``LDPC5GEncoder``
    :param num_iter: iterations at most (16 matches the BLER of Sionna's 20 flooding iterations)
    :param offset: offset subtracted from every check-to-variable magnitude
    :param llr_max: channel LLRs are clipped to +-``llr_max`` (Sionna's default)
    :param max_messages: on a CPU, check-to-variable messages held at once by one thread, i.e.
        codewords decoded side by side times edges (``None``: all codewords at once, as on a GPU).
        About 4M keeps a layer's tensors in cache yet amortises the per-op overhead (~110
        codewords of 3840 information bits, ~1000 of 300); more codewords queue and enter as
        others finish.

    :input llr: [..., n], float. Channel logits log p(b=1)/p(b=0) of the
        rate-matched codeword bits (Sionna's sign, as its ``Demapper`` outputs).
    :output: [..., k], float 0/1. Hard decisions of the information bits.

    >>> encoder = LDPC5GEncoder(k=100, n=200)
    >>> decoder = LayeredMinSumDecoder(encoder)
    >>> u_hat = decoder(llr)  # llr [batch, 200] -> u_hat [batch, 100]
    """

    def __init__(
        self,
        encoder: LDPC5GEncoder,
        num_iter: int = 16,
        offset: float = 0.5,
        llr_max: float = 20.0,
        max_messages: int | None = 2**22,
        precision=None,
        device=None,
    ):
        super().__init__(precision=precision, device=device)
        if num_iter < 1:
            raise ValueError(f"num_iter must be at least 1, not {num_iter}")
        self.encoder = encoder
        self.num_iter = num_iter
        self.offset = float(offset)
        self.llr_max = float(llr_max)
        self.max_messages = max_messages
        # Sionna's stock decoder prunes the degree-1 parity bits that rate matching never sends (and
        # their checks, which carry nothing); its pruned matrix is the graph decoded here.
        pcm = sp.csr_matrix(LDPC5GDecoder(encoder, num_iter=0, device=self.device).pcm, dtype=np.float32)
        pcm.sort_indices()
        self.num_vns = pcm.shape[1]
        layers, edge_vn, start = [], [], 0
        for first_row in range(0, pcm.shape[0], encoder.z):
            rows = pcm[first_row : first_row + encoder.z]
            degrees = np.diff(rows.indptr)
            if np.any(degrees != degrees[0]):
                raise ValueError(f"rows {first_row}.. of the lifted 5G parity-check matrix differ in degree")
            degree, num_rows = int(degrees[0]), rows.shape[0]
            # Sorted columns put each row's edges in base-graph column order, the same for all Z rows.
            edge_vn.append(rows.indices.reshape(num_rows, degree).T.reshape(-1))
            layers.append((start, degree, num_rows))
            start += degree * num_rows
        self._layers = layers
        self.num_edges = start
        self.register_buffer("_one", torch.ones((), dtype=self.dtype, device=self.device), persistent=False)
        self.register_buffer("_edge_vn", torch.from_numpy(np.concatenate(edge_vn)).long().to(self.device))
        coo = pcm.tocoo()
        self.register_buffer(
            "_pcm",
            torch.sparse_coo_tensor(
                torch.from_numpy(np.vstack([coo.row, coo.col])).long(),
                torch.from_numpy(coo.data).to(self.dtype),
                coo.shape,
                check_invariants=True,
            )
            .coalesce()
            .to(self.device),
        )

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] != self.encoder.n:
            raise ValueError(f"the last dimension of llr must be n={self.encoder.n}, not {input_shape[-1]}")

    def _rate_recover(self, llr: torch.Tensor) -> torch.Tensor:
        """[batch, n] channel logits -> [num_vns, batch] LLRs log p(0)/p(1) of the pruned mother codeword.

        The non-HARQ branch of ``LDPC5GDecoder.call``, with the batch moved innermost.
        """
        enc = self.encoder
        batch = llr.shape[0]
        if enc.num_bits_per_symbol is not None:
            llr = llr[:, enc.out_int_inv]
        # The circular buffer without the first 2Z and the fillers, cut at the pruned length (or padded
        # with zeros for parity bits rate matching did not send).
        buffer = torch.nn.functional.pad(llr, (0, enc.n_cb_comp - (enc.n_ldpc - self.num_vns) - enc.n))
        num_sent_systematic = enc.k - 2 * enc.z
        logits = torch.cat(
            [
                llr.new_zeros(batch, 2 * enc.z),
                buffer[:, :num_sent_systematic].clamp(-self.llr_max, self.llr_max),
                llr.new_full((batch, enc.k_filler), -_KNOWN_BIT_LLR),
                buffer[:, num_sent_systematic:].clamp(-self.llr_max, self.llr_max),
            ],
            dim=1,
        )
        return logits.T.neg().contiguous()

    def _hard(self, app: torch.Tensor) -> torch.Tensor:
        """LLRs -> bits, 1.0 where app < 0 (float ops throughout: no bool cast)."""
        return app.neg().sign_().clamp_(min=0.0)

    def _satisfied(self, app: torch.Tensor) -> torch.Tensor:
        """[num_vns, width] LLRs -> [width] bool, True where the hard decisions satisfy every check."""
        return torch.sparse.mm(self._pcm, self._hard(app)).remainder_(2.0).amax(0) < 0.5

    @torch.no_grad()
    def call(self, llr: torch.Tensor) -> torch.Tensor:
        if llr.device.type != "cpu":
            return self._decode_llr(llr)
        # On CPU the ops run with one intra-op thread, and torch's intra-op threads decode shares of the
        # codewords in Python threads instead. A layer's ops are small (tens to hundreds of kB), and with
        # intra-op threads each of the hundreds of ops per iteration is a fork/join: on a loaded 2-core
        # machine a join that waits for a descheduled thread made decoding 100x slower. Codewords are
        # decoded independently, so the split does not change any bit.
        intra_op_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._decode_llr(llr, intra_op_threads)
        finally:
            torch.set_num_threads(intra_op_threads)

    def _decode_llr(self, llr: torch.Tensor, num_threads: int = 1) -> torch.Tensor:
        """[..., n] channel logits -> [..., k] information bits, on ``num_threads`` Python threads."""
        leading_shape = llr.shape[:-1]
        channel = self._rate_recover(llr.reshape(-1, self.encoder.n).to(self.dtype))
        # No more threads than working sets: on small codes the ops are so short that two threads only
        # take turns at the GIL (measured slower than one).
        num_working_sets = -(-channel.shape[1] // self._width(channel.shape[1]))
        shares = channel.tensor_split(min(num_threads, num_working_sets), dim=1)
        if len(shares) == 1:
            info_bits = self._decode(channel)
        else:
            with ThreadPoolExecutor(len(shares)) as pool:
                info_bits = torch.cat(list(pool.map(self._decode_single_threaded, shares)), dim=1)
        return info_bits.T.reshape(*leading_shape, self.encoder.k)

    def _decode_single_threaded(self, channel: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(1)  # a new thread starts with the process default
        return self._decode(channel)

    def _width(self, num_codewords: int) -> int:
        """Codewords decoded side by side by one thread."""
        if self.max_messages is None or self._edge_vn.device.type != "cpu":
            return num_codewords
        return max(1, min(num_codewords, self.max_messages // self.num_edges))

    def _decode(self, channel: torch.Tensor) -> torch.Tensor:
        """[num_vns, num_codewords] LLRs log p(0)/p(1) -> [k, num_codewords] float 0/1 information bits."""
        num_codewords = channel.shape[1]
        info_bits = channel.new_empty(self.encoder.k, num_codewords)
        # A working set of `width` codewords is decoded side by side; a codeword that is done (zero
        # syndrome or num_iter iterations) hands its column to the next waiting one, so the set stays
        # wide (cheap per codeword) until the queue is empty, and only then shrinks.
        width = self._width(num_codewords)
        app = channel[:, :width].clone()
        c2v = channel.new_zeros(self.num_edges, width)
        codeword = torch.arange(width, device=channel.device)  # codeword decoded in each column
        iterations = torch.zeros(width, dtype=torch.int32, device=channel.device)
        num_entered = width
        while codeword.numel():
            for start, degree, num_rows in self._layers:
                end = start + degree * num_rows
                c2v_layer = c2v[start:end].view(degree, num_rows * codeword.numel())
                _layer_update(app, c2v_layer, self._edge_vn[start:end], self.offset, self._one)
            iterations += 1
            done = self._satisfied(app) | (iterations >= self.num_iter)
            if not bool(done.any()):
                continue
            columns = done.nonzero().squeeze(1)
            info_bits[:, codeword[columns]] = self._hard(app[: self.encoder.k].index_select(1, columns))
            num_refilled = min(columns.numel(), num_codewords - num_entered)
            if num_refilled:
                refilled = columns[:num_refilled]
                entering = torch.arange(num_entered, num_entered + num_refilled, device=channel.device)
                app[:, refilled] = channel[:, entering]
                c2v.index_fill_(1, refilled, 0.0)
                codeword[refilled], iterations[refilled] = entering, 0
                num_entered += num_refilled
                done[refilled] = False
            if num_refilled < columns.numel():
                kept = (~done).nonzero().squeeze(1)
                app, c2v = app.index_select(1, kept), c2v.index_select(1, kept)
                codeword, iterations = codeword[kept], iterations[kept]
        return info_bits


class LayeredTBDecoder(TBDecoder):
    r"""Sionna's ``TBDecoder`` with :class:`LayeredMinSumDecoder` as its LDPC stage.

    ``TBDecoder`` hard-wires ``LDPC5GDecoder``; replacing only its ``_decoder``
    keeps Sionna's descrambling, code-block deinterleaving, CRC checks and
    output shapes, so this block has exactly ``TBDecoder``'s call contract.

    :param encoder: the ``TBEncoder`` of the transport blocks
    :param num_iter: layered min-sum iterations at most
    :param offset: min-sum offset

    :input llr: [..., encoder.n], float. Channel logits log p(b=1)/p(b=0) (Sionna's sign).
    :output bits: [..., encoder.tb_size], float 0/1. Decoded information bits.
    :output crc_ok: [...], bool. Transport-block CRC passed.

    >>> decoder = LayeredTBDecoder(encoder)
    >>> bits, crc_ok = decoder(llr)
    """

    def __init__(self, encoder: TBEncoder, num_iter: int = 16, offset: float = 0.5, precision=None, device=None):
        super().__init__(encoder, num_bp_iter=num_iter, precision=precision, device=device)
        self._decoder = LayeredMinSumDecoder(
            encoder.ldpc_encoder, num_iter=num_iter, offset=offset, precision=precision, device=device
        )


def _sionna_bp(encoder: TBEncoder, num_iter: int = 20, precision=None, device=None) -> Block:
    """Sionna's stock decoder: flooding BP with boxplus-phi check updates, the BLER reference."""
    return TBDecoder(encoder, num_bp_iter=num_iter, cn_update="boxplus-phi", precision=precision, device=device)


def _layered_oms(encoder: TBEncoder, num_iter: int = 16, precision=None, device=None) -> Block:
    """Layered offset min-sum (beta = 0.5) with early stopping.

    16 layered iterations put the SNR of 10 % BLER within 0.1 dB of ``sionna-bp`` (20 flooding
    iterations) for QPSK 0.3, 16-QAM 0.5 and 64-QAM 0.75 codes (measured on the same noise); with
    20 the layered decoder is up to 0.2 dB better than the reference instead.
    """
    return LayeredTBDecoder(encoder, num_iter=num_iter, precision=precision, device=device)


# name -> constructor(encoder, num_iter=..., precision=None, device=None) of a block with TBDecoder's contract
TB_DECODERS = {
    "sionna-bp": _sionna_bp,
    "layered-oms": _layered_oms,
}
DEFAULT_TB_DECODER = "layered-oms"


def tb_decoder(encoder: TBEncoder, algorithm: str = DEFAULT_TB_DECODER, num_iter: int | None = None) -> Block:
    r"""The transport-block decoder ``algorithm`` of :data:`TB_DECODERS` for ``encoder``'s blocks.

    :param encoder: the ``TBEncoder`` of the transport blocks (its precision and device are used)
    :param algorithm: a name in :data:`TB_DECODERS`
    :param num_iter: decoder iterations at most; ``None`` for the algorithm's default
        (20 for ``sionna-bp``, 16 for ``layered-oms``)

    The block takes llr [..., encoder.n], float (Sionna's sign, log p(1)/p(0)), and
    returns bits [..., encoder.tb_size], float 0/1, and crc_ok [...], bool.

    >>> decoder = tb_decoder(encoder)
    >>> bits, crc_ok = decoder(llr)
    """
    if algorithm not in TB_DECODERS:
        raise KeyError(f"ldpc decoder {algorithm!r} is not one of {', '.join(TB_DECODERS)}")
    iterations = {} if num_iter is None else {"num_iter": num_iter}
    return TB_DECODERS[algorithm](encoder, precision=encoder.precision, device=encoder.device, **iterations)


# (bits per symbol, target code rate): QPSK at a low rate, 16-QAM at about 1/2, 64-QAM at about 3/4
BENCH_MODULATIONS = ((2, 0.3), (4, 0.5), (6, 0.75))


def bench_decoders(
    algorithms: tuple[str, ...] = tuple(TB_DECODERS),
    modulations: tuple[tuple[int, float], ...] = BENCH_MODULATIONS,
    num_prbs: int = 4,
    snr_offsets_db: tuple[float, ...] = (0.0, 2.0),
    batch_size: int = 256,
    repeats: int = 3,
    search_batch_size: int = 256,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    r"""Information-bit throughput and BLER of TB decoders on AWGN, as a JSON-able dict.

    For each (bits per symbol, target code rate) the TB of one slot on
    ``num_prbs`` PRBs (14 OFDM symbols, 24 pilot resource elements per PRB,
    Sionna's ``calculate_tb_size``) is sent through ``Mapper -> AWGN ->
    Demapper("app")``. The SNR (Es/N0) at which the default decoder has 10 %
    BLER is found by bisection on ``search_batch_size`` TBs (the same noise at
    every step); at that SNR plus each of ``snr_offsets_db``, every decoder
    decodes the same ``batch_size`` TBs. Throughput is ``batch_size * tb_size``
    over the median wall-clock decoding time of ``repeats`` runs after a
    warm-up run; ``cpu_info_mbit_per_s`` uses the process CPU time instead (all
    threads), i.e. the throughput per busy core, which is what stays
    comparable when other processes share the cores. BLER counts TBs with any
    wrong bit.

    :output: dict with the setup (threads, load average, sizes) and
        ``"results"``: per modulation, its TB size and ``"points"``, one per
        (SNR, algorithm) with ``snr_db``, ``algorithm``, ``bler``,
        ``info_mbit_per_s``, ``cpu_info_mbit_per_s`` and ``decode_s``.

    >>> report = bench_decoders(batch_size=32, repeats=1)
    >>> report["results"][1]["points"][0]["info_mbit_per_s"]
    """
    from sionna.phy.nr.utils import calculate_tb_size

    unknown = [a for a in algorithms if a not in TB_DECODERS]
    if unknown:
        raise KeyError(f"ldpc decoders {unknown} are not among {', '.join(TB_DECODERS)}")
    num_data_res = num_prbs * (12 * 14 - 24)
    results = []
    for bits_per_symbol, code_rate in modulations:
        tb_size, _, num_cbs, *_ = calculate_tb_size(
            bits_per_symbol,
            code_rate,
            num_prbs=num_prbs,
            num_ofdm_symbols=14,
            num_dmrs_per_prb=24,
            device=device,
        )
        tb_size, num_coded_bits = int(tb_size), num_data_res * bits_per_symbol
        encoder = TBEncoder(tb_size, num_coded_bits, code_rate, bits_per_symbol, device=device)
        # Bracket: the Shannon limit of the rate and 6 dB above (5G codes reach 10 % BLER about 2 dB above it).
        shannon_db = 10 * np.log10(2 ** (code_rate * bits_per_symbol) - 1)
        search = AwgnTransportBlocks(encoder, bits_per_symbol, search_batch_size, seed)
        snr_db_bler10 = round(snr_db_at_bler(tb_decoder(encoder), search, 0.1, shannon_db, shannon_db + 6.0), 2)
        tbs = AwgnTransportBlocks(encoder, bits_per_symbol, batch_size, seed)

        points = []
        for offset_db in snr_offsets_db:
            snr_db = snr_db_bler10 + offset_db
            llr = tbs.llr(snr_db)
            for algorithm in algorithms:
                decoder = tb_decoder(encoder, algorithm)
                wall_s, cpu_s, bits_hat = _timed(decoder, llr, repeats, device)
                info_bits = batch_size * tb_size
                points.append(
                    {
                        "snr_db": round(snr_db, 2),
                        "algorithm": algorithm,
                        "bler": tbs.bler(bits_hat),
                        "info_mbit_per_s": info_bits / wall_s / 1e6,
                        "cpu_info_mbit_per_s": info_bits / cpu_s / 1e6,
                        "decode_s": wall_s,
                    }
                )
        results.append(
            {
                "bits_per_symbol": bits_per_symbol,
                "target_code_rate": code_rate,
                "num_prbs": num_prbs,
                "tb_size": tb_size,
                "num_coded_bits": num_coded_bits,
                "num_code_blocks": int(num_cbs),
                "ldpc_k_n": [encoder.ldpc_encoder.k, encoder.ldpc_encoder.n],
                "snr_db_bler10": snr_db_bler10,
                "points": points,
            }
        )
    return {
        "benchmark": "5G NR TB decoders on AWGN",
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "default_decoder": DEFAULT_TB_DECODER,
        "snr_db_bler10": f"Es/N0 of 10 % BLER of {DEFAULT_TB_DECODER!r} ({search_batch_size} TBs, 0.01 dB)",
        "chain": "TBEncoder -> Mapper(qam) -> AWGN -> Demapper(app) -> decoder",
        "batch_size": batch_size,
        "repeats": repeats,
        "results": results,
    }


class AwgnTransportBlocks:
    r"""Random TBs through ``encoder`` and a QAM ``Mapper``, plus one draw of AWGN: channel LLRs at any SNR.

    The bits, the symbols and a unit-variance noise draw (Sionna's ``AWGN`` with ``seed``) are made once;
    :meth:`llr` scales the noise to ``snr_db`` (Es/N0) and runs Sionna's ``Demapper("app")``. Decoders
    and SNRs are thus compared on the same draws, and a decoder's BLER falls monotonically with SNR.

    :param encoder: the ``TBEncoder`` of the TBs
    :param bits_per_symbol: QAM order the encoder was built for
    :param num_tbs: TBs drawn
    :param seed: seed of the bits and the noise

    >>> tbs = AwgnTransportBlocks(encoder, 4, num_tbs=256, seed=0)
    >>> bits_hat, crc_ok = decoder(tbs.llr(6.5))
    >>> bler = tbs.bler(bits_hat)
    """

    def __init__(self, encoder: TBEncoder, bits_per_symbol: int, num_tbs: int, seed: int):
        from sionna.phy import config
        from sionna.phy.channel import AWGN
        from sionna.phy.mapping import Demapper, Mapper

        device = encoder.device
        tb_size = encoder.tb_size - encoder.k_padding  # the target size TBEncoder takes and TBDecoder returns
        generator = torch.Generator().manual_seed(seed)
        self.bits = torch.randint(0, 2, (num_tbs, tb_size), generator=generator).float().to(device)
        self._symbols = Mapper("qam", bits_per_symbol, device=device)(encoder(self.bits))
        config.seed = seed  # Sionna's AWGN draws from its own generator
        self._noise = AWGN(device=device)(torch.zeros_like(self._symbols), torch.tensor(1.0, device=device))
        self._demapper = Demapper("app", "qam", bits_per_symbol, device=device)

    def llr(self, snr_db: float) -> torch.Tensor:
        """[num_tbs, encoder.n], float: channel logits log p(b=1)/p(b=0) (Sionna's sign) at ``snr_db``."""
        no = torch.tensor(10 ** (-snr_db / 10), device=self._symbols.device)
        return self._demapper(self._symbols + no.sqrt() * self._noise, no)

    def bler(self, bits_hat: torch.Tensor) -> float:
        """Fraction of TBs with any wrong bit in ``bits_hat`` [num_tbs, tb_size]."""
        return float((bits_hat != self.bits).any(-1).float().mean())


def snr_db_at_bler(
    decoder: Block, tbs: AwgnTransportBlocks, bler: float, low_db: float, high_db: float, resolution_db: float = 0.01
) -> float:
    """Es/N0 at which ``decoder`` has BLER ``bler`` on ``tbs``, by bisection in [``low_db``, ``high_db``].

    :output: the midpoint of the last bracket, in dB
    """
    while high_db - low_db > resolution_db:
        middle_db = (low_db + high_db) / 2
        if tbs.bler(decoder(tbs.llr(middle_db))[0]) > bler:
            low_db = middle_db
        else:
            high_db = middle_db
    return (low_db + high_db) / 2


def _timed(decoder: Block, llr: torch.Tensor, repeats: int, device: str) -> tuple[float, float, torch.Tensor]:
    """Median wall-clock and process-CPU seconds of ``decoder(llr)`` over ``repeats`` runs after a warm-up."""

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()

    bits_hat, _ = decoder(llr)  # warm-up: lazy builds
    walls, cpus = [], []
    for _ in range(repeats):
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        bits_hat, _ = decoder(llr)
        sync()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), bits_hat
