"""``folder``: a data set of your own, read from a folder holding ``tasks.jsonl`` (docs/data.md).

Each line of ``tasks.jsonl`` is one task of one split: a question, its answer and, optionally, an image, a
WAV clip and a caption (:mod:`models.data.tasks_file` reads and checks it). From it:

- **answers**: the answer vocabulary is every answer of the train split, sorted; validation and test
  answers must be among them.
- **items**: a split's images, clips and question texts are its distinct files and strings, sorted; the
  frozen encoders run on those once and their features are cached under the files' content hashes.
- **question types**: the file names none, so a task's type is what it carries besides its question,
  taken as what its answer needs: ``text`` (the question alone), ``image``, ``audio`` or ``image+audio``.
  A group draws the tasks it can answer; per-type and per-user accuracies go by these types.
- **items a task lacks**: a group that sends an image sends one with every task, as a device would; for a
  task without an image that is a random image of the split (the same for a clip), as in fashion-avqa.
- **stage 1 (alignment)**: a task's ``caption`` is the text its image and clip are pulled towards; tasks
  without one stay out of the InfoNCE terms (label -1), and a set without captions aligns only the
  question tokens (the reconstruction term).
- **audio encoder**: trained as for fashion-avqa, on the train clips, each labelled by the answer of the
  first train task that carries it.

>>> data = FolderDataset(FolderConfig(name="folder", path="my-avqa"))
>>> batch = data.tasks("train", 8, frozenset({"text", "image"}), stream=0)   # tasks of types text, image
>>> [data.answers[a] for a in batch["answer"]]
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from models.config import Seed, Strict
from models.data import speech
from models.data.splits import SPLIT_STREAM, SPLITS, check_modalities, check_split
from models.data.tasks_file import DataFolderError, DataProblem, Task, read_image, read_tasks, read_wav
from models.paths import digest

# A task's type from what it carries besides the question: the modalities its answer needs.
QUESTION_KINDS: dict[str, frozenset[str]] = {
    "text": frozenset(),
    "image": frozenset({"image"}),
    "audio": frozenset({"audio"}),
    "image+audio": frozenset({"image", "audio"}),
}


class FolderConfig(Strict):
    """The ``dataset`` section of a scenario for ``folder``."""

    name: Literal["folder"] = Field(description="Data set name: folder, your own tasks in dataset.path.")
    path: Path = Field(
        description="Folder holding tasks.jsonl and the files its lines name (docs/data.md); a relative path "
        "is taken from the directory tokensim runs in."
    )
    seed: Seed = Field(
        0,
        description="Decides the data's draws: which tasks each group gets in which order, the stand-in items "
        "of tasks that lack one, the audio encoder. The scenario's seed decides the model.",
    )
    image_side_px: int = Field(
        128,
        ge=32,
        le=1024,
        description="Images are read as RGB, centre-cropped to a square and resized to this side; the image "
        "encoder then resizes them to models.image_size_px.",
    )
    sample_rate_hz: int = Field(16000, ge=8000, le=96000, description="Clips are resampled to this rate in Hz.")
    clip_seconds: float = Field(
        5.0, gt=0, le=600, description="Clips are cut around their active span, or padded with silence, to this length."
    )

    def identity(self) -> dict:
        """What of the data shapes a trained model (the data set's part of a checkpoint's key): this section
        but the folder's name, and the content of the train and validation tasks and of their files."""
        data = read_tasks(self.path)
        return self.model_dump(mode="json", exclude={"path"}) | {s: data.digest(s) for s in ("train", "validation")}


