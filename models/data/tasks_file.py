"""``tasks.jsonl``, the task list of a ``folder`` data set: read, checked line by line, and fingerprinted.

One line is one task, a JSON object (docs/data.md)::

    {"split": "train", "question": "What instrument is playing?", "answer": "violin",
     "image": "frames/0001.png", "audio": "clips/0001.wav", "caption": "a girl plays the violin"}

``split`` (train, validation or test), ``question`` and ``answer`` are required; ``image`` (a file Pillow
reads), ``audio`` (a PCM WAV file) and ``caption`` are optional. Paths are relative to the folder.

:func:`read_tasks` checks every line and reads and decodes every file a line names, once per file. It
collects what is wrong, up to :data:`MAX_PROBLEMS` problems, each naming the line and the field, and raises
them together as one :class:`DataFolderError`. It also records the SHA-256 of every file, so that
:meth:`TasksFile.digest` (the key of cached features and checkpoints) follows the data's content.
"""

from __future__ import annotations

import hashlib
import io
import json
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import BadData
from models.data.splits import SPLITS, check_split
from models.paths import digest

FIELDS = ("split", "question", "answer", "image", "audio", "caption")
REQUIRED = ("split", "question", "answer")
FILE_KINDS = {"image": "image", "audio": "WAV file"}  # the fields that name a file, and what it must be
MAX_PROBLEMS = 50  # listed; more are counted


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with a folder data set: at ``line`` of tasks.jsonl (1-based; ``None`` for the folder
    or the file as a whole), in ``field`` (``None`` for the line as a whole)."""

    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"tasks.jsonl line {self.line}: " + (f"{self.field}: " if self.field else "") + self.message


class DataFolderError(BadData):
    """Everything found wrong with a folder data set (the first :data:`MAX_PROBLEMS`; ``more`` counts the
    rest). ``str()`` lists them one per line under the folder's name."""

    def __init__(self, folder: Path, problems: list[DataProblem], more: int = 0):
        self.folder, self.problems, self.more = folder, problems, more
        lines = [f"dataset.path {str(folder)!r} holds bad data:"] + [f"  {p}" for p in problems]
        if more:
            lines.append(f"  and {more} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Task:
    """One line of tasks.jsonl that passed every check; ``image`` and ``audio`` as written in the line."""

    line: int
    split: str
    question: str
    answer: str
    image: str | None = None
    audio: str | None = None
    caption: str | None = None


@dataclass(frozen=True)
class TasksFile:
    """A checked tasks.jsonl: its tasks in file order and the SHA-256 of every file they name."""

    folder: Path
    tasks: tuple[Task, ...]
    digests: dict[str, str]  # path as written in the lines -> SHA-256 of the file's bytes
    signature: tuple  # the stat of tasks.jsonl and of every file when they were read

    @property
    def answers(self) -> tuple[str, ...]:
        """The answer vocabulary: every answer of a train task, sorted."""
        return tuple(sorted({t.answer for t in self.tasks if t.split == "train"}))

    def split(self, split: str) -> list[Task]:
        """The tasks of ``split``, in file order."""
        check_split(split)
        return [t for t in self.tasks if t.split == split]

    def digest(self, split: str) -> str:
        """A hash of ``split``'s tasks in file order, with the content (not the name) of each file."""
        return digest(
            [
                [t.question, t.answer, t.caption, self.digests.get(t.image), self.digests.get(t.audio)]
                for t in self.split(split)
            ]
        )


def read_image(data: bytes, side_px: int | None = None) -> np.ndarray:
    """An image file's bytes -> uint8 ``[side_px, side_px, 3]`` RGB, centre-cropped to a square and resized
    (bilinear); without ``side_px``, decoded at its own size (``[H, W, 3]``). Pillow reads the format."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image = ImageOps.exif_transpose(image)  # as a viewer shows it
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            raise ValueError(f"its pixels are {image.mode} (16-bit or float); save it with 8 bits per channel")
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")  # transparent pixels become black, whatever colour they hold
            rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
        else:
            rgb = image.convert("RGB")
    if side_px is not None:
        rgb = ImageOps.fit(rgb, (side_px, side_px), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A PCM WAV file's bytes (8, 16, 24 or 32 bits, any number of channels) -> (float32 ``[T]`` in
    [-1, 1), the channels averaged; sample rate in Hz)."""
    with wave.open(io.BytesIO(_plain_pcm(data))) as w:
        channels, width, rate_hz = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width not in (1, 2, 3, 4):
        raise ValueError(f"{8 * width}-bit samples; tokensim reads 8-, 16-, 24- and 32-bit PCM")
    if not raw:
        raise ValueError("it holds no samples")
    if width == 1:  # unsigned bytes around 128
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    else:  # little-endian signed: put each sample in the top bytes of an int32
        padded = np.zeros((len(raw) // width, 4), np.uint8)
        padded[:, 4 - width :] = np.frombuffer(raw, np.uint8).reshape(-1, width)
        x = padded.view("<i4")[:, 0].astype(np.float32) / 2.0**31
    return x.reshape(-1, channels).mean(1), rate_hz


def _plain_pcm(data: bytes) -> bytes:
    """``data`` with a WAVE_FORMAT_EXTENSIBLE header of PCM samples marked plain PCM (what ffmpeg and most
    editors write above 16 bits or 2 channels; Python's ``wave`` reads it only from 3.12 on). The samples
    are the same; anything else is returned as it is, for ``wave`` to judge."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    at = 12
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        if data[at : at + 4] == b"fmt ":
            tag = int.from_bytes(data[at + 8 : at + 10], "little")
            pcm = size >= 40 and data[at + 32 : at + 34] == b"\x01\x00"  # the sub-format GUID's first two bytes
            if tag == 0xFFFE and pcm:
                return data[: at + 8] + b"\x01\x00" + data[at + 10 :]
            return data
        at += 8 + size + (size & 1)
    return data


_READ: dict[Path, TasksFile] = {}  # by folder: reused while tasks.jsonl and every file keep their stat


def read_tasks(folder: Path) -> TasksFile:
    """The checked tasks.jsonl of ``folder``; :class:`DataFolderError` lists what is wrong.

    Every file is read whole and decoded once; a folder read before is not read again while neither
    tasks.jsonl nor any file it names has changed (size, modification time, inode).
    """
    folder = Path(folder).expanduser().resolve()
    known = _READ.get(folder)
    if known is not None and known.signature == _signature(folder, known.digests):
        return known
    _READ[folder] = _read(folder)
    return _READ[folder]


def _stat(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _signature(folder: Path, files) -> tuple:
    return (_stat(folder / "tasks.jsonl"), tuple((name, _stat(folder / name)) for name in sorted(files)))


class _Problems:
    """The problems found so far: the first :data:`MAX_PROBLEMS` kept, the rest counted."""

    def __init__(self):
        self.kept: list[DataProblem] = []
        self.more = 0

    def add(self, line: int | None, field: str | None, message: str) -> None:
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(DataProblem(line, field, message))
        else:
            self.more += 1


def _read(folder: Path) -> TasksFile:
    problems = _Problems()
    path = folder / "tasks.jsonl"
    if not folder.is_dir():
        raise DataFolderError(folder, [DataProblem(None, None, "is not a folder")])
    if not path.is_file():
        raise DataFolderError(folder, [DataProblem(None, None, "has no tasks.jsonl (one task per line)")])
    before = _stat(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFolderError(
            folder, [DataProblem(None, None, f"tasks.jsonl is not UTF-8 text ({err.reason})")]
        ) from None
    checked: dict[tuple, tuple[str | None, str | None]] = {}  # (field, file as written) -> (SHA-256, problem)
    tasks, records = [], []
    # lines end at "\n" alone, as JSON Lines has it (str.splitlines would also break inside a JSON string at
    # U+2028 and the like, which json.dumps writes unescaped with ensure_ascii=False)
    for number, line in enumerate(text.removesuffix("\n").split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            task, record = _check_line(number, line, folder, checked, problems)
            tasks += [task] if task is not None else []
            records += [(number, record)] if record is not None else []
    # what the lines say, faulty or not: a fault elsewhere in a train line does not hide its answer
    said = [(n, r.get("split"), r.get("answer")) for n, r in records]
    said = [(n, split, answer if isinstance(answer, str) else None) for n, split, answer in said if split in SPLITS]
    answers = {answer for _, split, answer in said if split == "train"}
    for number, split, answer in said:
        if split != "train" and answer is not None and answer not in answers:
            problems.add(number, "answer", f"{answer!r} is the answer of no train task (a model answers only "
                         "with the train split's answers)")  # fmt: skip
    missing = [s for s in SPLITS if s not in {split for _, split, _ in said}]
    if missing:
        problems.add(None, None, f"tasks.jsonl has no {' and no '.join(missing)} task; every split needs one")
    if problems.kept:
        by_line = sorted(problems.kept, key=lambda p: (p.line is None, p.line or 0))  # stable: fields in order
        raise DataFolderError(folder, by_line, problems.more)
    digests = {name: sha for (_, name), (sha, _) in checked.items()}
    return TasksFile(folder, tuple(tasks), digests, (before, _signature(folder, digests)[1]))


def _check_line(number: int, line: str, folder: Path, checked: dict, problems: _Problems):
    """``(task, record)`` of line ``number``: the task ``None`` after adding each of its problems to
    ``problems``; the record (the JSON object) ``None`` if the line is none."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        problems.add(number, None, f"is not valid JSON ({err.msg} at column {err.colno})")
        return None, None
    if not isinstance(record, dict):
        problems.add(number, None, f"is a JSON {type(record).__name__}, not an object of fields")
        return None, None
    faults = len(problems.kept) + problems.more
    for field in record:
        if field not in FIELDS:
            problems.add(number, field, f"is not a field of a task; allowed: {', '.join(FIELDS)}")
    for field in REQUIRED:
        if field not in record:
            problems.add(number, field, "is required")
    for field in FIELDS:
        value = record.get(field)
        if field not in record:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.add(number, field, f"must be a non-empty string, not {json.dumps(value)}")
        elif field == "split" and value not in SPLITS:
            problems.add(number, field, f"{value!r} is not one of {', '.join(SPLITS)}")
        elif field in FILE_KINDS and not _inside(folder, value):
            problems.add(number, field, f"{value!r} is not a path inside the folder (relative, no way out by ..)")
        elif field in FILE_KINDS:
            if (field, value) not in checked:  # a picture is no WAV file: checked once as each
                checked[field, value] = _check_file(folder / value, field)
            if checked[field, value][1] is not None:
                problems.add(number, field, f"{value!r} {checked[field, value][1]}")
    if len(problems.kept) + problems.more > faults:
        return None, record
    return Task(number, **{field: record.get(field) for field in FIELDS}), record


def _inside(folder: Path, value: str) -> bool:
    """Whether ``value`` names a path inside ``folder`` (relative, and not leading out of it)."""
    return not Path(value).is_absolute() and (folder / value).resolve().is_relative_to(folder.resolve())


def _check_file(path: Path, field: str) -> tuple[str | None, str | None]:
    """``(SHA-256 of the file, None)`` if the file reads and decodes as the ``field`` (image or audio)
    needs; ``(None, what is wrong)`` otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"does not exist ({path})"
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err}: {path})"
    try:
        read_image(data) if field == "image" else read_wav(data)
    except Exception as err:  # noqa: BLE001 (whatever the decoder says of a bad file is the user's answer)
        reason = "Pillow does not know its format" if type(err).__name__ == "UnidentifiedImageError" else err
        return None, f"is not a readable {FILE_KINDS[field]} ({reason})"
    return hashlib.sha256(data).hexdigest(), None
