"""GGUF checkpoints (llama.cpp's format) read as Hugging Face checkpoints.

The `gguf` library (llama.cpp's own reader) parses the file and dequantizes its tensors; this
module only translates: the metadata into a `config.json` dict, llama.cpp's tensor names into
Hugging Face's, and back the row permutation llama.cpp's converter applies to Llama's q and k
projections. `hf.load_model` then reads the tensors through the same key map and shape checks as
safetensors. The tokenizer and chat template come from the file's metadata through transformers'
own GGUF conversion (`load_tokenizer`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import VasError

# what the gguf library dequantizes and we have checked; others are refused by name
SUPPORTED_QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
# GGUF general.architecture -> (HF model_type, HF causal-LM class)
ARCHITECTURES = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM")}

_LAYER = {  # llama.cpp's per-layer names -> Hugging Face's
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def find_gguf(path: str | Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the one .gguf file in a directory without a
    config.json. None when `path` is not a GGUF checkpoint."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise VasError(f"{str(path)!r} holds {len(found)} .gguf files; pass the file itself")
        if found:
            return found[0]
    return None


def _hf_name(name: str) -> str | None:
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    if m:
        layer, part, kind = m.groups()
        return f"model.layers.{layer}.{_LAYER[part]}.{kind}" if part in _LAYER else None
    base, _, kind = name.rpartition(".")
    return f"{_GLOBAL[base]}.{kind}" if base in _GLOBAL else None


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (each head's rotary halves interleaved) to Hugging Face's."""
    out_dim = w.shape[0]
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFCheckpoint:
    """A GGUF file as a config dict and tensors by Hugging Face name (the `hf._Reader` interface)."""

    def __init__(self, path: str | Path):
        try:
            from gguf import GGUFReader
        except ImportError:
            raise VasError("reading GGUF files needs the gguf package: pip install gguf") from None
        self.path = Path(path)
        try:
            self.reader = GGUFReader(str(self.path))
        except Exception as e:  # the reader raises several types for truncated or foreign files
            raise VasError(f"{self.path} is not a readable GGUF file ({str(e).splitlines()[0]})") from None
        self.arch = self.field("general.architecture")
        if self.arch not in ARCHITECTURES:
            raise VasError(
                f"{self.path}: GGUF architecture {self.arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
            )
        self.tensors = {}
        for t in self.reader.tensors:
            hf = _hf_name(t.name)
            if hf is None:
                continue  # e.g. rope_freqs: derived from the config, not loaded
            if t.tensor_type.name not in SUPPORTED_QUANTS:
                raise VasError(
                    f"{self.path}: tensor {t.name} is stored as {t.tensor_type.name}, which vas-jax does "
                    f"not read; supported: {', '.join(SUPPORTED_QUANTS)}"
                )
            self.tensors[hf] = t
        self.config = self._config()

    def field(self, key: str, default=None):
        f = self.reader.fields.get(key)
        return default if f is None else f.contents()

    def _config(self) -> dict:
        a = self.arch
        n_heads = int(self.field(f"{a}.attention.head_count"))
        hidden = int(self.field(f"{a}.embedding_length"))
        vocab = self.field(f"{a}.vocab_size") or len(self.field("tokenizer.ggml.tokens"))
        model_type, arch_class = ARCHITECTURES[a]
        d = {
            "architectures": [arch_class],
            "model_type": model_type,
            "vocab_size": int(vocab),
            "hidden_size": hidden,
            "intermediate_size": int(self.field(f"{a}.feed_forward_length")),
            "num_hidden_layers": int(self.field(f"{a}.block_count")),
            "num_attention_heads": n_heads,
            "num_key_value_heads": int(self.field(f"{a}.attention.head_count_kv", n_heads)),
            "head_dim": int(self.field(f"{a}.attention.key_length", hidden // n_heads)),
            "max_position_embeddings": int(self.field(f"{a}.context_length", 2048)),
            "rms_norm_eps": float(self.field(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)),
            "rope_theta": float(self.field(f"{a}.rope.freq_base", 10000.0)),
            "hidden_act": "silu",
            "tie_word_embeddings": "lm_head.weight" not in self.tensors,
            "torch_dtype": "float32",
        }
        for ours, theirs in (
            ("bos_token_id", "bos_token_id"),
            ("eos_token_id", "eos_token_id"),
            ("pad_token_id", "padding_token_id"),
        ):
            v = self.field(f"tokenizer.ggml.{theirs}")
            if v is not None:
                d[ours] = int(v)
        return d

    def keys(self):
        return self.tensors.keys()

    def get(self, name: str, shape: tuple) -> np.ndarray:
        from gguf import dequantize

        if name not in self.tensors:
            raise VasError(f"{self.path} is missing tensor {name!r} (expected shape {tuple(shape)})")
        t = self.tensors[name]
        # numpy order is GGUF's dimensions reversed: [out, in] for a projection, as in PyTorch
        w = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(tuple(int(x) for x in t.shape[::-1]))
        if self.arch == "llama" and name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
            heads = self.config["num_attention_heads"] if "q_proj" in name else self.config["num_key_value_heads"]
            w = _unpermute(w, heads)
        if tuple(w.shape) != tuple(shape):
            raise VasError(f"{self.path}: tensor {t.name} has shape {tuple(w.shape)}, expected {tuple(shape)}")
        return w

    def end_of_turn_ids(self) -> list[int]:
        """Token ids that end an assistant turn: the file's EOS and its end-of-turn token, if any."""
        ids = [self.field(f"tokenizer.ggml.{k}") for k in ("eos_token_id", "eot_token_id", "eom_token_id")]
        return sorted({int(i) for i in ids if i is not None})


def load_gguf_tokenizer(path: Path):
    """The tokenizer and chat template in a GGUF file's metadata, converted by transformers'
    GGUF tokenizer builders. The metadata is read here with the gguf library: transformers' own
    GGUF reader imports PyTorch, which a user of vas-jax need not have."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        _SPECIAL_TOKENS,
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    ckpt = GGUFCheckpoint(path)
    try:
        groups = {
            group: {name: v for key, name in renames.items() if (v := ckpt.field(f"tokenizer.{key}")) is not None}
            for group, renames in GGUF_TOKENIZER_MAPPING.items()
        }
        tokenizer, config = groups["tokenizer"], groups["tokenizer_config"]
        if tokenizer.get("tokenizer_type") == "llama":  # llama.cpp adds BOS to a sentencepiece vocabulary by default
            config.setdefault("add_bos_token", True)
        for name, key in _SPECIAL_TOKENS.items():
            token_id = ckpt.field(f"tokenizer.ggml.{key}")
            config[name] = tokenizer["tokens"][int(token_id)] if token_id is not None else None
        backend, extra = convert_gguf_tokenizer(ckpt.arch, tokenizer)
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, **config, **extra)
    except Exception as e:
        raise VasError(f"could not read the tokenizer in {path}: {str(e).splitlines()[0]}") from None
    tok.vas_end_of_turn_ids = ckpt.end_of_turn_ids()
    return tok
