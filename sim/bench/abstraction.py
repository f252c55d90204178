"""The PHY abstraction timed: user-slots per second (``tokensim bench --only abstraction``)."""

from __future__ import annotations

import torch

from sim.bench.timing import BenchRun, timed
from sim.phy.abstraction import DATA_RES_PER_PRB, TransportBlockAbstraction
from sim.phy.threads import torch_threads


def bench_abstraction(
    run: BenchRun = BenchRun(repeats=5),
    num_user_slots: int = 1_000_000,
    num_users: int = 1000,
    num_prbs: int = 4,
    threads: int = 2,
) -> dict:
    """User-slots per second of :class:`TransportBlockAbstraction` (SINR -> BLER -> ACK draw) on this machine.

    Each call takes ``num_users`` links x ``num_user_slots // num_users`` slots at once, with random MCS
    (calibrated range), SINR (-5..25 dB) and 1..``2 * num_prbs - 1`` PRBs, drawn with ``run.seed``. Timed: one
    effective SINR per link (``"sinr_eff"``); one SINR per PRB of a ``num_prbs``-PRB allocation
    (``"sinr_per_prb"``, EESM included); and, as the reference, Sionna's ``PHYAbstraction`` alone on the
    ``"sinr_eff"`` inputs. Each figure is the median of ``run.repeats`` timed calls after one warm-up call, with
    ``torch.set_num_threads(threads)``. On the 2-core development machine, busy with other jobs, ``threads=1``
    ran 3.6x faster than ``threads=2`` (2.4 vs 0.66 M user-slots/s): OpenMP threads wait on each other when the
    cores are shared.

    :output: JSON-able dict: ``{"num_user_slots", "num_users"}``, :meth:`BenchRun.header` and ``{
        "sinr_eff": {"user_slots_per_s", "seconds"}, "sinr_per_prb": {...}, "sionna_phy_abstraction": {...}}``.
    """
    with torch_threads(threads):
        block = TransportBlockAbstraction()
        device = block.device
        num_slots = max(1, num_user_slots // num_users)
        shape = (num_slots, num_users)
        gen = torch.Generator(device=device).manual_seed(run.seed)
        lo, hi = block.available_mcs[0], block.available_mcs[-1]
        mcs = torch.randint(lo, hi + 1, shape, generator=gen, device=device, dtype=torch.int32)
        sinr_db = torch.rand(shape, generator=gen, device=device) * 30 - 5
        num_re = DATA_RES_PER_PRB * torch.randint(1, 2 * num_prbs, shape, generator=gen, device=device)
        sinr_eff = 10 ** (sinr_db / 10)
        # frequency-selective: PRBs scatter 3 dB around the link's mean
        sinr_per_prb = 10 ** (
            (sinr_db[..., None] + 3 * torch.randn(shape + (num_prbs,), generator=gen, device=device)) / 10
        )
        per_prb_re = torch.full(shape, DATA_RES_PER_PRB * num_prbs, device=device)
        runs = {
            "sinr_eff": lambda: block(mcs, sinr_eff=sinr_eff, num_allocated_re=num_re)["tb_ok"],
            "sinr_per_prb": lambda: block(mcs, sinr=sinr_per_prb, num_allocated_re=per_prb_re)["tb_ok"],
            "sionna_phy_abstraction": lambda: block.phy_abstraction(
                mcs, sinr_eff=sinr_eff, num_allocated_re=num_re, check_mcs_index_validity=False
            )[1],
        }
        result = {"num_user_slots": num_slots * num_users, "num_users": num_users, **run.header(device)}
        for name, call in runs.items():
            # .item() waits for an accelerator
            median, _, _ = timed(lambda c=call: c().any().item(), (), run.repeats, device)
            result[name] = {"user_slots_per_s": num_slots * num_users / median, "seconds": median}
        return result
