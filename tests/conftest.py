"""Shared fixtures: a tiny scenario and a cache shared by the whole test session."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent

# Small enough that a full run (speech synthesis, encoders, training, evaluation) takes seconds.
TINY = {
    "name": "tiny",
    "seed": 3,
    "device": "cpu",
    "dataset": {
        "train_images": 48,
        "validation_images": 24,
        "test_images": 24,
        "train_clips": 30,
        "validation_clips": 20,
        "test_clips": 20,
    },
    "cell": {"num_prbs": 6},
    "channel": {"model": "tdl-a", "csi": "ls"},
    "users": [
        {"id": "q1", "modalities": ["text"], "snr_db": 15},
        {"id": "cam1", "modalities": ["image"], "snr_db": 10},
        {"id": "mic1", "modalities": ["audio"], "snr_db": 5},
        {"id": "q2", "modalities": ["text"], "snr_db": 0},
        {"id": "both2", "modalities": ["image", "audio"], "snr_db": -5},
    ],
    "groups": [{"id": "a", "users": ["q1", "cam1", "mic1"]}, {"id": "b", "users": ["q2", "both2"]}],
    "tokens": {"text": {"length": 2, "dim": 8}, "image": {"length": 2, "dim": 8}, "audio": {"length": 2, "dim": 8}},
    "models": {"receiver_hidden": 32},
    "training": {
        "alignment": {"steps": 3, "batch_size": 8},
        "finetune": {"steps": 4, "batch_size": 8},
        "validation_every": 2,
        "validation_tasks_per_group": 8,
        "train_tasks_per_group": 64,
        "audio_encoder": {"epochs": 1, "batch_size": 16},
    },
    "evaluation": {"tasks_per_group": 16, "batch_size": 8},
}


@pytest.fixture
def tiny() -> dict:
    """A fresh copy of the tiny scenario mapping (edit it freely)."""
    return copy.deepcopy(TINY)


@pytest.fixture
def write_scenario(tmp_path):
    """Write a scenario mapping to a YAML file; returns its path."""

    def write(raw: dict, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Every test shares one cache outside the user's, so caches made by one test serve the next."""
    cache = tmp_path_factory.mktemp("tokensim-cache")
    previous = os.environ.get("TOKENSIM_CACHE")
    os.environ["TOKENSIM_CACHE"] = str(cache)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield cache
    if previous is None:
        os.environ.pop("TOKENSIM_CACHE", None)
    else:
        os.environ["TOKENSIM_CACHE"] = previous
