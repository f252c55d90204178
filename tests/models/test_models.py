"""Transceivers, backbone with LoRA, checkpoints, encoders."""

from __future__ import annotations

import pytest
import torch

from models.backbone import Backbone
from models.checkpoints import load_checkpoint, save_checkpoint
from models.compression import sliding_window_pool
from models.config import LoraSettings, ModelsConfig, TokenSettings
from models.data.fashion_avqa import ANSWERS
from models.encoders import encoder_output_shape, resolve_model_path
from models.system import SplitModel
from models.transceivers import TokenTransmitter


def test_pooling_matches_adaptive_average_and_ignores_padding():
    x = torch.randn(3, 16, 5)
    torch.testing.assert_close(
        sliding_window_pool(x, 4), torch.nn.functional.adaptive_avg_pool1d(x.transpose(1, 2), 4).transpose(1, 2)
    )
    lengths = torch.tensor([16, 6, 3])
    padded = x.clone()
    padded[1, 6:] = 1e6
    padded[2, 3:] = -1e6
    pooled = sliding_window_pool(padded, 4, lengths)
    torch.testing.assert_close(pooled[1], sliding_window_pool(x[1:2, :6], 4)[0])
    torch.testing.assert_close(pooled[2], sliding_window_pool(x[2:3, :3], 4)[0])


def test_transmitter_output_has_unit_symbol_energy():
    tx = TokenTransmitter(in_dim=40, length=3, dim=10)
    out = tx(torch.randn(7, 12, 40) * 50)
    assert out.shape == (7, 3, 10)
    torch.testing.assert_close(out.square().mean((1, 2)) * 2, torch.ones(7), rtol=1e-4, atol=1e-4)


def _split_model(backbone="all-minilm-l6-v2"):
    tokens = {"text": TokenSettings(length=2, dim=8), "image": TokenSettings(length=3, dim=6)}
    models = ModelsConfig(backbone=backbone, receiver_hidden=16)
    return SplitModel(tokens, {"text": 384, "image": 1280}, models, answers=list(ANSWERS))


def _features(n=6):
    return {
        "text": {"tokens": torch.randn(n, 16, 384), "lengths": torch.full((n,), 9)},
        "image": {"tokens": torch.randn(n, 4, 1280), "lengths": None},
    }


def _noisy(tokens):
    return {m: t + 0.1 * torch.randn_like(t) for m, t in tokens.items()}


def test_lora_trains_only_adapters_transceivers_and_head():
    torch.manual_seed(0)
    model = _split_model()
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    lora = sum(v for n, v in trainable.items() if "lora_" in n)
    d, r, layers = 384, 4, 6
    assert lora == layers * 2 * r * (d + d)  # query and value: A [r, d] and B [d, r] each
    tx = sum(v for n, v in trainable.items() if n.startswith("transmitters."))
    assert tx == (2 * 384 + 384 * 8 + 8) + (2 * 1280 + 1280 * 6 + 6)  # LayerNorm + Linear per modality
    rx = sum(v for n, v in trainable.items() if n.startswith("receivers."))
    assert rx == sum(dim * 16 + 16 + 16 * d + d + d for dim in (8, 6))
    head = sum(v for n, v in trainable.items() if n.startswith("backbone.head."))
    assert head == d * 12 + 12
    assert sum(trainable.values()) == lora + tx + rx + head

    frozen = {n: p.detach().clone() for n, p in model.backbone.model.named_parameters() if "lora_" not in n}
    assert all(not p.requires_grad for n, p in model.backbone.model.named_parameters() if "lora_" not in n)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    present = {"text": torch.ones(6, dtype=torch.bool), "image": torch.ones(6, dtype=torch.bool)}
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(_features(), _noisy, present)["logits"], torch.arange(6))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for n, p in model.backbone.model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, frozen[n]), f"pretrained weight {n} changed"
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if "lora_B" in n)


def test_absent_modalities_are_masked_out():
    torch.manual_seed(1)
    model = _split_model().eval()
    feats = _features(2)
    present = {"text": torch.ones(2, dtype=torch.bool), "image": torch.tensor([True, False])}
    tx = model.transmit(feats)
    base = model.answer(tx, present)
    changed = {"text": tx["text"], "image": tx["image"] + torch.randn_like(tx["image"])}
    again = model.answer(changed, present)
    assert not torch.allclose(base[0], again[0])
    torch.testing.assert_close(base[1], again[1])  # group without an image: its (zero) image tokens are ignored


