"""Data sets, by the name a scenario gives them: the built-in ``fashion-avqa`` and ``folder``, your own.

Every data set offers the same interface, through which training, evaluation and the metrics reach it
(nothing outside this package names a data set's answers or question types):

- ``answers``: the answer vocabulary, as words; ``question_needs``: each question type (in the order
  ``tasks()["question_type"]`` indexes) and the modalities besides the text its answer needs;
  ``question_types_in(split)``: the types a split asks.
- ``tasks(split, num_tasks, modalities, stream)``: a group's tasks, as index columns into the items below.
- ``images(split)``, ``speech(split)``, ``questions(split)``: the items the frozen encoders run on;
  ``num_items(split, modality)``; ``image_key(split)`` and ``speech_key(split)``: what decides them,
  for the keys of their cached features and of the audio encoder.
- ``captions()``: the texts stage 1 aligns image and audio tokens to (``image_label``/``clip_label`` index it).
- The config's ``identity()``: what of the data shapes a trained model, for the checkpoint's key.
"""

from typing import Annotated

from pydantic import Discriminator, Tag

from models.data.fashion_avqa import (
    ANSWERS,
    CLASS_NAMES,
    QUESTION_TYPES,
    FashionAVQA,
    FashionAVQAConfig,
    MissingDataError,
    QuestionType,
)
from models.data.folder import FolderConfig, FolderDataset
from models.data.tasks_file import DataFolderError

DATASETS = {"fashion-avqa": FashionAVQA, "folder": FolderDataset}


def _dataset_name(section) -> str:
    """Which config a ``dataset`` section is: its ``name``, fashion-avqa where it gives none (and for what
    is no section at all, which that config then rejects)."""
    if isinstance(section, dict):
        return section.get("name", "fashion-avqa")
    return getattr(section, "name", "fashion-avqa")


# The scenario's ``dataset`` section: one config per data set, told apart by ``name``.
DatasetConfig = Annotated[
    Annotated[FashionAVQAConfig, Tag("fashion-avqa")] | Annotated[FolderConfig, Tag("folder")],
    Discriminator(_dataset_name),
]

__all__ = [
    "ANSWERS",
    "CLASS_NAMES",
    "DATASETS",
    "QUESTION_TYPES",
    "DataFolderError",
    "DatasetConfig",
    "FashionAVQA",
    "FashionAVQAConfig",
    "FolderConfig",
    "FolderDataset",
    "MissingDataError",
    "QuestionType",
]
