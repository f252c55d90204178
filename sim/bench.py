"""``tokensim bench``: the analog link against a chain of Sionna's stock blocks.

Both chains get the same symbols, channel realisations and noise: Sionna's
generators are reseeded before each, and both draw the channel and the noise
through ``OFDMChannel`` on the same grid. The reference is
``ResourceGridMapper -> OFDMChannel -> LSChannelEstimator -> LMMSEEqualizer``;
its unbiased output is scaled to the MMSE estimate (``x / (1 + no_eff)``) so
the two NMSEs are of the same estimator. Throughput counts data resource
elements per second; each figure is the median of ``repeats`` timed runs
after one warm-up run.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch


def run_bench(
    batch_sizes: list[int],
    repeats: int = 5,
    channel: str = "tdl-a",
    snr_db: float = 10.0,
    num_prbs: int = 24,
    seed: int = 0,
) -> dict:
    from sionna.phy import config
    from sionna.phy.channel import AWGN, OFDMChannel
    from sionna.phy.mimo import StreamManagement
    from sionna.phy.ofdm import LMMSEEqualizer, LSChannelEstimator, ResourceGrid, ResourceGridMapper

    from sim.phy.analog import AnalogLink
    from sim.phy.channels import channel_model
    from sim.runtime import apply_runtime

    device = apply_runtime("auto", seed)
    sionna_device = config.device
    grid = ResourceGrid(
        num_ofdm_symbols=14,
        fft_size=12 * num_prbs,
        subcarrier_spacing=30e3,
        pilot_pattern="kronecker",
        pilot_ofdm_symbol_indices=[2, 11],
        device=sionna_device,
    )
    model = channel_model(
        channel, carrier_frequency_hz=3.5e9, delay_spread_s=100e-9, speed_mps=1.0, device=sionna_device
    )
    link = AnalogLink(grid, model, csi="ls", device=sionna_device)

    mapper = ResourceGridMapper(grid, device=sionna_device)
    # AWGN alone when the model has no fading, as AnalogLink does
    apply_channel = OFDMChannel(model, grid, device=sionna_device) if model is not None else AWGN(device=sionna_device)
    estimator = LSChannelEstimator(grid, interpolation_type="lin", device=sionna_device)
    equalizer = LMMSEEqualizer(grid, StreamManagement(np.ones([1, 1], int), 1), device=sionna_device)

    def reference(tokens: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        batch, num_values = tokens.shape
        x = torch.view_as_complex(tokens.reshape(batch, -1, 2).contiguous())[:, None, None]
        no = torch.pow(10.0, -snr / 10)
        y = apply_channel(mapper(x), no)
        h_hat, err_var = estimator(y, no)
        x_hat, no_eff = equalizer(y, h_hat, err_var, no)
        return torch.view_as_real((x_hat / (1 + no_eff))[:, 0, 0]).reshape(batch, num_values)

    def timed(fn, *args):
        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        config.seed = seed
        fn(*args)  # warm-up (lazy builds)
        times, out = [], None
        for _ in range(repeats):
            config.seed = seed
            sync()
            start = time.perf_counter()
            out = fn(*args)
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    rows = []
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for batch in batch_sizes:
            tokens = (torch.randn(batch, 2 * grid.num_data_symbols, generator=generator) / np.sqrt(2)).to(device)
            snr = torch.full((batch,), snr_db, device=device)
            t_ours, ours = timed(lambda a, b: link(a, b)["tokens"], tokens, snr)
            t_ref, ref = timed(reference, tokens, snr)
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
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "channel": channel,
        "csi": "ls",
        "snr_db": snr_db,
        "num_prbs": num_prbs,
        "grid": {
            "num_ofdm_symbols": 14,
            "fft_size": 12 * num_prbs,
            "data_resource_elements": int(grid.num_data_symbols),
        },
        "reference": "ResourceGridMapper -> OFDMChannel -> LSChannelEstimator(lin) -> LMMSEEqualizer",
        "repeats": repeats,
        "results": rows,
    }
