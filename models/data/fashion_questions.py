"""The questions of ``fashion-avqa``: their types, paraphrases and answers, and how a yes/no type draws
the items that make its answers half yes, half no."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data.fashion_mnist import CLASS_NAMES

ANSWERS: tuple[str, ...] = CLASS_NAMES + ("yes", "no")
YES, NO = ANSWERS.index("yes"), ANSWERS.index("no")
FOOTWEAR = np.isin(CLASS_NAMES, ("sandal", "sneaker", "ankle boot"))  # bool [10]
UPPER_BODY = np.isin(CLASS_NAMES, ("t-shirt", "pullover", "coat", "shirt"))  # bool [10]


@dataclass(frozen=True)
class QuestionType:
    """A kind of question: the modalities its answer needs besides the text, and
    paraphrases of it."""

    name: str
    needs: frozenset[str]
    templates: tuple[str, ...]


QUESTION_TYPES: dict[str, QuestionType] = {
    q.name: q
    for q in (
        QuestionType(
            "image_item",
            frozenset({"image"}),
            ("What item is pictured?", "What is shown in the picture?", "Which item does the image show?"),
        ),
        QuestionType(
            "speech_item",
            frozenset({"audio"}),
            ("Which item does the speaker name?", "What item is spoken?", "Which item do you hear named?"),
        ),
        QuestionType(
            "same_item",
            frozenset({"image", "audio"}),
            (
                "Is the spoken item the same as the pictured one?",
                "Does the speaker name the item in the picture?",
                "Do the picture and the speech show the same item?",
            ),
        ),
        QuestionType(
            "image_footwear",
            frozenset({"image"}),
            (
                "Is the pictured item footwear?",
                "Is the item in the picture worn on the feet?",
                "Does the image show footwear?",
            ),
        ),
        QuestionType(
            "speech_upper_body",
            frozenset({"audio"}),
            (
                "Is the spoken item worn on the upper body?",
                "Does the speaker name something worn on the upper body?",
                "Is the item the speaker names upper-body clothing?",
            ),
        ),
    )
}
# Every question text, in a fixed order: the rows of the text encoder's features.
QUESTIONS: tuple[str, ...] = tuple(t for q in QUESTION_TYPES.values() for t in q.templates)

# Answer index (into ANSWERS) from the image and clip labels, int64 [N] each.
ANSWER_OF = {
    "image_item": lambda image, clip: image,
    "speech_item": lambda image, clip: clip,
    "same_item": lambda image, clip: np.where(image == clip, YES, NO),
    "image_footwear": lambda image, clip: np.where(FOOTWEAR[image], YES, NO),
    "speech_upper_body": lambda image, clip: np.where(UPPER_BODY[clip], YES, NO),
}


def question_index(questions) -> np.ndarray:
    """Row of each question string in :data:`QUESTIONS`, int64."""
    lookup = {q: i for i, q in enumerate(QUESTIONS)}
    return np.array([lookup[q] for q in questions], dtype=np.int64)


def _choose(rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    """A class per row, uniform among the True entries of ``allowed`` bool ``[N, 10]``; int64 ``[N]``."""
    if not allowed.any(axis=1).all():
        raise ValueError("too few images or clips to draw a balanced task; use more of them")
    return np.argmax(np.where(allowed, rng.random(allowed.shape), -1.0), axis=1)


def balanced_labels(name: str, rng, n: int, image_labels: np.ndarray, clip_labels: np.ndarray):
    """The image and clip classes that yes/no question type ``name`` needs for a
    50/50 answer (int64 ``[n]`` each, None where any item will do)."""
    has_image = np.bincount(image_labels, minlength=len(CLASS_NAMES)) > 0  # bool [10]
    has_clip = np.bincount(clip_labels, minlength=len(CLASS_NAMES)) > 0
    yes = rng.random(n) < 0.5
    if name == "same_item":
        image = _choose(rng, has_image & (has_clip | ~yes[:, None]))
        other = _choose(rng, has_clip & ((np.arange(len(CLASS_NAMES)) != image[:, None]) | yes[:, None]))
        return image, np.where(yes, image, other)
    if name == "image_footwear":
        return _choose(rng, has_image & (FOOTWEAR == yes[:, None])), None
    if name == "speech_upper_body":
        return None, _choose(rng, has_clip & (UPPER_BODY == yes[:, None]))
    return None, None
