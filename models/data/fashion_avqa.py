"""``fashion-avqa``: the built-in audio-visual question-answering data set.

A labelled synthetic benchmark. Its modalities are paired **by label**, not
recorded together: a real Fashion-MNIST image, a synthetic spoken item name
(espeak-ng; the same item or another one), a caption per class for stage 1
(class name plus its WordNet 3.0 gloss) and, for stage 2, a question whose
answer needs the image, the speech or both. No single modality can answer
every question: "What item is pictured?" needs the image, "Which item does
the speaker name?" needs the speech, and "Is the spoken item the same as the
pictured one?" needs both.

>>> data = FashionAVQA(FashionAVQAConfig(train_images=20, train_clips=12, seed=0))
>>> images, labels = data.images("train")            # uint8 [20, 28, 28], int64 [20]
>>> clips, clip_labels = data.speech("train")        # float32 [12, 20000], int64 [12]
>>> batch = data.tasks("train", 8, frozenset({"text", "image", "audio"}), stream=1)
>>> str(batch["question"][0]) in QUESTION_TYPES[data.question_type_names[batch["question_type"][0]]].templates
True
"""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.cache import load_or_build
from models.config import SEED_LIMIT, SnrDb
from models.data import fashion_mnist, speech, wordnet
from models.data.fashion_mnist import CLASS_NAMES
from models.data.fashion_questions import (  # noqa: F401 - QuestionType and QUESTIONS: the data set's names
    ANSWER_OF,
    ANSWERS,
    QUESTION_TYPES,
    QUESTIONS,
    QuestionType,
    balanced_labels,
    question_index,
)
from models.data.splits import SPLIT_STREAM, check_modalities, check_split
from models.paths import cache_dir

SPEECH_VERSION = 1  # bump when speech.py changes what a cached clip holds
# What the data set reads from Debian packages: (config field, check of its value, package, what is wrong).
_DEBIAN_DATA = (
    ("fashion_mnist_dir", fashion_mnist.has_files, "dataset-fashion-mnist", "has no Fashion-MNIST files"),
    ("wordnet_dir", wordnet.has_files, "wordnet-base", "has no WordNet 3.0 noun database (index.noun, data.noun)"),
    (
        "espeak_ng",
        lambda exe: shutil.which(exe) is not None,
        "espeak-ng",
        "is not an executable (a name on PATH or a path)",
    ),
)


class MissingDataError(FileNotFoundError):
    """Files of a Debian package that the data set needs are not where the
    scenario says; the message names the scenario key and the package."""

    def __init__(self, key: str, value, package: str, problem: str):
        self.key, self.value, self.package, self.problem = key, value, package, problem
        super().__init__(
            f"{key}: {str(value)!r} {problem}; install {'it' if package == 'espeak-ng' else 'them'} "
            f"with: sudo apt-get install {package}"
        )


class FashionAVQAConfig(BaseModel):
    """The ``dataset`` section of a scenario for ``fashion-avqa``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["fashion-avqa"] = Field(
        "fashion-avqa", description="Data set name: fashion-avqa (built in) or folder (your own, docs/data.md)."
    )
    fashion_mnist_dir: Path = Field(
        Path("/usr/share/datasets/fashion-mnist"), description="Folder of the gzipped Fashion-MNIST IDX files."
    )
    wordnet_dir: Path = Field(
        Path("/usr/share/wordnet"), description="Folder of WordNet 3.0's index.noun and data.noun."
    )
    espeak_ng: str = Field("espeak-ng", description="espeak-ng executable, a name on PATH or a path.")
    seed: int = Field(
        0,
        ge=0,
        lt=SEED_LIMIT,
        description="Decides the data: the synthesised speech, the audio encoder and every split's tasks. "
        "The scenario's seed decides the model (initialisation, training batches, channel noise).",
    )
    train_images: int = Field(
        6000, gt=0, le=fashion_mnist.SPLIT_SIZES["train"], description="First images of the 60k training pool."
    )
    validation_images: int = Field(
        1000,
        gt=0,
        le=fashion_mnist.SPLIT_SIZES["train"],
        description="Last images of the 60k training pool (none of them among the train_images).",
    )
    test_images: int = Field(
        1000, gt=0, le=fashion_mnist.SPLIT_SIZES["test"], description="First images of the 10k test pool (t10k files)."
    )
    train_clips: int = Field(2000, gt=0, description="Spoken clips for training (training speakers).")
    validation_clips: int = Field(
        500, gt=0, description="Spoken clips for validation (speakers in neither train nor test)."
    )
    test_clips: int = Field(500, gt=0, description="Spoken clips for testing (held-out speakers).")
    sample_rate_hz: int = Field(16000, gt=0, description="Sample rate of the clips in Hz.")
    clip_seconds: float = Field(1.25, gt=0, description="Clip length in seconds, centred on the speech.")
    noise_snr_db: tuple[SnrDb, SnrDb] = Field(
        (5.0, 30.0), description="Background-noise SNR per clip in dB, uniform in [low, high]."
    )
    question_types: list[str] = Field(
        default_factory=lambda: list(QUESTION_TYPES),
        min_length=1,
        description=f"Question types asked, among {', '.join(QUESTION_TYPES)}.",
    )

    @field_validator("question_types")
    @classmethod
    def _known_question_types(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in QUESTION_TYPES:
                raise ValueError(f"{name!r} is not one of {', '.join(QUESTION_TYPES)}")
        if len(set(names)) != len(names):
            raise ValueError("repeats a name")
        return names

    @model_validator(mode="after")
    def _ordered_snr(self):
        if self.noise_snr_db[0] > self.noise_snr_db[1]:
            raise ValueError(f"noise_snr_db {list(self.noise_snr_db)} must be [low, high] with low <= high")
        pool = fashion_mnist.SPLIT_SIZES["train"]
        if self.train_images + self.validation_images > pool:
            raise ValueError(
                f"train_images {self.train_images} + validation_images {self.validation_images} must be at most "
                f"{pool}: both come from the 60k training pool and must not overlap"
            )
        return self

    def count(self, split: str, kind: str) -> int:
        """How many ``kind`` ("images" or "clips") ``split`` holds."""
        return getattr(self, f"{check_split(split)}_{kind}")

    def identity(self) -> dict:
        """What of the data shapes a trained model (the data set's part of a checkpoint's key): every key
        but where the Debian data lie and the test split's sizes."""
        return self.model_dump(
            mode="json", exclude={"fashion_mnist_dir", "wordnet_dir", "espeak_ng", "test_images", "test_clips"}
        )


