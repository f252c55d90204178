"""Token transmitters (user devices) and receivers (edge), one pair per modality."""

from __future__ import annotations

import torch
from torch import nn

from models.compression import sliding_window_pool


class TokenTransmitter(nn.Module):
    """Encoder tokens -> sliding-window pooling -> Linear -> power normalisation.

    The output has mean power 1/2 per real value, i.e. unit energy per complex
    symbol once pairs of values are put on air.

    :param in_dim: width of the encoder's tokens
    :param length: tokens after pooling (``tokens.<modality>.length``)
    :param dim: real values per transmitted token (``tokens.<modality>.dim``)

    :input tokens: [batch_size, num_tokens, in_dim], float.
    :input lengths: [batch_size], int, or ``None``.
    :output tx: [batch_size, length, dim], float.

    >>> TokenTransmitter(1280, 4, 32)(torch.randn(8, 4, 1280)).shape
    torch.Size([8, 4, 32])
    """

    def __init__(self, in_dim: int, length: int, dim: int):
        super().__init__()
        self.length = length
        self.norm = nn.LayerNorm(in_dim)
        self.project = nn.Linear(in_dim, dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        z = self.project(self.norm(sliding_window_pool(tokens, self.length, lengths)))
        power = z.square().mean((1, 2), keepdim=True)
        return z * torch.rsqrt(2 * power + 1e-12)


class TokenReceiver(nn.Module):
    """Received tokens -> MLP to the backbone width, plus a learned modality embedding.

    :input rx: [batch_size, length, dim], float.
    :output embeddings: [batch_size, length, d_model], float.
    """

    def __init__(self, dim: int, hidden: int, d_model: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.modality_embedding = nn.Parameter(torch.zeros(d_model))

    def forward(self, rx: torch.Tensor) -> torch.Tensor:
        return self.mlp(rx) + self.modality_embedding
