"""Tiny random Hugging Face checkpoints, built and saved by the tests (no downloads)."""

from __future__ import annotations

import torch
import transformers as tf

VOCAB = 96

BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)

# name -> (config class, causal-LM class, sequence-classification class, config kwargs)
ARCHS = {
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, tf.LlamaForSequenceClassification,
              dict(BASE, rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=False)),
    "llama3_tied": (tf.LlamaConfig, tf.LlamaForCausalLM, tf.LlamaForSequenceClassification,
                    dict(BASE, rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                         rope_theta=10000.0)),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, tf.MistralForSequenceClassification,
                dict(BASE, sliding_window=5, head_dim=16, rope_theta=1000.0)),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, tf.Qwen2ForSequenceClassification,
              dict(BASE, num_key_value_heads=1, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel, tf.GPT2ForSequenceClassification,
             dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, layer_norm_epsilon=1e-5)),
}


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere, norms and biases included, so parity is not met by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * (0.3 if p.ndim == 1 else 0.15)
            if name.endswith("norm.weight") or ".ln_" in name and name.endswith("weight") or "ln_f.weight" in name:
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)


def make_hf(arch: str, head: str = "lm", *, num_labels: int = 1, pad_token_id: int = 0, seed: int = 0):
    cfg_cls, lm_cls, cls_cls, kw = ARCHS[arch]
    cfg = cfg_cls(**kw, pad_token_id=pad_token_id)
    if head == "score":
        cfg.num_labels = num_labels
        model = cls_cls(cfg)
    else:
        model = lm_cls(cfg)
    randomize(model, seed)
    model.eval()
    return model


def save_hf(model, path, *, dtype=None, max_shard_size=None):
    if dtype is not None:
        model = model.to(dtype)
    kw = {}
    if max_shard_size:
        kw["max_shard_size"] = max_shard_size
    model.save_pretrained(str(path), **kw)
    return path
