"""The LDPC decoders timed: TB decoders on QAM over AWGN (``tokensim bench --only decoders``), the decoder-only
Mbit/s per core at 10 % BLER, and the codewords both use (also the decoders' tests' measuring tools)."""

from __future__ import annotations

import time

import numpy as np
import torch
from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
from sionna.phy.nr import TBEncoder

from sim.bench.timing import BenchRun, timed
from sim.phy.ldpc import LayeredMinSumDecoder
from sim.phy.ldpc_frames import FrameParallelMinSumDecoder
from sim.phy.tb_decoders import DEFAULT_TB_DECODER, TB_DECODERS, tb_decoder
from sim.phy.threads import torch_threads

# (bits per symbol, target code rate): QPSK at a low rate, 16-QAM at about 1/2, 64-QAM at about 3/4
BENCH_MODULATIONS = ((2, 0.3), (4, 0.5), (6, 0.75))


def bench_decoders(
    run: BenchRun = BenchRun(),
    algorithms: tuple[str, ...] = tuple(TB_DECODERS),
    modulations: tuple[tuple[int, float], ...] = BENCH_MODULATIONS,
    num_prbs: int = 4,
    snr_offsets_db: tuple[float, ...] = (0.0, 2.0),
    batch_size: int = 256,
    search_batch_size: int = 256,
    device: str = "cpu",
) -> dict:
    r"""Information-bit throughput and BLER of TB decoders on AWGN, as a JSON-able dict.

    For each (bits per symbol, target code rate) the TB of one slot on
    ``num_prbs`` PRBs (14 OFDM symbols, 24 pilot resource elements per PRB,
    Sionna's ``calculate_tb_size``) is sent through ``Mapper -> AWGN ->
    Demapper("app")``. The SNR (Es/N0) at which the default decoder has 10 %
    BLER is found by bisection on ``search_batch_size`` TBs (the same noise at
    every step); at that SNR plus each of ``snr_offsets_db``, every decoder
    decodes the same ``batch_size`` TBs (bits and noise drawn with ``run.seed``).
    Throughput is ``batch_size * tb_size`` over the median wall-clock decoding
    time of ``run.repeats`` runs after a warm-up run; ``cpu_info_mbit_per_s`` uses the process CPU time instead (all
    threads), i.e. the throughput per busy core, which is what stays
    comparable when other processes share the cores. BLER counts TBs with any
    wrong bit.

    :output: dict with the setup (threads, load average, sizes) and
        ``"results"``: per modulation, its TB size and ``"points"``, one per
        (SNR, algorithm) with ``snr_db``, ``algorithm``, ``bler``,
        ``info_mbit_per_s``, ``cpu_info_mbit_per_s`` and ``decode_s``.

    >>> report = bench_decoders(BenchRun(repeats=1), batch_size=32)
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
        search = AwgnTransportBlocks(encoder, bits_per_symbol, search_batch_size, run.seed)
        default = tb_decoder(encoder)
        snr_db_bler10 = round(
            snr_db_at_bler(
                lambda snr, tbs=search, decoder=default: tbs.bler(decoder(tbs.llr(snr))[0]),
                0.1,
                shannon_db,
                shannon_db + 6.0,
            ),
            2,
        )
        tbs = AwgnTransportBlocks(encoder, bits_per_symbol, batch_size, run.seed)

        points = []
        for offset_db in snr_offsets_db:
            snr_db = snr_db_bler10 + offset_db
            llr = tbs.llr(snr_db)
            for algorithm in algorithms:
                decoder = tb_decoder(encoder, algorithm)
                wall_s, cpu_s, (bits_hat, _) = timed(decoder, (llr,), run.repeats, device)
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
        **run.header(device),
        "default_decoder": DEFAULT_TB_DECODER,
        "snr_db_bler10": f"Es/N0 of 10 % BLER of {DEFAULT_TB_DECODER!r} ({search_batch_size} TBs, 0.01 dB)",
        "chain": "TBEncoder -> Mapper(qam) -> AWGN -> Demapper(app) -> decoder",
        "batch_size": batch_size,
        "results": results,
    }


# Code rates of the decoder-only figure, on 5G base graph 1 at its largest lifting (k = 8448: Z = 384).
DECODER_ONLY_RATES = (1 / 3, 1 / 2, 2 / 3, 8 / 9)


def bench_decoder_only(
    run: BenchRun = BenchRun(),
    rates: tuple[float, ...] = DECODER_ONLY_RATES,
    k: int = 8448,
    num_iter: int = 10,
    target_bler: float = 0.1,
    batch_size: int = 512,
    search_batch_size: int = 200,
    reference_batch_size: int = 8,
) -> dict:
    r"""Decoder-only information throughput per core: 5G LDPC codewords of ``k`` bits, BPSK on AWGN.

    For each code rate the Eb/N0 at which :class:`LayeredMinSumDecoder` (``num_iter`` iterations, early
    stopping) has BLER ``target_bler`` is found by bisection on ``search_batch_size`` codewords (the same
    bits and noise at every step). At that Eb/N0 one thread decodes ``batch_size`` codewords: with early
    stopping, and without it (every codeword ``num_iter`` iterations, AFF3CT's and Sionna's convention).
    Sionna's ``LDPC5GDecoder`` with the same check rule, schedule and iterations (offset min-sum, layered,
    no early stop) decodes the first ``reference_batch_size`` of them, once (it is two to three orders of
    magnitude slower); ``same_outcomes`` says whether it decoded and failed the same codewords as
    ``layered-oms-full``. ``mean_iterations`` is what early stopping saves.
    Throughput is information bits over the CPU time of the one thread that decodes (median of ``run.repeats``
    after a warm-up): Mbit/s per busy core, which other processes on the machine affect less than
    wall-clock time.

    :output: dict with ``"results"``, one per rate: ``n``, ``z``, ``ebno_db``, and per decoder
        ``codewords``, ``bler`` and ``mbit_per_s_per_core``.
    """
    results = []
    with torch_threads(1):
        header = run.header("cpu")  # the one thread that decodes
        for rate in rates:
            n = int(round(k / rate))
            encoder = LDPC5GEncoder(k, n)
            search = BpskCodewords(encoder, search_batch_size, run.seed)
            fast = LayeredMinSumDecoder(encoder, num_iter=num_iter)
            # Eb/N0 of capacity on real AWGN at `rate` bits per dimension (BPSK's dimension): no code is below it
            shannon_db = 10 * np.log10((2 ** (2 * rate) - 1) / (2 * rate))
            ebno_db = snr_db_at_bler(
                lambda ebno, draws=search, decoder=fast: draws.bler(decoder(draws.llr(ebno))),
                target_bler,
                shannon_db,
                shannon_db + 4.0,
                0.02,
            )
            codewords = BpskCodewords(encoder, batch_size, run.seed + 1)
            llr = codewords.llr(ebno_db)
            full = LayeredMinSumDecoder(encoder, num_iter=num_iter, early_stop=False)
            frames = FrameParallelMinSumDecoder(encoder, num_iter=num_iter, message_format="float32")
            int16 = FrameParallelMinSumDecoder(encoder, num_iter=num_iter, message_format="int16")
            reference = LDPC5GDecoder(encoder, cn_update="offset-minsum", cn_schedule="layered", num_iter=num_iter)
            runs = {
                "layered-oms": (fast, llr, run.repeats),
                "layered-oms-full": (full, llr, run.repeats),
                "layered-oms-frames": (frames, llr, run.repeats),
                "layered-oms-int16": (int16, llr, run.repeats),
                "sionna-layered-oms": (reference, llr[:reference_batch_size], 1),
            }
            row = {"rate": round(rate, 4), "n": n, "z": encoder.z, "ebno_db": round(ebno_db, 2)}
            decoded = {}
            for name, (decoder, llr_in, times) in runs.items():
                # this thread's CPU time: everything runs in it (one intra-op thread, numba in the caller), and
                # threads left spinning by earlier multi-threaded work would count in the process's
                _, cpu_s, decoded[name] = timed(decoder, (llr_in,), times, "cpu", cpu_clock=time.thread_time)
                row[name] = {
                    "codewords": llr_in.shape[0],
                    "bler": codewords.bler(decoded[name], llr_in.shape[0]),
                    "mbit_per_s_per_core": llr_in.shape[0] * k / cpu_s / 1e6,
                }
            row["layered-oms"]["mean_iterations"] = float(fast.iterations.float().mean())
            failed = {name: (bits != codewords.bits[: bits.shape[0]]).any(-1) for name, bits in decoded.items()}
            row["sionna-layered-oms"]["same_outcomes"] = bool(
                torch.equal(failed["sionna-layered-oms"], failed["layered-oms-full"][:reference_batch_size])
            )
            row["layered-oms-frames"]["bit_identical"] = bool(
                torch.equal(decoded["layered-oms-frames"], decoded["layered-oms-full"])
            )
            # codewords that failed in one of the float and int16 decoders only: balanced if rounding costs nothing
            row["layered-oms-int16"]["failed_only_here"] = int(
                (failed["layered-oms-int16"] & ~failed["layered-oms-full"]).sum()
            )
            row["layered-oms-int16"]["failed_only_in_float"] = int(
                (failed["layered-oms-full"] & ~failed["layered-oms-int16"]).sum()
            )
            results.append(row)
    return {
        "benchmark": "LDPC decoder only, information Mbit/s per core",
        "code": f"5G NR base graph 1, k = {k}, BPSK on AWGN",
        "num_iter": num_iter,
        "ebno_db": f"where layered-oms (early stop) has BLER {target_bler} on {search_batch_size} codewords",
        **header,
        "results": results,
    }


class BpskCodewords:
    r"""Random codewords of an ``LDPC5GEncoder`` as BPSK plus one draw of real AWGN: channel LLRs at any Eb/N0.

    :param encoder: the code
    :param num_codewords: codewords drawn
    :param seed: seed of the bits and the noise
    """

    def __init__(self, encoder: LDPC5GEncoder, num_codewords: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.rate = encoder.k / encoder.n
        self.bits = torch.randint(0, 2, (num_codewords, encoder.k), generator=generator).float()
        self._symbols = 1.0 - 2.0 * encoder(self.bits)
        self._noise = torch.randn(self._symbols.shape, generator=generator)

    def llr(self, ebno_db: float) -> torch.Tensor:
        """[num_codewords, n]: logits log p(b=1)/p(b=0) (Sionna's sign) at ``ebno_db``, Eb/N0 per information bit."""
        variance = 1.0 / (2.0 * self.rate * 10 ** (ebno_db / 10))  # per real dimension
        return -2.0 * (self._symbols + variance**0.5 * self._noise) / variance

    def bler(self, bits_hat: torch.Tensor, num_codewords: int | None = None) -> float:
        """Fraction of the first ``num_codewords`` (all: None) codewords with any wrong bit in ``bits_hat``."""
        return float((bits_hat != self.bits[:num_codewords]).any(-1).float().mean())


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


def snr_db_at_bler(bler_at, bler: float, low_db: float, high_db: float, resolution_db: float = 0.01) -> float:
    """The SNR at which ``bler_at(snr_db)`` crosses ``bler``, by bisection in [``low_db``, ``high_db``].

    :param bler_at: SNR in dB -> block error rate, falling with SNR (the same draws at every SNR, e.g.
        ``lambda snr: tbs.bler(decoder(tbs.llr(snr))[0])`` with :class:`AwgnTransportBlocks`)
    :output: the midpoint of the last bracket, in dB
    :raises ValueError: when ``bler`` is not crossed between the two ends
    """
    if not bler_at(high_db) <= bler < bler_at(low_db):
        raise ValueError(f"the BLER does not cross {bler} between {low_db:.2f} and {high_db:.2f} dB")
    while high_db - low_db > resolution_db:
        middle_db = (low_db + high_db) / 2
        if bler_at(middle_db) > bler:
            low_db = middle_db
        else:
            high_db = middle_db
    return (low_db + high_db) / 2
