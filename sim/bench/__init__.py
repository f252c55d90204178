"""``tokensim bench``: each bench in a file of its own, all timed by :func:`sim.bench.timing.timed`.

- :mod:`sim.bench.links`: the analog link and the digital link against chains of Sionna's stock blocks;
- :mod:`sim.bench.decoders`: the LDPC TB decoders, and the decoder-only Mbit/s per core;
- :mod:`sim.bench.abstraction`: the PHY abstraction's user-slots per second.

Every bench is given a :class:`~sim.bench.timing.BenchRun` (``--repeats``, ``--seed``; the link benches a
:class:`~sim.bench.links.LinkBench`, which adds ``--channel`` and ``--num-prbs``); :func:`run_benches` runs
the ones ``--only`` names.
"""

from __future__ import annotations


def run_benches(only: list[str], link, batch_sizes: list[int], snr_db: float) -> dict:
    """The reports of the benches named in ``only`` (``analog``, ``digital``, ``decoders``, ``abstraction``), each
    with ``link``'s repeats and seed (:class:`~sim.bench.links.LinkBench`; its channel and grid for the two
    link benches); the analog bench at ``batch_sizes`` links and ``snr_db``."""
    from sim.bench.abstraction import bench_abstraction
    from sim.bench.decoders import bench_decoders
    from sim.bench.links import run_bench, run_digital_bench
    from sim.bench.timing import BenchRun

    run = BenchRun(link.repeats, link.seed)
    benches = {
        "analog": lambda: run_bench(batch_sizes, snr_db, link),
        "digital": lambda: run_digital_bench(bench=link),
        "decoders": lambda: bench_decoders(run),
        # one thread: its tensors are small, and a second thread costs more than it gives (see the JSON's torch_threads)
        "abstraction": lambda: bench_abstraction(run, threads=1),
    }
    return {name: benches[name]() for name in only}
