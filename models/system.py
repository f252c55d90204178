"""The split model: per-modality transmitters on the devices, receivers and backbone at the edge."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from models.backbone import Backbone
from models.config import MODALITIES
from models.transceivers import TokenReceiver, TokenTransmitter

Tokens = dict[str, torch.Tensor]
Channel = Callable[[Tokens], Tokens]


class SplitModel(nn.Module):
    """What is trained: transmitters, receivers, LoRA adapters and the answer head.

    One transmitter per modality is shared by every device sending that
    modality. Encoders are not part of it: their (frozen) outputs come from the
    feature cache.

    :param tokens: ``{modality: TokenSettings}``
    :param encoder_dims: ``{modality: width of the encoder's tokens}``
    :param models: ``models.config.ModelsConfig``
    :param answers: the answer vocabulary, as words

    :input features: ``{modality: {"tokens": [n, num_tokens, in_dim], "lengths": [n] or None}}``
    :input channel: callable ``{modality: [n, length, dim]} -> same``, the PHY
    :input present: ``{modality: [n] bool}``, whether the task's group sends it
    :output: dict with ``"logits"`` [n, len(answers)], ``"tx"`` and ``"rx"``
        (``{modality: [n, length, dim]}``).
    """

    def __init__(self, tokens: dict, encoder_dims: dict[str, int], models, answers: list[str]):
        super().__init__()
        self.modalities = [m for m in MODALITIES if m in tokens]
        self.backbone = Backbone(models.backbone, models.lora, answers)
        self.transmitters = nn.ModuleDict(
            {m: TokenTransmitter(encoder_dims[m], tokens[m].length, tokens[m].dim) for m in self.modalities}
        )
        self.receivers = nn.ModuleDict(
            {m: TokenReceiver(tokens[m].dim, models.receiver_hidden, self.backbone.d_model) for m in self.modalities}
        )

    def transmit(self, features: dict) -> Tokens:
        return {m: self.transmitters[m](f["tokens"], f.get("lengths")) for m, f in features.items()}

    def answer(self, received: Tokens, present: dict[str, torch.Tensor]) -> torch.Tensor:
        parts, masks = [], []
        for m in self.modalities:
            if m in received:
                embedded = self.receivers[m](received[m])
                parts.append(embedded)
                masks.append(present[m][:, None].expand(-1, embedded.shape[1]))
        return self.backbone(torch.cat(parts, 1), torch.cat(masks, 1))

    def forward(self, features: dict, channel: Channel, present: dict[str, torch.Tensor]) -> dict:
        tx = self.transmit(features)
        rx = channel(tx)
        return {"logits": self.answer(rx, present), "tx": tx, "rx": rx}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Only what training changes: the checkpoint's content."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t.detach().contiguous() for n, t in self.state_dict().items() if n in names}
