"""Analytic FLOPs of our models (2 per multiply-add; matmuls and attention scores)."""

from __future__ import annotations

from .config import ModelConfig


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the trunk and head (embeddings counted once when tied); norms left out."""
    h, d = cfg.hidden_size, cfg.head_dim
    attn = h * (cfg.num_heads + 2 * cfg.num_kv_heads) * d + cfg.num_heads * d * h
    mlp = (2 if cfg.is_gpt2 else 3) * h * cfg.intermediate_size
    head = 0 if cfg.tie_word_embeddings and cfg.head == "lm" else h * cfg.out_dim
    return cfg.num_layers * (attn + mlp) + cfg.vocab_size * h + head


def flops_per_token(cfg: ModelConfig, ctx: float, with_head: bool = True) -> float:
    """Forward FLOPs for one token attending to `ctx` earlier tokens."""
    h, d = cfg.hidden_size, cfg.head_dim
    attn_proj = h * (cfg.num_heads + 2 * cfg.num_kv_heads) * d + cfg.num_heads * d * h
    mlp = (2 if cfg.is_gpt2 else 3) * h * cfg.intermediate_size
    attn_scores = 2 * cfg.num_heads * d * ctx  # q.k and p.v
    f = 2 * cfg.num_layers * (attn_proj + mlp + attn_scores)
    if with_head:
        f += 2 * h * cfg.out_dim
    return float(f)


def sequence_flops(
    cfg: ModelConfig, prompt_len: float, new_tokens: float, *, tokens_per_step: float = 1.0, with_head: bool = True
) -> float:
    """A prompt's prefill plus `new_tokens` decode steps of `tokens_per_step` tokens each."""
    mid = prompt_len + new_tokens / 2
    pre = prompt_len * flops_per_token(cfg, prompt_len / 2, with_head=False)
    return pre + new_tokens * tokens_per_step * flops_per_token(cfg, mid, with_head=with_head)