class FashionAVQA:
    """Images, spoken item names, class captions and question-answer tasks.

    Cheap to build: it only checks that the Debian packages are there. Images
    are read and speech is synthesised (then cached on disk) on first use.
    """

    answers = ANSWERS

    def __init__(self, config: FashionAVQAConfig):
        self.config, self.seed = config, config.seed
        for field, present, package, problem in _DEBIAN_DATA:
            if not present(getattr(config, field)):
                raise MissingDataError(f"dataset.{field}", getattr(config, field), package, problem)
        self._images: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._speech: dict[str, dict[str, np.ndarray]] = {}

    @property
    def question_type_names(self) -> list[str]:
        """The config's question types, in order; ``tasks()["question_type"]`` indexes this."""
        return list(self.config.question_types)

    @property
    def question_needs(self) -> dict[str, frozenset[str]]:
        """The config's question types, in order, and the modalities besides the text each one needs."""
        return {name: QUESTION_TYPES[name].needs for name in self.config.question_types}

    def question_types_in(self, split: str) -> list[str]:
        """The question types ``split`` asks: every split asks every type of the config."""
        return self.question_type_names

    def questions(self, split: str) -> tuple[str, ...]:
        """Every question text (each type's paraphrases), the same for every split;
        ``tasks()["question_index"]`` indexes it."""
        return QUESTIONS

    def num_items(self, split: str, modality: str) -> int:
        """How many images, clips or question texts (``modality`` image, audio, text) ``split`` holds."""
        if modality == "text":
            return len(QUESTIONS)
        return self.config.count(split, {"image": "images", "audio": "clips"}[modality])

    def image_key(self, split: str) -> dict:
        """What decides the images of ``split``: part of their cached features' key."""
        return {"split": split, "num_images": self.config.count(split, "images")}

    def speech_key(self, split: str) -> str:
        """What decides the clips of ``split`` (their cache file's name): part of the keys of their
        features and, for train, of the audio encoder trained on them."""
        return self.speech_path(split).stem

    def images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 ``[N, 28, 28]`` and labels int64 ``[N]`` (index into CLASS_NAMES);
        N is the config's ``<split>_images``. Train takes the first images of the 60k pool,
        validation its last, test the first of the 10k t10k pool."""
        if split not in self._images:
            count = self.config.count(split, "images")
            if split == "validation":
                start = fashion_mnist.SPLIT_SIZES["train"] - count
                self._images[split] = fashion_mnist.load(self.config.fashion_mnist_dir, "train", count, start)
            else:
                self._images[split] = fashion_mnist.load(self.config.fashion_mnist_dir, split, count)
        return self._images[split]

    def speech(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Clips float32 ``[N, round(sample_rate_hz * clip_seconds)]`` in [-1, 1] and
        labels int64 ``[N]`` (the spoken class); N is the config's ``<split>_clips``."""
        stored = self._load_speech(split)
        return stored["clips"].astype(np.float32) / 32767.0, stored["labels"]

    def speakers(self, split: str) -> np.ndarray:
        """The espeak-ng voice of each clip, str ``[N]`` (e.g. ``"en-029+f2"``)."""
        return self._load_speech(split)["voices"]

    def speech_path(self, split: str) -> Path:
        """Cache file of the clips of ``split``, keyed by everything that shapes them."""
        c = self.config
        shape = dict(
            version=SPEECH_VERSION,
            seed=self.seed,
            split=split,
            num_clips=c.count(split, "clips"),
            sample_rate_hz=c.sample_rate_hz,
            clip_seconds=c.clip_seconds,
            noise_snr_db=c.noise_snr_db,
        )
        key = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
        return cache_dir() / "data" / "fashion-avqa" / f"speech-{key}.npz"

    def captions(self) -> list[str]:
        """One caption per class, in label order: ``"<class name>: <WordNet gloss>"``."""
        glosses = wordnet.class_glosses(self.config.wordnet_dir)
        return [f"{name}: {glosses[name]}" for name in CLASS_NAMES]

    def tasks(self, split: str, num_tasks: int, modalities: frozenset[str], stream: int) -> dict[str, np.ndarray]:
        """``num_tasks`` question-answer tasks for a group that can send ``modalities``
        (a subset of {"image", "audio", "text"} holding "text", the question).

        Only question types whose needs are within ``modalities`` are asked, each
        equally often. Every task still names an image and a clip, since the
        sender sends them anyway. Returns arrays of length ``num_tasks``:
        ``image_index``, ``clip_index`` int64 (into ``images(split)``/``speech(split)``),
        ``question_type`` int64 (into ``question_type_names``), ``question`` object
        (str), ``question_index`` int64 (into ``questions(split)``), ``answer`` int64 (into ANSWERS),
        ``image_label``, ``clip_label`` int64 (into CLASS_NAMES and ``captions()``).
        The data set's seed and the same arguments give the same tasks; ``stream`` tells apart
        the task lists drawn from one split (one per group).
        """
        modalities = check_modalities(modalities)
        names = self.question_type_names
        allowed = [i for i, name in enumerate(names) if QUESTION_TYPES[name].needs <= modalities]
        if not allowed:
            raise ValueError(
                f"modalities: no question type among {', '.join(names)} can be answered from {sorted(modalities)}"
            )
        image_labels, clip_labels = self.images(split)[1], self.speech(split)[1]
        rng = np.random.default_rng([self.seed, SPLIT_STREAM[check_split(split)], stream])
        question_type = np.asarray(allowed)[rng.integers(len(allowed), size=num_tasks)]
        image_index = rng.integers(len(image_labels), size=num_tasks)
        clip_index = rng.integers(len(clip_labels), size=num_tasks)
        questions = np.empty(num_tasks, dtype=object)
        answer = np.empty(num_tasks, dtype=np.int64)
        for t in allowed:
            rows = np.flatnonzero(question_type == t)
            image_label, clip_label = balanced_labels(names[t], rng, len(rows), image_labels, clip_labels)
            if image_label is not None:
                image_index[rows] = _index_of_label(rng, image_labels, image_label)
            if clip_label is not None:
                clip_index[rows] = _index_of_label(rng, clip_labels, clip_label)
            answer[rows] = ANSWER_OF[names[t]](image_labels[image_index[rows]], clip_labels[clip_index[rows]])
            templates = QUESTION_TYPES[names[t]].templates
            questions[rows] = np.asarray(templates, dtype=object)[rng.integers(len(templates), size=len(rows))]
        return {
            "image_index": image_index,
            "clip_index": clip_index,
            "question_type": question_type,
            "question": questions,
            "question_index": question_index(questions),
            "answer": answer,
            "image_label": image_labels[image_index],
            "clip_label": clip_labels[clip_index],
        }

    def _load_speech(self, split: str) -> dict[str, np.ndarray]:
        """The cached clips of ``split`` (int16 ``clips``, ``labels``, ``voices``), made if missing."""
        if split in self._speech:
            return self._speech[split]
        path = self.speech_path(split)

        def read(p: Path) -> dict[str, np.ndarray]:
            with np.load(p) as stored:
                return {k: stored[k] for k in ("clips", "labels", "voices")}

        def build(tmp: Path) -> None:
            c = self.config
            num_clips = c.count(split, "clips")
            rng = np.random.default_rng([self.seed, SPLIT_STREAM[split]])
            labels = rng.permutation(np.arange(num_clips) % len(CLASS_NAMES))  # classes as even as N allows
            variants = speech.VARIANTS[split]
            specs = speech.plan_clips([CLASS_NAMES[i] for i in labels], variants, c.noise_snr_db, rng)
            clips = speech.render_clips(
                specs, c.espeak_ng, c.sample_rate_hz, c.clip_seconds, desc=f"fashion-avqa {split} speech"
            )
            with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a name
                np.savez(
                    f,
                    clips=np.round(clips * 32767).astype(np.int16),
                    labels=labels,
                    voices=np.array([s.voice for s in specs]),
                    speed_wpm=np.array([s.speed_wpm for s in specs]),
                    pitch=np.array([s.pitch for s in specs]),
                    snr_db=np.array([s.snr_db for s in specs]),
                )

        self._speech[split] = load_or_build(path, read, build)
        return self._speech[split]


def _index_of_label(rng: np.random.Generator, labels: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each wanted class, a random index ``i`` with ``labels[i] == wanted``; int64 ``[len(wanted)]``."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    starts = np.cumsum(counts) - counts
    return order[starts[wanted] + (rng.random(len(wanted)) * counts[wanted]).astype(np.int64)]
