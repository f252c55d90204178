"""``tokensim bench``: the analog link (:func:`run_bench`) and the digital link (:func:`run_digital_bench`), each
against a chain of Sionna's stock blocks on the same grid and channel (:func:`_sionna_ofdm_chain`).

In the analog bench both chains get the same symbols, channel realisations and noise: Sionna's
generators are reseeded before each, and both draw the channel and the noise
through ``OFDMChannel`` on the same grid. The reference is
``ResourceGridMapper -> OFDMChannel -> LSChannelEstimator -> LMMSEEqualizer``;
its unbiased output is scaled to the MMSE estimate (``x / (1 + no_eff)``) so
the two NMSEs are of the same estimator. Throughput counts data resource
elements per second; each figure is the median of ``repeats`` timed runs
after one warm-up run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sim.bench.timing import BenchRun, timed

SUBCARRIER_SPACING_HZ = 30e3  # the grid of both benches: 30 kHz, 14 OFDM symbols, pilots in symbols 2 and 11
PILOT_OFDM_SYMBOL_INDICES = [2, 11]


@dataclass(frozen=True)
class LinkBench(BenchRun):
    """What the two link benches share (``--channel``, ``--num-prbs``, and :class:`BenchRun`'s ``--repeats`` and
    ``--seed``): the channel model both chains see, at 3.5 GHz, 100 ns delay spread and 1 m/s, with LS estimates
    on a grid of ``num_prbs`` PRBs."""

    channel: str = "tdl-a"
    num_prbs: int = 24

    def start(self) -> tuple:
        """``(device, sionna_device, model)``: the runtime both chains run on (``Runtime.start("auto", seed)``:
        the torch device, and Sionna's name for it) and the channel model (``None`` for AWGN)."""
        from sionna.phy import config

        from sim.phy.channels import channel_model
        from sim.runtime import Runtime

        device = Runtime.start("auto", self.seed).device
        model = channel_model(
            self.channel, carrier_frequency_hz=3.5e9, delay_spread_s=100e-9, speed_mps=1.0, device=config.device
        )
        return device, config.device, model

    def header(self, device) -> dict:
        return {**super().header(device), "channel": self.channel, "csi": "ls", "num_prbs": self.num_prbs}


def run_bench(batch_sizes: list[int], snr_db: float = 10.0, bench: LinkBench = LinkBench(repeats=5)) -> dict:
    """Resource elements per second and token NMSE of the analog link against Sionna's stock chain, at
    ``snr_db`` for each of ``batch_sizes`` links at once (see the module docstring)."""
    from sionna.phy.ofdm import ResourceGrid

    from sim.phy.analog import AnalogLink

    device, sionna_device, model = bench.start()
    num_prbs, repeats, seed = bench.num_prbs, bench.repeats, bench.seed
    grid = ResourceGrid(
        num_ofdm_symbols=14,
        fft_size=12 * num_prbs,
        subcarrier_spacing=SUBCARRIER_SPACING_HZ,
        pilot_pattern="kronecker",
        pilot_ofdm_symbol_indices=PILOT_OFDM_SYMBOL_INDICES,
        device=sionna_device,
    )
    link = AnalogLink(grid, model, csi="ls", device=sionna_device)
    ofdm_chain = _sionna_ofdm_chain(grid, model, sionna_device)

    def reference(tokens: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        batch, num_values = tokens.shape
        x = torch.view_as_complex(tokens.reshape(batch, -1, 2).contiguous())[:, None, None]
        x_hat, no_eff = ofdm_chain(x, torch.pow(10.0, -snr / 10))
        return torch.view_as_real((x_hat / (1 + no_eff))[:, 0, 0]).reshape(batch, num_values)

    rows = []
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for batch in batch_sizes:
            tokens = (torch.randn(batch, 2 * grid.num_data_symbols, generator=generator) / np.sqrt(2)).to(device)
            snr = torch.full((batch,), snr_db, device=device)
            t_ours, _, ours = timed(lambda a, b: link(a, b)["tokens"], (tokens, snr), repeats, device, seed=seed)
            t_ref, _, ref = timed(reference, (tokens, snr), repeats, device, seed=seed)
            res = batch * grid.num_data_symbols
            nmse_ours = float((ours - tokens).square().sum() / tokens.square().sum())
            nmse_ref = float((ref - tokens).square().sum() / tokens.square().sum())
            rows.append(
                {
                    "batch_size": batch,
                    "resource_elements": res,
                    "tokensim_res_per_s": res / t_ours,
                    "sionna_reference_res_per_s": res / t_ref,
                    "speedup": t_ref / t_ours,
                    "tokensim_nmse": nmse_ours,
                    "sionna_reference_nmse": nmse_ref,
                    "nmse_relative_difference": abs(nmse_ours - nmse_ref) / nmse_ref,
                    "tokensim_ms": t_ours * 1e3,
                    "sionna_reference_ms": t_ref * 1e3,
                }
            )
    return {
        "benchmark": "analog link",
        **bench.header(device),
        "snr_db": snr_db,
        "grid": {
            "num_ofdm_symbols": 14,
            "fft_size": 12 * num_prbs,
            "data_resource_elements": int(grid.num_data_symbols),
        },
        "reference": "ResourceGridMapper -> OFDMChannel -> LSChannelEstimator(lin) -> LMMSEEqualizer",
        "results": rows,
    }


NUM_DECODER_ITERATIONS = 16  # the layered decoder's default: every chain of the digital bench runs this many


def run_digital_bench(
    mcs_indices: list[int] = (10, 16, 20),
    snrs_db: list[float] = (13.0, 19.0, 22.0),
    batch_size: int = 64,
    reference_tbs: int = 8,
    bench: LinkBench = LinkBench(),
) -> dict:
    """Information bits per second of the digital link against a chain of Sionna's blocks doing the same work.

    The reference is ``TBEncoder -> Mapper -> ResourceGridMapper -> OFDMChannel
    -> LSChannelEstimator(lin) -> LMMSEEqualizer -> Demapper(app) ->
    TBDecoder`` whose LDPC stage is Sionna's ``LDPC5GDecoder`` with tokensim's
    algorithm: offset min-sum (0.5), layered schedule, the same iterations (16), and
    (Sionna has none) no early stop. tokensim's chain is
    :class:`~sim.phy.digital.TransportBlockLink` (its TB encoder, own LS
    estimator, one-tap equaliser, per-dimension APP demapper and the decoder of
    :mod:`sim.phy.ldpc`), timed twice: without early stopping (``layered-oms-full``,
    the reference's work) and as the simulator runs it (``layered-oms``, early stop).
    Sionna's layered decoder is two to three orders of magnitude slower, so its
    chain runs the first ``reference_tbs`` links only, once; tokensim's chain
    without early stopping runs that same batch (Sionna's generators reseeded:
    the same channel and noise draws) for ``same_tb_outcomes``, whether the two
    chains passed and failed the same TBs. Their front ends differ in
    implementation (LS estimates equal within 1e-6, LLRs within 1e-3, both
    tested), so this compares the chains, not only the decoders (which
    ``tests/sim/test_ldpc.py`` compares on the same LLRs). ``decoder_only`` is
    :func:`~sim.bench.decoders.bench_decoder_only` (5G BG1, k = 8448, per core).
    Each MCS runs at its SNR of ``snrs_db``: by default near the 10 % BLER that
    link adaptation aims at on TDL-A with LS estimates, where the link spends its
    time; every chain's BLER is reported beside its speed. One TB per link and
    slot, ``batch_size`` links.
    """
    from sim.bench.decoders import bench_decoder_only
    from sim.phy.digital import TransportBlockLink
    from sim.phy.tb_decoders import tb_decoder

    device, sionna_device, model = bench.start()
    num_prbs, repeats, seed = bench.num_prbs, bench.repeats, bench.seed
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for mcs, snr_db in zip(mcs_indices, snrs_db):
        link = TransportBlockLink(
            mcs,
            num_prbs=num_prbs,
            subcarrier_spacing_hz=SUBCARRIER_SPACING_HZ,
            pilot_ofdm_symbol_indices=PILOT_OFDM_SYMBOL_INDICES,
            channel_model=model,
            csi="ls",
            decoder="layered-oms",
            num_bp_iter=NUM_DECODER_ITERATIONS,
            device=sionna_device,
        )
        full = tb_decoder(link.encoder, "layered-oms-full", num_iter=NUM_DECODER_ITERATIONS)
        reference = _sionna_digital_chain(link, model, sionna_device)

        def ours(bits, snr, link=link, decoder=link.decoder):
            return decoder(link(bits, snr)["llr"])[1][:, 0]

        bits = torch.randint(0, 2, (batch_size, 1, link.tb_size), generator=generator).float().to(device)
        snr = torch.full((batch_size,), snr_db, device=device)
        t_ours, _, ok_ours = timed(ours, (bits, snr), repeats, device, seed=seed)

        def ours_full(bits, snr, full=full):
            return ours(bits, snr, decoder=full)

        t_full, _, ok_full = timed(ours_full, (bits, snr), repeats, device, seed=seed)
        subset = (bits[:reference_tbs], snr[:reference_tbs])
        num_reference = subset[0].shape[0]
        t_reference, _, ok_reference = timed(reference, subset, 1, device, seed=seed)
        _, _, ok_full_subset = timed(ours_full, subset, 1, device, seed=seed)
        info_bits = batch_size * link.tb_size
        rows.append(
            {
                "mcs": mcs,
                "bits_per_symbol": link.bits_per_symbol,
                "tb_size": link.tb_size,
                "snr_db": snr_db,
                "tokensim_full_mbit_per_s": info_bits / t_full / 1e6,
                "tokensim_full_bler": 1 - float(ok_full.float().mean()),
                "sionna_mbit_per_s": num_reference * link.tb_size / t_reference / 1e6,
                "sionna_bler": 1 - float(ok_reference.float().mean()),
                "tokensim_full_bler_same_tbs": 1 - float(ok_full_subset.float().mean()),
                "same_tb_outcomes": bool(torch.equal(ok_full_subset, ok_reference)),
                "speedup": (t_reference / num_reference) / (t_full / batch_size),
                "tokensim_mbit_per_s": info_bits / t_ours / 1e6,
                "tokensim_bler": 1 - float(ok_ours.float().mean()),
            }
        )
    iterations = NUM_DECODER_ITERATIONS
    return {
        "benchmark": "digital link (information bits)",
        "batch_size": batch_size,
        "reference_tbs": reference_tbs,
        "reference": "TBEncoder -> Mapper -> OFDMChannel -> LSChannelEstimator(lin) -> LMMSEEqualizer -> "
        f"Demapper(app) -> TBDecoder(LDPC5GDecoder offset-minsum, layered, {iterations} it, no early stop)",
        "tokensim_full": f"TransportBlockLink, layered offset min-sum, {iterations} it, no early stop",
        "tokensim": f"TransportBlockLink as simulated: layered offset min-sum, at most {iterations} it, early stop",
        "results": rows,
        "decoder_only": bench_decoder_only(BenchRun(repeats, seed)),
        **bench.header(device),  # last: the load average after both benches
    }


def _sionna_digital_chain(link, model, device):
    """Sionna's blocks for ``link``'s TBs on its one-slot grid, with tokensim's decoding algorithm run by
    Sionna's ``LDPC5GDecoder`` (``tb_decoder(..., "sionna-layered-oms")``): (bits, snr_db) -> CRC status."""
    from sionna.phy.mapping import Demapper, Mapper
    from sionna.phy.nr import TBEncoder

    from sim.phy.tb_decoders import tb_decoder

    grid = link.stage.link(1).resource_grid
    encoder = TBEncoder(link.tb_size, link.num_coded_bits, link.code_rate, link.bits_per_symbol, device=device)
    mapper = Mapper("qam", link.bits_per_symbol, device=device)
    demapper = Demapper("app", "qam", link.bits_per_symbol, device=device)
    ofdm_chain = _sionna_ofdm_chain(grid, model, device)
    decoder = tb_decoder(encoder, "sionna-layered-oms", num_iter=NUM_DECODER_ITERATIONS)

    def stock(bits, snr_db):
        no = torch.pow(10.0, -snr_db / 10)
        x = mapper(encoder(bits))[:, None, None, 0]  # [batch, 1, 1, num_data_res]
        x_hat, no_eff = ofdm_chain(x, no)
        return decoder(demapper(x_hat[:, 0, 0], no_eff[:, 0, 0]))[1]

    return stock


def _sionna_ofdm_chain(grid, model, device):
    """The reference chains' stock Sionna blocks from the resource grid to the equaliser:
    ``ResourceGridMapper -> OFDMChannel (AWGN alone without a fading model, as AnalogLink does) ->
    LSChannelEstimator(lin) -> LMMSEEqualizer`` on ``grid``.

    :output: a callable ``(x, no) -> (x_hat, no_eff)``, x [batch, 1, 1, num_data_symbols], complex; no [batch] or
        [], float, noise variance per RE; x_hat and no_eff [batch, 1, 1, num_data_symbols] (unbiased LMMSE)
    """
    from sionna.phy.channel import AWGN, OFDMChannel
    from sionna.phy.mimo import StreamManagement
    from sionna.phy.ofdm import LMMSEEqualizer, LSChannelEstimator, ResourceGridMapper

    mapper = ResourceGridMapper(grid, device=device)
    apply_channel = OFDMChannel(model, grid, device=device) if model is not None else AWGN(device=device)
    estimator = LSChannelEstimator(grid, interpolation_type="lin", device=device)
    equalizer = LMMSEEqualizer(grid, StreamManagement(np.ones([1, 1], int), 1), device=device)

    def chain(x: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = apply_channel(mapper(x), no)
        h_hat, err_var = estimator(y, no)
        return equalizer(y, h_hat, err_var, no)

    return chain