def test_checkpoint_round_trip(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSIM_CACHE", str(tmp_path))
    torch.manual_seed(2)
    model = _split_model().eval()
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_()
    save_checkpoint(model, "abc", {"what": 1}, {"steps": 3})
    fresh = _split_model().eval()
    assert load_checkpoint(fresh, "abc") == {"steps": 3}
    assert load_checkpoint(fresh, "missing") is None
    feats = _features(3)
    present = {m: torch.ones(3, dtype=torch.bool) for m in feats}
    identity = lambda t: t  # noqa: E731
    torch.testing.assert_close(model(feats, identity, present)["logits"], fresh(feats, identity, present)["logits"])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny randomly initialised BERT with MiniLM's tokenizer, saved as a local Hugging Face model."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("all-minilm-l6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(3)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_local_hugging_face_model_as_backbone_and_text_encoder(tiny_bert, tiny):
    from models.encoders.text import HFTextEncoder
    from sim.scenario import validate_scenario

    backbone = Backbone(str(tiny_bert), LoraSettings(r=2), answers=list("abcde"))
    logits = backbone(torch.randn(3, 4, 32), torch.ones(3, 4, dtype=torch.bool))
    assert logits.shape == (3, 5) and backbone.d_model == 32
    encoder = HFTextEncoder(str(tiny_bert), max_tokens=8)
    texts = ["What item is pictured?", "Footwear?"]
    out = encoder(texts)
    assert out["tokens"].shape == (2, 8, 32)
    assert out["lengths"].tolist() == [len(encoder.tokenizer(t)["input_ids"]) for t in texts] == [7, 5]
    tiny["models"].update(backbone=str(tiny_bert), text_encoder=str(tiny_bert))
    s = validate_scenario(tiny)
    assert encoder_output_shape("text", s.models) == (16, 32)


def test_encoder_output_shapes():
    models = ModelsConfig(image_size_px=96)
    assert encoder_output_shape("image", models) == (9, 1280)
    assert encoder_output_shape("audio", models) == (8, 128)
    assert encoder_output_shape("text", models) == (16, 384)


def test_image_and_audio_encoders_emit_the_declared_shapes():
    from models.encoders.audio import LogMelCNN
    from models.encoders.image import EfficientNetLite0Encoder

    image = EfficientNetLite0Encoder(64)
    with torch.no_grad():
        tokens = image(torch.randint(0, 255, (2, 28, 28), dtype=torch.uint8))
    assert tokens.shape == (2, *encoder_output_shape("image", ModelsConfig()))
    image.train()
    assert not image.net.training  # frozen: train() keeps batch-norm statistics fixed
    assert LogMelCNN()(torch.randn(3, 20000) * 0.1).shape == (3, 8, 128)


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    """A random two-layer Qwen2 causal LM with a byte-level BPE tokenizer trained on the task's words,
    built and saved here (nothing from a hub)."""
    import json

    from tokenizers import ByteLevelBPETokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

    from models.data.fashion_avqa import QUESTIONS

    path = tmp_path_factory.mktemp("tiny-qwen2")
    bpe = ByteLevelBPETokenizer()
    corpus = [f"Answer: {a}" for a in ANSWERS] + list(QUESTIONS)
    bpe.train_from_iterator(corpus * 5, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(path))
    vocab = json.loads((path / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (path / "merges.txt").read_text().splitlines()[1:] if line]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.save_pretrained(path)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(4)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def test_causal_lm_backbone_answers_with_its_next_token(tiny_qwen2):
    backbone = Backbone(str(tiny_qwen2), LoraSettings(r=2), answers=list(ANSWERS))
    assert backbone.causal and backbone.head is None and backbone.d_model == 32
    lora = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in lora)  # peft's Qwen2 default
    # byte-level BPE: "sandal" and "sneaker" both start with "s", " sandal" and " sneaker" are whole pieces
    bare = [backbone.tokenizer(a, add_special_tokens=False).input_ids[0] for a in ANSWERS]
    ids = [backbone.tokenizer(" " + a, add_special_tokens=False).input_ids[0] for a in ANSWERS]
    assert len(set(bare)) < len(ANSWERS) and backbone.answer_ids.tolist() == ids and len(set(ids)) == len(ANSWERS)

    torch.manual_seed(0)
    x, mask = torch.randn(3, 5, 32), torch.tensor([[True] * 5, [True] * 5, [True, True, False, True, True]])
    logits = backbone(x, mask)
    assert logits.shape == (3, len(ANSWERS))
    prompt = backbone.tokenizer("Answer:", add_special_tokens=False, return_tensors="pt").input_ids[0]
    with torch.no_grad():
        lm = backbone.model.get_base_model()
        sequence = torch.cat([x, lm.get_input_embeddings()(prompt).expand(3, -1, -1)], 1)
        attention = torch.cat([mask, torch.ones(3, len(prompt), dtype=torch.bool)], 1).long()
        expected = lm(inputs_embeds=sequence, attention_mask=attention).logits[:, -1, ids]
    torch.testing.assert_close(logits, expected)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 10, 11])).backward()
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)

    texts = ["Answer: sandal", "Is the pictured item footwear?"]
    pieces = [backbone.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    table = backbone.model.get_input_embeddings().weight.detach()
    assert len(pieces[0]) < len(pieces[1])  # the first is padded in the batch
    torch.testing.assert_close(backbone.embed_text(texts[:1], len(pieces[0]))[0], table[pieces[0]])
    torch.testing.assert_close(backbone.embed_text(texts, 1)[:, 0], torch.stack([table[p].mean(0) for p in pieces]))


def test_causal_lm_backbone_runs_both_stages(tiny_qwen2, tiny, write_scenario, tmp_path):
    import json

    from sim.cli import main

    tiny["models"]["backbone"] = str(tiny_qwen2)
    out = tmp_path / "run"
    assert main(["run", str(write_scenario(tiny)), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == 32 and 0 <= metrics["accuracy"] <= 1
    stages = (out / "training_log.csv").read_text().splitlines()
    assert (
        sum(line.startswith("align,") for line in stages) == 3
        and sum(line.startswith("finetune,") for line in stages) == 4
    )
