"""Typed settings of the learning side: token sizes, models, training.

The scenario schema (``sim/scenario.py``) embeds these sections as they are;
they live here because this package owns what they shape.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Modality = Literal["image", "audio", "text"]
MODALITIES: tuple[str, ...] = ("text", "image", "audio")  # order of tokens at the edge


class Strict(BaseModel):
    """Base of every scenario section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class TokenSettings(Strict):
    """What one modality puts on air per task."""

    length: int = Field(4, gt=0, description="tokens after sliding-window pooling")
    dim: int = Field(32, gt=0, description="real values per token (two make one complex symbol)")

    @field_validator("dim")
    @classmethod
    def _even(cls, dim: int) -> int:
        if dim % 2:
            raise ValueError("must be even: two real values make one complex symbol")
        return dim


class LoraSettings(Strict):
    """LoRA adapters on the backbone (peft). The paper: r=4, alpha=16, dropout 0.1 on query/value."""

    r: int = Field(4, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)


class ModelsConfig(Strict):
    """Encoders (frozen), receivers and the backbone.

    ``text_encoder`` and ``backbone`` are a registered name or a local
    Hugging Face model directory.
    """

    image_encoder: Literal["efficientnet-lite0"] = "efficientnet-lite0"
    image_size_px: int = Field(64, ge=32, description="Fashion-MNIST images are resized to this (multiple of 32)")
    text_encoder: str = "all-minilm-l6-v2"
    text_max_tokens: int = Field(16, ge=4, description="word pieces per question, padded")
    audio_encoder: Literal["logmel-cnn"] = "logmel-cnn"
    backbone: str = "all-minilm-l6-v2"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    receiver_hidden: int = Field(256, gt=0)

    @field_validator("image_size_px")
    @classmethod
    def _multiple_of_32(cls, size: int) -> int:
        if size % 32:
            raise ValueError("must be a multiple of 32 (EfficientNet's total stride)")
        return size


class AudioEncoderTraining(Strict):
    """The log-mel CNN is trained by tokensim (no pretrained audio weights are installable)."""

    epochs: int = Field(12, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(2e-3, gt=0)


class TrainingConfig(Strict):
    """Task-oriented fine-tuning, end to end with the channel in the loop."""

    steps: int = Field(600, gt=0)
    batch_size: int = Field(32, gt=0, description="tasks per step, spread over the groups")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    snr_db_range: tuple[float, float] = Field((-10.0, 25.0), description="SNR drawn per user and task")
    train_tasks_per_group: int = Field(20000, gt=0)
    audio_encoder: AudioEncoderTraining = Field(default_factory=AudioEncoderTraining)

    @field_validator("snr_db_range")
    @classmethod
    def _ordered(cls, pair: tuple[float, float]) -> tuple[float, float]:
        if pair[0] > pair[1]:
            raise ValueError("must be [low, high] with low <= high")
        return pair


TokensConfig = Annotated[
    dict[Modality, TokenSettings], Field(default_factory=lambda: {m: TokenSettings() for m in MODALITIES})
]
