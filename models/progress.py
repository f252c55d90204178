"""Progress bars (tqdm) that stay readable in logs as well as in terminals."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar on stderr; off when ``enabled`` is false, and updating every
    30 s instead of many times a second when stderr is not a terminal."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        disable=not enabled,
        leave=False,
        file=sys.stderr,
        mininterval=0.1 if interactive else 30.0,
        dynamic_ncols=interactive,
        **kwargs,
    )
