"""Chunks of a batch on ``torch.get_num_threads()`` threads, for the numba kernels of the PHY; torch's thread
count set for a block of work.

The kernels (:mod:`sim.phy.ldpc`'s decoder, :mod:`sim.phy.qam_demapper` and :mod:`sim.phy.tb_encoder`) release the GIL
and write disjoint slices of their outputs, so Python threads run them in parallel; each item's result does
not depend on the thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch


def map_chunks(work: Callable[[slice], None], total: int, chunk: int) -> None:
    """Call ``work(slice(first, first + chunk))`` for every chunk of ``range(total)``, on up to
    ``torch.get_num_threads()`` threads (in this thread when one suffices)."""
    firsts = range(0, total, chunk)
    num_threads = min(torch.get_num_threads(), len(firsts))
    parts = [slice(first, first + chunk) for first in firsts]
    if num_threads <= 1:
        for part in parts:
            work(part)
    else:
        with ThreadPoolExecutor(num_threads) as pool:
            list(pool.map(work, parts))


@contextmanager
def torch_threads(num_threads: int):
    """torch's intra-op threads set to ``num_threads`` inside the block, and put back as they were afterwards.

    >>> with torch_threads(1):
    ...     bits = decoder(llr)
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
