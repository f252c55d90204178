"""The one timing harness of ``tokensim bench``: median wall-clock and CPU seconds of repeated runs (:func:`timed`),
and what every bench is given and reports of its timing (:class:`BenchRun`)."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BenchRun:
    """What every bench of ``tokensim bench`` is given (``--repeats``, ``--seed``): each figure is the median of
    ``repeats`` timed runs after a warm-up (:func:`timed`), and ``seed`` fixes the bench's data, channels and
    noise."""

    repeats: int = 3
    seed: int = 0

    def header(self, device) -> dict:
        """What every bench's report says of how it was timed: the device, torch's intra-op threads, the
        repeats, the seed, and the machine's 1-minute load average (other processes on the cores slow every
        chain down)."""
        return {
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "repeats": self.repeats,
            "seed": self.seed,
            "load_average_1min": os.getloadavg()[0],
        }


def timed(fn, args: tuple, repeats: int, device, seed: int | None = None, cpu_clock=time.process_time):
    """``(wall_s, cpu_s, out)``: the median wall-clock and ``cpu_clock`` seconds of ``fn(*args)`` over ``repeats``
    runs, after a warm-up on the first element of each argument (lazy builds, numba's compilation; with no
    arguments, one whole run), and the last output. Sionna's generators are reseeded with ``seed`` before
    every run when it is given, so chains compared on it draw the same channels and noise. ``cpu_clock``:
    the process's CPU time by default; ``time.thread_time`` for work that runs in the calling thread alone;
    ``time.perf_counter`` to time the wall clock twice."""
    from sionna.phy import config

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    with torch.no_grad():
        if seed is not None:
            config.seed = seed
        fn(*(a[:1] for a in args))
        walls, cpus, out = [], [], None
        for _ in range(repeats):
            if seed is not None:
                config.seed = seed
            sync()
            wall, cpu = time.perf_counter(), cpu_clock()
            out = fn(*args)
            sync()
            walls.append(time.perf_counter() - wall)
            cpus.append(cpu_clock() - cpu)
    return statistics.median(walls), statistics.median(cpus), out
