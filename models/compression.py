"""Token compression on the device: sliding-window pooling along the token axis."""

from __future__ import annotations

import torch


def sliding_window_pool(tokens: torch.Tensor, length: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Average ``tokens`` over ``length`` windows that tile each sample's valid tokens.

    Window ``j`` of a sample with ``n`` valid tokens covers positions
    ``floor(j n / length) .. ceil((j + 1) n / length) - 1``, the windows of
    ``torch.nn.functional.adaptive_avg_pool1d``; here ``n`` may differ per
    sample (padded text), so the windows are built as a pooling matrix.

    :input tokens: [batch_size, num_tokens, dim], float.
    :input lengths: [batch_size], int, valid tokens per sample (``None``: all).
    :output pooled: [batch_size, length, dim], float.

    >>> sliding_window_pool(torch.randn(2, 16, 8), 4).shape
    torch.Size([2, 4, 8])
    """
    batch, num_tokens, _ = tokens.shape
    n = torch.full((batch,), num_tokens, device=tokens.device) if lengths is None else lengths.to(tokens.device)
    n = n.to(torch.float64)[:, None, None]
    j = torch.arange(length, device=tokens.device, dtype=torch.float64)[None, :, None]
    position = torch.arange(num_tokens, device=tokens.device, dtype=torch.float64)[None, None, :]
    start, end = torch.floor(j * n / length), torch.ceil((j + 1) * n / length)
    window = ((position >= start) & (position < end)).to(tokens.dtype)  # [batch, length, num_tokens]
    return window @ tokens / window.sum(-1, keepdim=True)