class _Split:
    """The tasks of one split as index columns (int64, one row per task) into its items and the answers:
    ``image``, ``clip`` (-1: none), ``question``, ``answer``, ``kind`` (into QUESTION_KINDS) and
    ``caption`` (into the train captions; -1: none)."""

    def __init__(self, tasks: list[Task], answers: tuple[str, ...], captions: tuple[str, ...]):
        self.images = tuple(sorted({t.image for t in tasks if t.image}))
        self.clips = tuple(sorted({t.audio for t in tasks if t.audio}))
        self.questions = tuple(sorted({t.question for t in tasks}))

        def column(values, among) -> np.ndarray:
            lookup = {v: i for i, v in enumerate(among)}
            return np.array([lookup.get(v, -1) for v in values], dtype=np.int64)

        self.image, self.clip = (
            column([t.image for t in tasks], self.images),
            column([t.audio for t in tasks], self.clips),
        )
        self.question = column([t.question for t in tasks], self.questions)
        self.answer = column([t.answer for t in tasks], answers)
        self.caption = column([t.caption for t in tasks], captions)
        kinds = ["+".join(m for m in ("image", "audio") if getattr(t, m)) or "text" for t in tasks]
        self.kind = column(kinds, QUESTION_KINDS)

    def item_answers(self, index: np.ndarray) -> np.ndarray:
        """int64 ``[num_items]``: for each item of column ``index``, the answer of the first task (in file
        order) that carries it."""
        rows = np.flatnonzero(index >= 0)
        first = np.unique(index[rows], return_index=True)[1]  # every item has a task: all of them appear
        return self.answer[rows[first]]


