"""Fashion-MNIST read straight from its IDX files (Debian ``dataset-fashion-mnist``).

>>> images, labels = load(Path("/usr/share/datasets/fashion-mnist"), "test", count=5)
>>> images.shape, images.dtype, labels.dtype
((5, 28, 28), dtype('uint8'), dtype('int64'))
"""

import gzip
import math
import struct
from pathlib import Path

import numpy as np

# Label order of the data set; spelled as the item is spoken and written.
CLASS_NAMES: tuple[str, ...] = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_SIZES: dict[str, int] = {"train": 60_000, "test": 10_000}


def has_files(directory: Path) -> bool:
    """Whether ``directory`` holds all four gzipped IDX files."""
    return all((Path(directory) / name).is_file() for pair in FILES.values() for name in pair)


def read_idx(path: Path, count: int | None = None, start: int = 0) -> np.ndarray:
    """Items ``start`` to ``start + count`` (to the end if None) of a gzipped unsigned-byte IDX file.

    Output: uint8 ``[count, *item_shape]`` (``[count]`` for a label file).
    Only the bytes up to the last item are decompressed, so the first few items are cheap.
    """
    with gzip.open(path, "rb") as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"{path}: not an unsigned-byte IDX file")
        dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        count = dims[0] - start if count is None else min(count, dims[0] - start)
        size = count * math.prod(dims[1:])
        f.seek(f.tell() + start * math.prod(dims[1:]))
        data = f.read(size)
    if len(data) != size:
        raise ValueError(f"{path}: truncated, {len(data)} of {size} bytes")
    return np.frombuffer(data, np.uint8).reshape(count, *dims[1:])


def load(directory: Path, split: str, count: int | None = None, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images of ``split`` ("train": the 60k pool, "test": the 10k t10k pool) from index ``start``.

    Output: images uint8 ``[N, 28, 28]`` (0 = background), labels int64 ``[N]`` in 0..9
    indexing ``CLASS_NAMES``.
    """
    image_file, label_file = FILES[split]
    images = read_idx(Path(directory) / image_file, count, start)
    labels = read_idx(Path(directory) / label_file, count, start).astype(np.int64)
    return images, labels
