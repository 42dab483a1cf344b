"""Model configuration: one frozen dataclass for every supported architecture.

The config is static (hashable), so models can be split with `nnx.split` and
their graph definitions used as static arguments of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from .errors import VasError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2", "gpt2")

# model_type -> the Hugging Face class-name prefix (`{prefix}ForCausalLM`, `{prefix}ForSequenceClassification`)
HF_CLASS_PREFIX = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma2": "Gemma2",
                   "gemma3_text": "Gemma3Text", "phi3": "Phi3", "olmo2": "Olmo2", "gpt2": "GPT2"}

_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}


def _layer_types(mt: str, d: dict, n_layers: int) -> list[str]:
    """Each layer's attention, "full_attention" or "sliding_attention", as transformers decides it."""
    sw = d.get("sliding_window")
    types = d.get("layer_types")
    if mt == "mistral":
        return ["sliding_attention" if sw else "full_attention"] * n_layers
    if mt in ("qwen2", "qwen3"):
        if not (sw and d.get("use_sliding_window")):
            return ["full_attention"] * n_layers
        if types is None:
            mwl = d.get("max_window_layers", n_layers)
            types = ["sliding_attention" if i >= mwl else "full_attention" for i in range(n_layers)]
        return list(types)
    if mt == "gemma2" and types is None:
        return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    if mt == "gemma3_text" and types is None:
        pattern = d.get("sliding_window_pattern", d.get("_sliding_window_pattern", 6))
        return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
    if types is not None and len(types) < n_layers:
        raise VasError(f"config.json lists {len(types)} layer_types for {n_layers} layers")
    return list(types or ["full_attention"] * n_layers)[:n_layers]


def _rope_parameters(mt: str, d: dict) -> tuple[dict, dict | None]:
    """(the full-attention layers' RoPE parameters, the sliding layers' where they differ: Gemma 3)."""
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if "full_attention" in rope or "sliding_attention" in rope:  # transformers 5: per layer type
        return dict(rope.get("full_attention", {})), rope.get("sliding_attention")
    rope = dict(rope)
    rope.setdefault("rope_theta", d.get("rope_theta", 10000.0))
    local = {"rope_theta": d["rope_local_base_freq"]} if "rope_local_base_freq" in d else None
    return rope, local


