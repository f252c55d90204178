"""Where tokensim keeps what it generates outside git: data assets, encoder
features, trained encoders and checkpoints."""

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: ``$TOKENSIM_CACHE`` or ``~/.cache/tokensim``."""
    root = os.environ.get("TOKENSIM_CACHE") or Path.home() / ".cache" / "tokensim"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary file name beside ``path``; rename it over ``path`` only
    when the block succeeds, so a reader never sees a half-written file.

    >>> with atomic_path(Path("x.json")) as tmp:
    ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def digest(obj) -> str:
    """A short, stable hash of a JSON-able object: the key of a cache entry."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
