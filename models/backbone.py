"""The edge backbone: a pretrained transformer with LoRA adapters that answers from received tokens."""

from __future__ import annotations

import torch
from torch import nn

from models.compression import sliding_window_pool
from models.encoders import resolve_model_path

ANSWER_PROMPT = "Answer:"  # what a causal LM reads after the tokens, before it names the answer


class Backbone(nn.Module):
    """Fuses received token embeddings of a task and scores every answer.

    The pretrained weights stay frozen; peft adds LoRA adapters to
    ``lora.target_modules`` (peft's default for the architecture when unset).
    Two kinds of model answer differently:

    - an **encoder** (BERT, MiniLM): the sequence fed through
      ``inputs_embeds`` starts with the model's own ``[CLS]`` embedding,
      whose output a linear answer head reads;
    - a **causal LM** (Qwen2, Llama, GPT-2; any ``*ForCausalLM``): the
      sequence ends with the embedded ``"Answer:"`` prompt and the answer is
      the next token, as in the paper: the score of each answer is the LM
      head's logit of its first word piece. No head is added.

    :param name: registered model name or local Hugging Face model directory
    :param lora: ``models.config.LoraSettings``
    :param answers: the answer vocabulary, as words

    :input embeddings: [batch_size, num_tokens, d_model], float.
    :input mask: [batch_size, num_tokens], bool, ``False`` for absent tokens.
    :output logits: [batch_size, len(answers)], float.

    >>> logits = Backbone("all-minilm-l6-v2", LoraSettings(), ANSWERS)(x, mask)
    """

    def __init__(self, name: str, lora, answers: list[str]):
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        path = resolve_model_path(name)
        config = AutoConfig.from_pretrained(path)
        self.causal = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="right")  # valid pieces first
        if self.tokenizer.pad_token is None:  # GPT-2 and Llama tokenizers ship without one
            self.tokenizer.pad_token = self.tokenizer.eos_token
        base = (AutoModelForCausalLM if self.causal else AutoModel).from_pretrained(path)
        self.d_model = base.config.hidden_size
        embedding_table = base.get_input_embeddings().weight
        if self.causal:
            prompt = self.tokenizer(ANSWER_PROMPT, add_special_tokens=False, return_tensors="pt").input_ids[0]
            self.register_buffer("end_embeddings", embedding_table[prompt].detach().clone())
            self.register_buffer("answer_ids", torch.tensor(self._answer_token_ids(name, answers)))
        else:
            start = embedding_table[self.tokenizer.cls_token_id].detach().clone()
            self.register_buffer("start_embedding", start)
        self.model = get_peft_model(
            base,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=None if lora.target_modules is None else list(lora.target_modules),
            ),
        )
        self.head = None if self.causal else nn.Linear(self.d_model, len(answers))

    def _answer_token_ids(self, name: str, answers: list[str]) -> list[int]:
        """First word piece of each answer, after a space where that keeps them distinct (byte-level BPE)."""
        for prefix in (" ", ""):
            ids = [self.tokenizer(prefix + a, add_special_tokens=False).input_ids[0] for a in answers]
            if len(set(ids)) == len(ids):
                return ids
        raise ValueError(
            f"models.backbone: {name!r} cannot answer with its next token: in its tokenizer some answers "
            f"({', '.join(answers)}) start with the same word piece"
        )

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch = embeddings.shape[0]
        if self.causal:
            end = self.end_embeddings.expand(batch, -1, -1)
            x = torch.cat([embeddings, end], 1)
            attention = torch.cat([mask, mask.new_ones(batch, end.shape[1])], 1).long()
            logits = self.model(inputs_embeds=x, attention_mask=attention).logits
            return logits[:, -1, self.answer_ids]
        x = torch.cat([self.start_embedding.expand(batch, 1, -1), embeddings], 1)
        attention = torch.cat([mask.new_ones(batch, 1), mask], 1).long()
        hidden = self.model(inputs_embeds=x, attention_mask=attention).last_hidden_state
        return self.head(hidden[:, 0])

    @torch.no_grad()
    def embed_text(self, texts: list[str], length: int) -> torch.Tensor:
        """The backbone's own (frozen) input embeddings of ``texts``, sliding-window pooled to ``length``
        tokens: where stage 1 puts received tokens. [len(texts), length, d_model], float."""
        batch = self.tokenizer(list(texts), add_special_tokens=False, padding=True, return_tensors="pt")
        table = self.model.get_input_embeddings().weight
        ids = batch.input_ids.to(table.device)
        return sliding_window_pool(table[ids], length, batch.attention_mask.sum(1).to(table.device))
