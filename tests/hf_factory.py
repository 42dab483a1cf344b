"""Tiny random Hugging Face checkpoints, built and saved by the tests (no downloads)."""

from __future__ import annotations

import torch
import transformers as tf

VOCAB = 96

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)

SPECIAL = dict(bos_token_id=1, eos_token_id=2)  # inside the tiny vocabulary (some defaults are not)

# name -> (config class, causal-LM class, sequence-classification class, config kwargs)
ARCHS = {
    "llama": (
        tf.LlamaConfig,
        tf.LlamaForCausalLM,
        tf.LlamaForSequenceClassification,
        dict(BASE, rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=False),
    ),
    "llama3_tied": (
        tf.LlamaConfig,
        tf.LlamaForCausalLM,
        tf.LlamaForSequenceClassification,
        dict(
            BASE,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            rope_theta=10000.0,
        ),
    ),
    "mistral": (
        tf.MistralConfig,
        tf.MistralForCausalLM,
        tf.MistralForSequenceClassification,
        dict(BASE, sliding_window=5, head_dim=16, rope_theta=1000.0),
    ),
    "qwen2": (
        tf.Qwen2Config,
        tf.Qwen2ForCausalLM,
        tf.Qwen2ForSequenceClassification,
        dict(BASE, num_key_value_heads=1, rms_norm_eps=1e-6, tie_word_embeddings=True),
    ),
    "qwen3": (
        tf.Qwen3Config,
        tf.Qwen3ForCausalLM,
        tf.Qwen3ForSequenceClassification,
        dict(BASE, head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=1000.0),
    ),
    # soft-capping small enough to bend the logits; alternating sliding (window 5) and full layers
    "gemma2": (
        tf.Gemma2Config,
        tf.Gemma2ForCausalLM,
        tf.Gemma2ForSequenceClassification,
        dict(
            BASE,
            head_dim=16,
            query_pre_attn_scalar=12,
            sliding_window=5,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
            rms_norm_eps=1e-6,
            **SPECIAL,
        ),
    ),
    # a local RoPE base for sliding layers, a linearly scaled global one for full layers
    "gemma3_text": (
        tf.Gemma3TextConfig,
        tf.Gemma3ForCausalLM,
        tf.Gemma3TextForSequenceClassification,
        dict(
            BASE,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=5,
            layer_types=["sliding_attention", "full_attention"],
            rms_norm_eps=1e-6,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 500.0},
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 20000.0},
            },
            **SPECIAL,
        ),
    ),
    "phi3": (
        tf.Phi3Config,
        tf.Phi3ForCausalLM,
        tf.Phi3ForSequenceClassification,
        dict(BASE, rms_norm_eps=1e-5, rope_theta=500.0, **SPECIAL),
    ),
    "olmo2": (
        tf.Olmo2Config,
        tf.Olmo2ForCausalLM,
        tf.Olmo2ForSequenceClassification,
        dict(BASE, rms_norm_eps=1e-6, rope_theta=500.0, **SPECIAL),
    ),
    "gpt2": (
        tf.GPT2Config,
        tf.GPT2LMHeadModel,
        tf.GPT2ForSequenceClassification,
        dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, layer_norm_epsilon=1e-5),
    ),
}


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere, norms and biases included, so parity is not met by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * (0.3 if p.ndim == 1 else 0.15)
            if name.endswith("norm.weight") or ".ln_" in name and name.endswith("weight") or "ln_f.weight" in name:
                # around the norm's identity: w = 1 (Llama), or w = 0 where it scales by 1 + w (Gemma)
                p.copy_((1.0 if p.abs().sum() > 0 else 0.0) + noise)
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
