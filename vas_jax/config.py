"""Model configuration: one frozen dataclass for every supported architecture.

The config is static (hashable), so models can be split with `nnx.split` and
their graph definitions used as static arguments of `jax.jit`.
"""

from __future__ import annotations

import dataclasses

from .errors import VasError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2", "gpt2")

DTYPE_NAMES = ("float32", "bfloat16")  # what parameters and activations may be (outputs stay float32)
_DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def parse_dtype(dtype):
    """A dtype name (float32, bfloat16 or their short forms) or dtype -> the numpy-style dtype; else one line."""
    import jax.numpy as jnp

    if isinstance(dtype, str):
        if dtype not in _DTYPE_ALIASES:
            raise VasError(f"unsupported dtype {dtype!r}; use float32 or bfloat16")
        return jnp.dtype(_DTYPE_ALIASES[dtype])
    d = jnp.dtype(dtype)
    if d.name not in DTYPE_NAMES:
        raise VasError(f"unsupported dtype {d.name!r}; use float32 or bfloat16")
    return d


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static description of a decoder-only transformer and its head.

    `head` is "lm" (next-token logits over the vocabulary) or "score" (a
    `num_labels`-wide linear head without bias, as in HF's
    `*ForSequenceClassification`, applied at every position).
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    norm_eps: float
    head: str = "lm"
    num_labels: int = 1
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    # ("default",) or ("linear", factor) or
    # ("llama3", factor, low_freq_factor, high_freq_factor, original_max_position_embeddings) or
    # ("longrope", original_max_position_embeddings, attention_factor, short_factors, long_factors)
    rope_scaling: tuple = ("default",)
    attention_bias: bool = False  # bias on q, k, v projections (Qwen2; Llama's attention_bias)
    o_bias: bool = False  # bias on the output projection (Llama's attention_bias)
    mlp_bias: bool = False
    activation: str = "silu"
    # Sliding window per layer (0 = full attention); empty tuple = all full.
    sliding_windows: tuple = ()
    attn_scale_by_layer: bool = False  # GPT-2 scale_attn_by_inverse_layer_idx
    # Where each block's norms sit: "pre" (Llama: before attention and MLP), "sandwich" (Gemma 2/3:
    # before and after each), "post" (OLMo 2: after each only).
    norm_layout: str = "pre"
    norm_offset: float = 0.0  # RMSNorm multiplies by (offset + w): Gemma's (1 + w)
    qk_norm: str = ""  # RMSNorm of queries and keys before RoPE: "head" (Qwen3, Gemma 3) or "full" (OLMo 2)
    embed_scale: bool = False  # embeddings times sqrt(hidden_size) (Gemma)
    attn_softcap: float = 0.0  # attention logits -> cap * tanh(logits / cap) (Gemma 2); 0 = off
    final_softcap: float = 0.0  # the same on the LM head's logits
    query_scale: float = 0.0  # attention scale (Gemma's query_pre_attn_scalar ** -0.5); 0 = head_dim ** -0.5
    rope_local_theta: float = 0.0  # RoPE base of sliding-window layers (Gemma 3); 0 = rope_theta
    pad_token_id: int | None = None
    # The checkpoint's original config.json, kept so that saving round-trips
    # fields we do not interpret. Not part of the hash.
    hf_config_json: str = dataclasses.field(default="{}", compare=False, repr=False)

    @property
    def is_gpt2(self) -> bool:
        return self.model_type == "gpt2"

    @property
    def out_dim(self) -> int:
        return self.vocab_size if self.head == "lm" else self.num_labels

    def window(self, layer: int) -> int:
        if not self.sliding_windows:
            return 0
        return self.sliding_windows[layer]

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)
