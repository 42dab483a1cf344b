"""Hugging Face `config.json` <-> our `ModelConfig`: each family's fields translated in one place.

The translation is functions beside the loader (`hf.py`), not methods of the dataclass: the config
stays a plain static description, and what a checkpoint calls a field is this module's business.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .config import SUPPORTED_MODEL_TYPES, ModelConfig
from .errors import VasError

# model_type -> the Hugging Face class-name prefix (`{prefix}ForCausalLM`, `{prefix}ForSequenceClassification`)
HF_CLASS_PREFIX = {
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",
    "gemma2": "Gemma2",
    "gemma3_text": "Gemma3Text",
    "phi3": "Phi3",
    "olmo2": "Olmo2",
    "gpt2": "GPT2",
}

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
        return theta, (
            "llama3",
            float(rope["factor"]),
            float(rope["low_freq_factor"]),
            float(rope["high_freq_factor"]),
            int(rope["original_max_position_embeddings"]),
        )
    if rtype in ("longrope", "su"):
        orig = int(rope.get("original_max_position_embeddings") or d["original_max_position_embeddings"])
        factor = rope.get("factor") or d["max_position_embeddings"] / orig
        att = rope.get("attention_factor")
        if att is None:
            att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        return theta, (
            "longrope",
            orig,
            float(att),
            tuple(map(float, rope["short_factor"])),
            tuple(map(float, rope["long_factor"])),
        )
    raise VasError(f"unsupported rope type {rtype!r} in config.json; supported: default, linear, llama3, longrope")


def config_from_hf(d: dict[str, Any]) -> ModelConfig:
    """Build from a Hugging Face `config.json` dict."""
    try:
        return _from_hf(d)
    except KeyError as e:
        raise VasError(f"config.json has no {e.args[0]!r} field; is it a complete Hugging Face config?") from None


def _from_hf(d: dict[str, Any]) -> ModelConfig:
    mt = d.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise VasError(f"unsupported model_type {mt!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
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
        return ModelConfig(
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
    return ModelConfig(
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


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """A `config.json` dict that transformers loads as this architecture and head."""
    d = json.loads(cfg.hf_config_json)
    prefix = HF_CLASS_PREFIX[cfg.model_type]
    if cfg.head == "score":
        arch = f"{prefix}ForSequenceClassification"
        d["num_labels"] = cfg.num_labels
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        d["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
    else:
        arch = {"gpt2": "GPT2LMHeadModel", "gemma3_text": "Gemma3ForCausalLM"}.get(
            cfg.model_type, f"{prefix}ForCausalLM"
        )
        d.pop("num_labels", None)
    d["architectures"] = [arch]
    d["model_type"] = cfg.model_type
    if isinstance(d.get("layer_types"), list):  # a value model from the first layers keeps theirs
        d["layer_types"] = d["layer_types"][: cfg.num_layers]
    d["vocab_size"] = cfg.vocab_size
    d["tie_word_embeddings"] = cfg.tie_word_embeddings
    if cfg.pad_token_id is not None:
        d["pad_token_id"] = cfg.pad_token_id
    if cfg.is_gpt2:
        d.update(
            n_embd=cfg.hidden_size,
            n_layer=cfg.num_layers,
            n_head=cfg.num_heads,
            n_inner=cfg.intermediate_size,
            n_positions=cfg.max_position_embeddings,
            layer_norm_epsilon=cfg.norm_eps,
        )
    else:
        d.update(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim,
            max_position_embeddings=cfg.max_position_embeddings,
            rms_norm_eps=cfg.norm_eps,
        )
    return d