class FolderDataset:
    """Tasks, images, clips and captions of a folder data set, with the interface of
    :class:`~models.data.fashion_avqa.FashionAVQA`.

    Building it reads and checks tasks.jsonl and every file it names (:func:`read_tasks`; raises
    :class:`DataFolderError`); images and clips are decoded when a split's are first asked for.
    """

    def __init__(self, config: FolderConfig):
        self.config, self.seed = config, config.seed
        self.file = read_tasks(config.path)
        self.answers = self.file.answers
        self._captions = tuple(sorted({t.caption for t in self.file.split("train") if t.caption}))
        self._splits = {s: _Split(self.file.split(s), self.answers, self._captions) for s in SPLITS}
        self._images: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._speech: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def question_type_names(self) -> list[str]:
        """Every question type a folder task can have; ``tasks()["question_type"]`` indexes this."""
        return list(QUESTION_KINDS)

    @property
    def question_needs(self) -> dict[str, frozenset[str]]:
        """Each question type and the modalities besides the text its answer needs."""
        return dict(QUESTION_KINDS)

    def question_types_in(self, split: str) -> list[str]:
        """The question types of ``split``'s tasks."""
        present = set(self._splits[check_split(split)].kind.tolist())
        return [name for k, name in enumerate(QUESTION_KINDS) if k in present]

    def questions(self, split: str) -> tuple[str, ...]:
        """The distinct question texts of ``split``, sorted; ``tasks()["question_index"]`` indexes it."""
        return self._splits[check_split(split)].questions

    def num_items(self, split: str, modality: str) -> int:
        """How many distinct images, clips or question texts (``modality`` image, audio, text) ``split`` holds."""
        table = self._splits[check_split(split)]
        return len({"image": table.images, "audio": table.clips, "text": table.questions}[modality])

    def captions(self) -> list[str]:
        """The distinct captions of the train tasks, sorted; ``image_label`` and ``clip_label`` index it."""
        return list(self._captions)

    def images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 ``[N, image_side_px, image_side_px, 3]`` (RGB) of ``split``'s distinct image files,
        sorted by name, and labels int64 ``[N]``: the answer (into ``answers``) of the first task showing it."""
        if split not in self._images:
            table, side = self._splits[check_split(split)], self.config.image_side_px
            images = np.zeros((len(table.images), side, side, 3), np.uint8)
            for i, name in enumerate(table.images):
                images[i] = read_image(self._read(name, "image"), side)
            self._images[split] = images, table.item_answers(table.image)
        return self._images[split]

    def speech(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Clips float32 ``[N, round(sample_rate_hz * clip_seconds)]`` of ``split``'s distinct WAV files,
        sorted by name (channels averaged, resampled, cut or padded around their active span), and labels
        int64 ``[N]``: the answer of the first task carrying it (what the audio encoder learns to tell)."""
        if split not in self._speech:
            c, table = self.config, self._splits[check_split(split)]
            num_samples = round(c.sample_rate_hz * c.clip_seconds)
            clips = np.zeros((len(table.clips), num_samples), np.float32)
            for i, name in enumerate(table.clips):
                wave, rate_hz = read_wav(self._read(name, "audio"))
                clips[i] = speech.fit_clip(wave, rate_hz, c.sample_rate_hz, num_samples)
            self._speech[split] = clips, table.item_answers(table.clip)
        return self._speech[split]

    def image_key(self, split: str) -> dict:
        """What decides the images of ``split`` (their files' content and the side they are read at):
        part of their cached features' key."""
        names = self._splits[check_split(split)].images
        return {
            "split": split,
            "images": digest([self.file.digests[n] for n in names]),
            "side_px": self.config.image_side_px,
        }

    def speech_key(self, split: str) -> str:
        """What decides the clips of ``split`` (their files' content, labels, rate and length): part of the
        keys of their features and, for train, of the audio encoder trained on them."""
        table, c = self._splits[check_split(split)], self.config
        content = {
            "clips": [self.file.digests[n] for n in table.clips],
            "labels": table.item_answers(table.clip).tolist(),
            "answers": self.answers,
            "sample_rate_hz": c.sample_rate_hz,
            "clip_seconds": c.clip_seconds,
            "seed": self.seed,  # it seeds the audio encoder trained on the train clips
        }
        return f"folder-{split}-{digest(content)}"

    def tasks(self, split: str, num_tasks: int, modalities: frozenset[str], stream: int) -> dict[str, np.ndarray]:
        """``num_tasks`` tasks of ``split`` for a group that sends ``modalities`` (holding "text").

        The tasks the group can answer (whose type needs only what it sends) come in a random order, every
        one before any comes again. A task without an image gets a random image of the split in
        ``image_index`` (the same for clips). Returns arrays of length ``num_tasks``, as
        :meth:`FashionAVQA.tasks` does: ``image_index``, ``clip_index``, ``question_type`` (into
        ``question_type_names``), ``question`` (str), ``question_index`` (into ``questions(split)``),
        ``answer`` (into ``answers``), ``image_label``, ``clip_label`` (into ``captions()``; -1: the task
        has no caption, or does not carry that item). The seed and the same arguments give the same tasks;
        ``stream`` tells apart the lists drawn from one split (one per group).
        """
        modalities = check_modalities(modalities)
        table = self._splits[check_split(split)]
        allowed = [k for k, needs in enumerate(QUESTION_KINDS.values()) if needs <= modalities]
        eligible = np.flatnonzero(np.isin(table.kind, allowed))
        if not len(eligible):
            raise ValueError(
                f"modalities: no {split} task of {self.config.path} can be answered from {sorted(modalities)}"
            )
        rng = np.random.default_rng([self.seed, SPLIT_STREAM[split], stream])
        rows = rng.permutation(eligible)[np.arange(num_tasks) % len(eligible)]
        out = {}
        for m, column, count in (("image", table.image, len(table.images)), ("audio", table.clip, len(table.clips))):
            if m in modalities and not count:
                raise ValueError(f"modalities: the {split} split of {self.config.path} has no {m} to send")
            index = column[rows]
            stand_in = rng.integers(max(count, 1), size=num_tasks)  # drawn for every task: the draws stay aligned
            out[m] = np.where(index >= 0, index, stand_in)
            out[f"{m}_label"] = np.where(index >= 0, table.caption[rows], -1)
        questions = np.empty(num_tasks, dtype=object)
        questions[:] = [table.questions[q] for q in table.question[rows]]
        return {
            "image_index": out["image"],
            "clip_index": out["audio"],
            "question_type": table.kind[rows],
            "question": questions,
            "question_index": table.question[rows],
            "answer": table.answer[rows],
            "image_label": out["image_label"],
            "clip_label": out["audio_label"],
        }

    def _read(self, name: str, field: str) -> bytes:
        """The bytes of file ``name``, as they were when checked (else :class:`DataFolderError`)."""
        data = (self.file.folder / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != self.file.digests[name]:
            problem = DataProblem(None, field, f"{name!r} changed since tasks.jsonl was checked; run again")
            raise DataFolderError(self.file.folder, [problem])
        return data
