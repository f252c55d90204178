"""The edge backbone: a pretrained transformer with LoRA adapters and an answer head."""

from __future__ import annotations

import torch
from torch import nn

from models.encoders import resolve_model_path


class Backbone(nn.Module):
    """Fuses received token embeddings of a task and scores every answer.

    The pretrained weights stay frozen; peft adds LoRA adapters to
    ``lora.target_modules``. The sequence fed through ``inputs_embeds`` starts
    with the model's own ``[CLS]`` embedding, whose output the answer head reads.

    :param name: registered model name or local Hugging Face model directory
    :param lora: ``models.config.LoraSettings``
    :param num_answers: size of the answer vocabulary

    :input embeddings: [batch_size, num_tokens, d_model], float.
    :input mask: [batch_size, num_tokens], bool, ``False`` for absent tokens.
    :output logits: [batch_size, num_answers], float.

    >>> logits = Backbone("all-minilm-l6-v2", LoraSettings(), 12)(x, mask)
    """

    def __init__(self, name: str, lora, num_answers: int):
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(name)
        base = AutoModel.from_pretrained(path)
        self.d_model = base.config.hidden_size
        cls_id = AutoTokenizer.from_pretrained(path).cls_token_id
        start = base.get_input_embeddings().weight[cls_id].detach().clone()
        self.register_buffer("start_embedding", start)
        self.model = get_peft_model(
            base,
            LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
            ),
        )
        self.head = nn.Linear(self.d_model, num_answers)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch = embeddings.shape[0]
        x = torch.cat([self.start_embedding.expand(batch, 1, -1), embeddings], 1)
        attention = torch.cat([mask.new_ones(batch, 1), mask], 1).long()
        hidden = self.model(inputs_embeds=x, attention_mask=attention).last_hidden_state
        return self.head(hidden[:, 0])
