"""A pretrained sentence encoder (MiniLM by default) as a frozen text tokenizer."""

from __future__ import annotations

import torch
from torch import nn

from models.encoders import resolve_model_path


class HFTextEncoder(nn.Module):
    """Last hidden states of a Hugging Face encoder for a batch of strings.

    :param name: registered model name or local model directory
    :param max_tokens: word pieces per string, padded or truncated

    :input texts: list of ``batch_size`` strings.
    :output: dict with ``"tokens"`` [batch_size, max_tokens, hidden], float and
        ``"lengths"`` [batch_size], int64 (valid tokens per string).

    >>> out = HFTextEncoder("all-minilm-l6-v2", 16)(["What item is pictured?"])
    """

    def __init__(self, name: str = "all-minilm-l6-v2", max_tokens: int = 16):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(name)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        self.max_tokens = max_tokens

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state
        return {"tokens": hidden, "lengths": batch["attention_mask"].sum(-1)}
