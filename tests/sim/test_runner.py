"""The one runner of sweeps and reproductions: a failed item loses nothing else, here and on Dask."""

from __future__ import annotations

import os

from sim.runner import Work, run_work


def square(x, threads=0, after=None, progress=None):
    return {"x": x * x, "pid": os.getpid(), "threads": threads, "progress": progress}


def broken(threads=0, after=None):
    raise ValueError("no data")


ITEMS = [
    Work("bad", broken, ()),
    Work("waits-on-bad", square, (2,), after="bad"),
    Work("alone", square, (3,), shows_progress=True),
    Work("waits-on-alone", square, (4,), after="alone"),
]


def test_here_a_failed_item_skips_what_waits_on_it_and_nothing_else():
    seen = []
    done, failed = run_work(ITEMS, on_done=lambda item, record, error: seen.append((item.name, error)), progress=True)
    assert failed == {"bad": "ValueError: no data", "waits-on-bad": "skipped: bad failed (ValueError: no data)"}
    assert {name: r["x"] for name, r in done.items()} == {"alone": 9, "waits-on-alone": 16}
    # in this process: one thread as it is, progress only to the items that show it
    assert done["alone"]["progress"] is True and done["waits-on-alone"]["progress"] is None
    assert [name for name, _ in seen] == [item.name for item in ITEMS]


def test_on_a_local_dask_cluster_the_same_items_end_the_same_way_in_worker_processes():
    environ = dict(os.environ)
    done, failed = run_work(ITEMS, workers=2)
    # the workers' one-thread settings stay theirs: later subprocesses of this one get its own
    assert dict(os.environ) == environ
    assert failed["bad"] == "ValueError: no data" and failed["waits-on-bad"].startswith("ValueError")
    assert {name: r["x"] for name, r in done.items()} == {"alone": 9, "waits-on-alone": 16}
    assert all(r["pid"] != os.getpid() and r["threads"] == 1 for r in done.values())
