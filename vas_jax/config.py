"""Model configuration: one frozen dataclass for every supported architecture.

The config is static (hashable), so models can be split with `nnx.split` and
their graph definitions used as static arguments of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .errors import VasError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "gpt2")

_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}


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
    # ("llama3", factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)
    rope_scaling: tuple = ("default",)
    attention_bias: bool = False  # bias on q, k, v projections (Qwen2; Llama's attention_bias)
    o_bias: bool = False  # bias on the output projection (Llama's attention_bias)
    mlp_bias: bool = False
    activation: str = "silu"
    # Sliding window per layer (0 = full attention); empty tuple = all full.
    sliding_windows: tuple = ()
    attn_scale_by_layer: bool = False  # GPT-2 scale_attn_by_inverse_layer_idx
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
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        theta = float(rope.get("rope_theta", d.get("rope_theta", 10000.0)))
        rtype = rope.get("rope_type", rope.get("type", "default"))
        if rtype == "default":
            scaling: tuple = ("default",)
        elif rtype == "linear":
            scaling = ("linear", float(rope["factor"]))
        elif rtype == "llama3":
            scaling = (
                "llama3",
                float(rope["factor"]),
                float(rope["low_freq_factor"]),
                float(rope["high_freq_factor"]),
                int(rope["original_max_position_embeddings"]),
            )
        else:
            raise VasError(
                f"unsupported rope type {rtype!r} in config.json; supported: default, linear, llama3"
            )
        act = d.get("hidden_act", "silu")
        if act not in _ACTIVATIONS:
            raise VasError(f"unsupported hidden_act {act!r} in config.json")
        n_layers = d["num_hidden_layers"]
        windows: tuple = ()
        sw = d.get("sliding_window")
        if mt == "mistral" and sw:
            windows = (int(sw),) * n_layers
        elif mt == "qwen2" and sw and d.get("use_sliding_window"):
            types = d.get("layer_types")
            if types is None:
                mwl = d.get("max_window_layers", n_layers)
                types = ["sliding_attention" if i >= mwl else "full_attention" for i in range(n_layers)]
            windows = tuple(int(sw) if t == "sliding_attention" else 0 for t in types)
        if windows and not any(windows):
            windows = ()
        attn_bias = bool(d.get("attention_bias", False))
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
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            rope_theta=theta,
            rope_scaling=scaling,
            attention_bias=True if mt == "qwen2" else attn_bias,
            o_bias=False if mt == "qwen2" else attn_bias,
            mlp_bias=bool(d.get("mlp_bias", False)),
            activation=_ACTIVATIONS[act],
            sliding_windows=windows,
            pad_token_id=d.get("pad_token_id"),
            hf_config_json=js,
        )

    def to_hf(self) -> dict[str, Any]:
        """A `config.json` dict that transformers loads as this architecture and head."""
        d = json.loads(self.hf_config_json)
        prefix = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "gpt2": "GPT2"}[self.model_type]
        if self.head == "score":
            arch = f"{prefix}ForSequenceClassification"
            d["num_labels"] = self.num_labels
            d["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            d["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        else:
            arch = "GPT2LMHeadModel" if self.is_gpt2 else f"{prefix}ForCausalLM"
            d.pop("num_labels", None)
        d["architectures"] = [arch]
        d["model_type"] = self.model_type
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
