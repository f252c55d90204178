"""Cached artefacts that check themselves: a content digest per file, and one builder at a time.

Checkpoints, encoder features, the trained audio encoder and the synthesised speech are expensive to
make and live in ``$TOKENSIM_CACHE``, which several processes may share. Each is written atomically
(:func:`~models.paths.atomic_path`) and then sealed: ``<file>.sha256`` records the SHA-256 of its bytes.

- :func:`load_intact` checks a file against its digest before loading it. A file that fails (bit rot,
  a truncated copy, a file from elsewhere) is moved aside to ``<file>.corrupt``, with one line on
  stderr naming it, and reported as missing, so the caller rebuilds it. A file without a digest (made
  before digests, or by a process stopped between the rename and the seal) is accepted if it loads,
  and sealed then.
- :func:`exclusive` holds a file lock (``filelock``) on an artefact while it is built: a second process
  that needs it waits, then finds it built and loads it, instead of building it again.
- :func:`audit` checks every sealed file of the cache (``tokensim info``).

``filelock`` and ``hashlib`` do the locking and hashing; what is written here is only the policy
(which file, when to check, what to do with a bad one).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

from models.paths import atomic_path

T = TypeVar("T")
DIGEST_SUFFIX = ".sha256"
ARTEFACT_SUFFIXES = (".safetensors", ".npz")


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, hex."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def seal(path: Path) -> None:
    """Record the digest of ``path`` beside it (atomically)."""
    with atomic_path(_digest_path(path)) as tmp:
        tmp.write_text(file_digest(path) + "\n")


def check(path: Path) -> bool | None:
    """``True``: ``path`` matches its recorded digest; ``False``: it does not (or cannot be read);
    ``None``: it has no digest yet."""
    recorded = _digest_path(path)
    if not recorded.is_file():
        return None
    try:
        return recorded.read_text().strip() == file_digest(path)
    except OSError:
        return False


def quarantine(path: Path, why: str) -> None:
    """Move a corrupt ``path`` (and its digest) aside to ``<path>.corrupt``; one line on stderr says so.
    Called under the artefact's lock; a file another process has already moved is left alone."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    _digest_path(path).unlink(missing_ok=True)
    print(f"tokensim: cached file {path} is corrupt ({why}); moved to {aside.name} and rebuilding it", file=sys.stderr)


def _read(path: Path, load: Callable[[Path], T]) -> tuple[T | None, str | None]:
    """``(value, None)`` if ``path`` is intact and loads; ``(None, None)`` if it is missing; ``(None, why)``
    if it is corrupt. A file whose digest matches but does not load (out of memory, say) is not corrupt:
    that error is raised."""
    if not path.is_file():
        return None, None
    status = check(path)
    if status is False:
        return None, "its content does not match its SHA-256"
    try:
        value = load(path)
    except FileNotFoundError:  # moved aside by another process meanwhile
        return None, None
    except Exception as err:  # noqa: BLE001 (any reader's error on a bad file: safetensors, numpy, zip)
        if status is True:
            raise
        return None, f"{type(err).__name__}: {err}".splitlines()[0][:200]
    if status is None:
        try:
            seal(path)
        except OSError:  # a read-only shared cache: the file is used unsealed
            pass
    return value, None


def load_intact(path: Path, load: Callable[[Path], T]) -> T | None:
    """``load(path)`` if ``path`` exists and is intact; ``None`` if it is missing or was corrupt (then it
    has been moved aside, under the artefact's lock). A file without a digest that loads is sealed."""
    path = Path(path)
    value, why = _read(path, load)
    if why is None:
        return value
    with exclusive(path):
        value, why = _read(path, load)  # another process may have rebuilt it meanwhile
        if why is None:
            return value
        quarantine(path, why)
    return None


_LOCKS: dict[str, FileLock] = {}  # one lock object per artefact and process: re-entrant within the process


@contextmanager
def exclusive(path: Path):
    """Hold the lock of artefact ``path`` (``<path>.lock``) for the block: one builder at a time across
    processes. A process that has to wait says so on stderr."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = str(path.with_name(path.name + ".lock"))
    lock = _LOCKS.setdefault(name, FileLock(name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"tokensim: waiting for another process building {path.name}", file=sys.stderr)
        lock.acquire()
    try:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed outright; none is
            stale.unlink(missing_ok=True)  # being written now, as this process holds the lock
        yield
    finally:
        lock.release()


@contextmanager
def sealed(path: Path):
    """Yield a temporary name to write ``path`` to; on success it is renamed over ``path`` and sealed.
    The old digest goes before the rename, so a stop between rename and seal leaves a file without a
    digest (accepted if it loads), never a good file with a stale one."""
    with atomic_path(path) as tmp:
        yield tmp
        _digest_path(path).unlink(missing_ok=True)
    seal(path)
    record_kept(f"{path.parent.name}/", path.name)


_KEPT: list[tuple[str, str]] = []  # what this process finished for good, for the line an interrupted run prints


def record_kept(kind: str, name: str) -> None:
    """Note a finished artefact that outlives an interruption: a cached file (``kind`` its cache folder,
    such as ``checkpoints/``) or a sweep point (``kind`` ``"sweep point"``)."""
    _KEPT.append((kind, name))


def kept() -> list[tuple[str, str]]:
    """What :func:`record_kept` noted in this process, oldest first: ``(kind, name)``."""
    return list(_KEPT)


def load_or_build(path: Path, load: Callable[[Path], T], build: Callable[[Path], None]) -> T:
    """The artefact at ``path``: loaded if intact; else built by ``build(tmp)`` under the artefact's lock
    (unless another process built it meanwhile), sealed, and loaded."""
    path = Path(path)
    value = load_intact(path, load)
    if value is not None:
        return value
    with exclusive(path):
        value = load_intact(path, load)  # built by another process while this one waited
        if value is None:
            with sealed(path) as tmp:
                build(tmp)
            value = load(path)
    return value


def audit(root: Path) -> list[tuple[Path, str]]:
    """Every cached artefact under ``root`` that fails its digest: ``(path, problem)``."""
    bad = []
    for path in sorted(Path(root).rglob("*")):
        if path.suffix in ARTEFACT_SUFFIXES and path.is_file() and check(path) is False:
            bad.append((path, "content does not match its SHA-256"))
    return bad
