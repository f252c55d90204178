"""The one runner of tokensim's batches of work (a sweep's points, the paper's runs): in this process, on a
local Dask cluster, or on a running Dask scheduler.

A :class:`Work` item names a function and its arguments, and may wait for another item (the sweep's
points wait for their checkpoint's training). An item that fails is recorded and the others go on; an
item whose predecessor failed is skipped with that reason. Workers run one torch thread each.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass
class Work:
    """One item of a batch: ``fn(*args, threads=..., after=...)`` (and ``progress=`` in this process where
    ``shows_progress``), returning a JSON-able record.

    :param name: unique within the batch
    :param after: the name of the item this one waits for (``None``: none)
    :param label: what the progress lines call it
    :param shows_progress: ``fn`` takes ``progress`` (its own bars, shown only when run in this process)
    """

    name: str
    fn: object
    args: tuple
    after: str | None = None
    label: str = ""
    shows_progress: bool = False


def run_work(items: list[Work], workers: int = 1, scheduler: str | None = None, on_done=None, progress=False):
    """Run ``items`` here (``workers`` 1, no ``scheduler``: in order) or on Dask (at once where their ``after``
    allows); ``(done, failed)``: name -> record, and name -> error line, for every item.

    :param workers: >1: a local Dask cluster of that many processes, one thread each
    :param scheduler: address of a running Dask scheduler (``tcp://host:port``) to use instead
    :param on_done: called as ``on_done(item, record, error)`` as each item ends (one of the two is ``None``)
    :param progress: run here, the items that show progress do
    """
    on_done = on_done or (lambda item, record, error: None)
    if scheduler or workers > 1:
        return _run_dask(items, workers, scheduler, on_done)
    return _run_here(items, on_done, progress)


def _run_here(items: list[Work], on_done, progress: bool) -> tuple[dict, dict]:
    done, failed = {}, {}
    for item in items:
        if item.after in failed:
            failed[item.name] = f"skipped: {item.after} failed ({failed[item.after]})"
            on_done(item, None, failed[item.name])
            continue
        extra = {"progress": progress} if item.shows_progress else {}
        try:
            done[item.name] = item.fn(*item.args, **extra)
        except Exception as err:  # one bad item must not lose the others
            failed[item.name] = f"{type(err).__name__}: {err}"
        on_done(item, done.get(item.name), failed.get(item.name))
    return done, failed


def _run_dask(items: list[Work], workers: int, scheduler: str | None, on_done) -> tuple[dict, dict]:
    import logging
    from contextlib import ExitStack

    from distributed import Client, LocalCluster, as_completed

    done, failed = {}, {}
    # Dask's nanny writes OMP_NUM_THREADS=1 (and MKL's, OpenBLAS's) into this process's environment for its
    # workers and leaves it there: every later subprocess would run one thread, and its floats would differ
    environ = dict(os.environ)
    with ExitStack() as stack:
        stack.callback(lambda: (os.environ.clear(), os.environ.update(environ)))
        if scheduler:
            client = stack.enter_context(Client(scheduler))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.CRITICAL,
                )
            )
            client = stack.enter_context(Client(cluster))
        futures = {}
        for item in items:
            # a future passed as an argument makes Dask wait for it (and fail this item if it failed)
            after = futures.get(item.after)
            futures[item.name] = client.submit(
                item.fn, *item.args, threads=1, after=after, key=f"{item.name}-{time.time_ns()}", pure=False
            )
        name_of = {f.key: name for name, f in futures.items()}
        by_name = {item.name: item for item in items}
        for future in as_completed(futures.values()):
            name = name_of[future.key]
            try:
                done[name] = future.result()
            except Exception as err:
                failed[name] = f"{type(err).__name__}: {err}"
            on_done(by_name[name], done.get(name), failed.get(name))
    return done, failed