def _rope_scaling(rope: dict, d: dict) -> tuple[float, tuple]:
    theta = float(rope.get("rope_theta", d.get("rope_theta", 10000.0)))
    if float(rope.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0)) or 1.0) != 1.0:
        raise VasError("config.json sets partial_rotary_factor below 1, which vas-jax does not support")
    rtype = rope.get("rope_type", rope.get("type", "default"))
    if rtype == "default":
        return theta, ("default",)
    if rtype == "linear":
        return theta, ("linear", float(rope["factor"]))
    if rtype == "llama3":
        return theta, ("llama3", float(rope["factor"]), float(rope["low_freq_factor"]),
                       float(rope["high_freq_factor"]), int(rope["original_max_position_embeddings"]))
    if rtype in ("longrope", "su"):
        orig = int(rope.get("original_max_position_embeddings") or d["original_max_position_embeddings"])
        factor = rope.get("factor") or d["max_position_embeddings"] / orig
        att = rope.get("attention_factor")
        if att is None:
            att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        return theta, ("longrope", orig, float(att), tuple(map(float, rope["short_factor"])),
                       tuple(map(float, rope["long_factor"])))
    raise VasError(f"unsupported rope type {rtype!r} in config.json; supported: default, linear, llama3, longrope")


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

    # ------------------------------------------------------------------ HF I/O
    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a Hugging Face `config.json` dict."""
        try:
            return cls._from_hf(d)
        except KeyError as e:
            raise VasError(f"config.json has no {e.args[0]!r} field; is it a complete Hugging Face config?") from None

    @classmethod
    def _from_hf(cls, d: dict[str, Any]) -> "ModelConfig":
        mt = d.get("model_type")
        if mt not in SUPPORTED_MODEL_TYPES:
            raise VasError(
                f"unsupported model_type {mt!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        archs = d.get("architectures") or []
        head = "score" if any(a.endswith("ForSequenceClassification") for a in archs) else "lm"
        num_labels = int(d.get("num_labels", len(d.get("id2label") or {}) or 2))
        if head == "lm":
            num_labels = 1
        js = json.dumps(d, sort_keys=True)
        if mt == "gpt2":
            act = d.get("activation_function", "gelu_new")
            if act not in _ACTIVATIONS:
                raise VasError(f"unsupported activation_function {act!r} in config.json")
            hidden = d["n_embd"]
            n_head = d["n_head"]
            return cls(
                model_type="gpt2",
                vocab_size=d["vocab_size"],
                hidden_size=hidden,
                intermediate_size=d.get("n_inner") or 4 * hidden,
                num_layers=d["n_layer"],
                num_heads=n_head,
                num_kv_heads=n_head,
                head_dim=hidden // n_head,
                max_position_embeddings=d.get("n_positions", 1024),
                norm_eps=d.get("layer_norm_epsilon", 1e-5),
                head=head,
                num_labels=num_labels,
                tie_word_embeddings=d.get("tie_word_embeddings", True),
                attention_bias=True,
                o_bias=True,
                mlp_bias=True,
                activation=_ACTIVATIONS[act],
                attn_scale_by_layer=bool(d.get("scale_attn_by_inverse_layer_idx", False)),
                pad_token_id=d.get("pad_token_id"),
                hf_config_json=js,
            )
        if d.get("scale_attn_weights") is False:
            raise VasError("config.json sets scale_attn_weights=false, which vas-jax does not support")
        n_head = d["num_attention_heads"]
        head_dim = d.get("head_dim") or d["hidden_size"] // n_head
        n_layers = d["num_hidden_layers"]
        types = _layer_types(mt, d, n_layers)
        global_rope, local_rope = _rope_parameters(mt, d)
        theta, scaling = _rope_scaling(global_rope, d)
        act = d.get("hidden_activation") or d.get("hidden_act", "silu")
        if act not in _ACTIVATIONS:
            raise VasError(f"unsupported hidden_act {act!r} in config.json")
        sw = d.get("sliding_window")
        windows = tuple(int(sw) if t == "sliding_attention" and sw else 0 for t in types)
        if not any(windows):
            windows = ()
        attn_bias = bool(d.get("attention_bias", False))
        gemma = mt in ("gemma2", "gemma3_text")
        query_scalar = d.get("query_pre_attn_scalar") if gemma else None
        local_theta = 0.0
        if mt == "gemma3_text" and local_rope is not None:
            local_theta = float(local_rope.get("rope_theta", 10000.0))
        return cls(
            model_type=mt,
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_layers=n_layers,
            num_heads=n_head,
            num_kv_heads=d.get("num_key_value_heads") or n_head,
            head_dim=head_dim,
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            head=head,
            num_labels=num_labels,
            tie_word_embeddings=bool(d.get("tie_word_embeddings", gemma)),
            rope_theta=theta,
            rope_scaling=scaling,
            attention_bias=True if mt == "qwen2" else attn_bias,
            o_bias=False if mt in ("qwen2", "qwen3") else attn_bias,
            mlp_bias=bool(d.get("mlp_bias", False)),
            activation=_ACTIVATIONS[act],
            sliding_windows=windows,
            norm_layout="sandwich" if gemma else "post" if mt == "olmo2" else "pre",
            norm_offset=1.0 if gemma else 0.0,
            qk_norm="head" if mt in ("qwen3", "gemma3_text") else "full" if mt == "olmo2" else "",
            embed_scale=gemma,
            attn_softcap=float(d.get("attn_logit_softcapping") or 0.0) if gemma else 0.0,
            final_softcap=float(d.get("final_logit_softcapping") or 0.0) if gemma else 0.0,
            query_scale=float(query_scalar) ** -0.5 if query_scalar else 0.0,
            rope_local_theta=local_theta,
            pad_token_id=d.get("pad_token_id"),
            hf_config_json=js,
        )

    def to_hf(self) -> dict[str, Any]:
        """A `config.json` dict that transformers loads as this architecture and head."""
        d = json.loads(self.hf_config_json)
        prefix = HF_CLASS_PREFIX[self.model_type]
        if self.head == "score":
            arch = f"{prefix}ForSequenceClassification"
            d["num_labels"] = self.num_labels
            d["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            d["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        else:
            arch = {"gpt2": "GPT2LMHeadModel", "gemma3_text": "Gemma3ForCausalLM"}.get(self.model_type,
                                                                                     f"{prefix}ForCausalLM")
            d.pop("num_labels", None)
        d["architectures"] = [arch]
        d["model_type"] = self.model_type
        if isinstance(d.get("layer_types"), list):  # a value model from the first layers keeps theirs
            d["layer_types"] = d["layer_types"][: self.num_layers]
        d["vocab_size"] = self.vocab_size
        d["tie_word_embeddings"] = self.tie_word_embeddings
        if self.pad_token_id is not None:
            d["pad_token_id"] = self.pad_token_id
        if self.is_gpt2:
            d.update(
                n_embd=self.hidden_size,
                n_layer=self.num_layers,
                n_head=self.num_heads,
                n_inner=self.intermediate_size,
                n_positions=self.max_position_embeddings,
                layer_norm_epsilon=self.norm_eps,
            )
        else:
            d.update(
                hidden_size=self.hidden_size,
                intermediate_size=self.intermediate_size,
                num_hidden_layers=self.num_layers,
                num_attention_heads=self.num_heads,
                num_key_value_heads=self.num_kv_heads,
                head_dim=self.head_dim,
                max_position_embeddings=self.max_position_embeddings,
                rms_norm_eps=self.norm_eps,
            )
        return d
