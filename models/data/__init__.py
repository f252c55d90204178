"""Built-in data sets, by the name a scenario gives them."""

from models.data.fashion_avqa import (
    ANSWERS,
    CLASS_NAMES,
    QUESTION_TYPES,
    FashionAVQA,
    FashionAVQAConfig,
    MissingDataError,
    QuestionType,
)

DATASETS = {"fashion-avqa": FashionAVQA}

__all__ = [
    "ANSWERS",
    "CLASS_NAMES",
    "DATASETS",
    "QUESTION_TYPES",
    "FashionAVQA",
    "FashionAVQAConfig",
    "MissingDataError",
    "QuestionType",
]
