"""Hugging Face checkpoint directories: load into our NNX models, save back.

A key map names, for every parameter of ours, the HF tensor(s) it comes from
and how (transpose for `nn.Linear`, split for GPT-2's fused `c_attn`). Every
tensor's shape is checked against the config before it is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .config import ModelConfig, parse_dtype
from .errors import VasError
from .gguf_file import GGUFCheckpoint, find_gguf
from .hf_config import config_from_hf, config_to_hf
from .hub import resolve_model
from .model import Transformer

PICKLE_NAMES = (
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "model.pt",
    "model.bin",
    "tf_model.h5",
    "flax_model.msgpack",
)


def read_config(path: str | os.PathLike) -> dict:
    """The checkpoint's config.json as a dict (for a GGUF file: translated from its metadata)."""
    path = resolve_model(path)
    if not path.exists():
        raise VasError(f"model directory {str(path)!r} does not exist")
    gguf = find_gguf(path)
    if gguf is not None:
        return GGUFCheckpoint(gguf).config
    if not path.is_dir():
        raise VasError(f"{str(path)!r} is not a directory; pass a Hugging Face checkpoint directory")
    cfg = path / "config.json"
    if not cfg.exists():
        raise VasError(f"{str(path)!r} has no config.json; is it a Hugging Face checkpoint directory?")
    try:
        d = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise VasError(f"{cfg} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict):
        raise VasError(f"{cfg} holds a JSON {type(d).__name__}, not an object; is it a model's config.json?")
    return d


class _Reader:
    """Lazily reads tensors by name from one or several safetensors files."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        index = path / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in path.glob("*.safetensors"))
            weight_map = None
        if not files:
            refuse_pickle(path)
            raise VasError(f"no *.safetensors weights in {str(path)!r}")
        self.handles = {}
        self.where: dict[str, str] = {}
        for f in files:
            fp = path / f
            if not fp.exists():
                raise VasError(f"{index.name} lists {f}, which is missing from {str(path)!r}")
            try:
                h = safe_open(str(fp), framework="numpy")
            except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
                raise VasError(
                    f"{fp} is not a readable safetensors file ({str(e).splitlines()[0]}); "
                    "it may be truncated: copy or download it again"
                ) from None
            self.handles[f] = h
            for k in h.keys():
                self.where[k] = f

    def keys(self):
        return self.where.keys()

    def get(self, name: str, shape: tuple) -> np.ndarray:
        if name not in self.where:
            raise VasError(f"checkpoint is missing tensor {name!r} (expected shape {tuple(shape)})")
        h = self.handles[self.where[name]]
        got = tuple(h.get_slice(name).get_shape())
        if got != tuple(shape):
            raise VasError(f"tensor {name!r} has shape {got}, expected {tuple(shape)} from config.json")
        try:
            return h.get_tensor(name)
        except Exception as e:
            raise VasError(
                f"tensor {name!r} in {self.where[name]} cannot be read ({str(e).splitlines()[0]}); "
                "the file may be truncated"
            ) from None


def refuse_pickle(path: Path) -> None:
    """Refuse a directory whose weights are a pickle (one line, with a conversion that keeps the head)."""
    found = [n for n in PICKLE_NAMES if (path / n).exists()] + sorted(p.name for p in path.glob("*.bin"))
    if found:
        raise VasError(pickle_message(path, found[0]))


def pickle_message(path: Path, name: str) -> str:
    """The one-line refusal of a pickle checkpoint, with a conversion that keeps the model's head:
    the `Auto*` class matching its architecture (plain `AutoModel` would drop `lm_head` / `score`)."""
    try:
        archs = json.loads((path / "config.json").read_text()).get("architectures") or []
    except (OSError, json.JSONDecodeError):
        archs = []
    arch = archs[0] if archs else ""
    cls = "AutoModelForSequenceClassification" if arch.endswith("ForSequenceClassification") else "AutoModelForCausalLM"
    return (
        f"{path / name} is a pickle checkpoint, which vas-jax does not load (unsafe: unpickling runs code); "
        f'if you trust it, convert it to safetensors: python -c "import transformers as t; '
        f"m = t.{cls}.from_pretrained('{path}'); m.save_pretrained('{path}', safe_serialization=True)\""
    )


def check_weights(path: str | os.PathLike) -> int:
    """Open every safetensors file's header (safetensors checks the file holds every tensor's bytes);
    the number of tensors. Refuses pickles and truncated files with one line (what `vas info` runs)."""
    gguf = find_gguf(path)
    if gguf is not None:
        return len(GGUFCheckpoint(gguf).tensors)
    return len(_Reader(Path(path)).where)


def _prefix(cfg: ModelConfig, keys) -> str:
    keys = set(keys)
    if cfg.is_gpt2:
        return "transformer." if "transformer.wte.weight" in keys or "wte.weight" not in keys else ""
    return "model." if "model.embed_tokens.weight" in keys or "embed_tokens.weight" not in keys else ""


class _KeyMap:
    """The parameter map being built: (our_path, hf_names, hf_shapes, from_hf, to_hf) per parameter."""

    def __init__(self):
        self.items = []

    def add(self, path, name, shape):  # stored as-is
        self.items.append((path, [name], [shape], _same, lambda x: [x]))

    def lin(self, path, name, din, dout):  # HF nn.Linear: weight [out, in]
        self.items.append((path, [name], [(dout, din)], _transposed, lambda x: [x.T]))

    def split(self, parent, name, din, parts):  # one HF nn.Linear whose output rows are several of ours, in order
        total = sum(n for _, n in parts)
        start = 0
        for ours, n in parts:
            self.items.append(
                (parent + (ours, "kernel"), [name], [(total, din)], (lambda x, a=start, b=start + n: x[a:b].T), None)
            )
            start += n


def _same(x):
    return x


def _transposed(x):
    return x.T


def _key_map(cfg: ModelConfig, prefix: str):
    """(our_path, hf_names, hf_shapes, from_hf, to_hf) for every parameter."""
    m = _KeyMap()
    if cfg.is_gpt2:
        _gpt2_keys(m, cfg, prefix)
    else:
        _decoder_keys(m, cfg, prefix)
    if cfg.head == "score":
        m.lin(("score", "kernel"), "score.weight", cfg.hidden_size, cfg.num_labels)
    elif not cfg.tie_word_embeddings:
        m.lin(("lm_head", "kernel"), "lm_head.weight", cfg.hidden_size, cfg.vocab_size)
    return m.items


def _gpt2_keys(m: _KeyMap, cfg: ModelConfig, p: str) -> None:
    h, f = cfg.hidden_size, cfg.intermediate_size
    m.add(("embed",), f"{p}wte.weight", (cfg.vocab_size, h))
    m.add(("pos_embed",), f"{p}wpe.weight", (cfg.max_position_embeddings, h))
    for i in range(cfg.num_layers):
        L, q = ("layers", i), f"{p}h.{i}."
        for ours, theirs in (("input_norm", "ln_1"), ("post_norm", "ln_2")):
            m.add(L + (ours, "weight"), f"{q}{theirs}.weight", (h,))
            m.add(L + (ours, "bias"), f"{q}{theirs}.bias", (h,))
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):  # c_attn holds q, k and v side by side
            cut = (lambda x, j=j: x[:, j * h : (j + 1) * h]), (lambda x, j=j: x[j * h : (j + 1) * h])
            m.items.append((L + ("attn", name, "kernel"), [f"{q}attn.c_attn.weight"], [(h, 3 * h)], cut[0], None))
            m.items.append((L + ("attn", name, "bias"), [f"{q}attn.c_attn.bias"], [(3 * h,)], cut[1], None))
        m.add(L + ("attn", "o_proj", "kernel"), f"{q}attn.c_proj.weight", (h, h))
        m.add(L + ("attn", "o_proj", "bias"), f"{q}attn.c_proj.bias", (h,))
        m.add(L + ("mlp", "up_proj", "kernel"), f"{q}mlp.c_fc.weight", (h, f))
        m.add(L + ("mlp", "up_proj", "bias"), f"{q}mlp.c_fc.bias", (f,))
        m.add(L + ("mlp", "down_proj", "kernel"), f"{q}mlp.c_proj.weight", (f, h))
        m.add(L + ("mlp", "down_proj", "bias"), f"{q}mlp.c_proj.bias", (h,))
    m.add(("final_norm", "weight"), f"{p}ln_f.weight", (h,))
    m.add(("final_norm", "bias"), f"{p}ln_f.bias", (h,))


_NORMS = {  # our norm -> the checkpoint's, per layout
    "pre": (("input_norm", "input_layernorm"), ("post_norm", "post_attention_layernorm")),
    "sandwich": (
        ("input_norm", "input_layernorm"),
        ("attn_out_norm", "post_attention_layernorm"),
        ("post_norm", "pre_feedforward_layernorm"),
        ("mlp_out_norm", "post_feedforward_layernorm"),
    ),
    "post": (("attn_out_norm", "post_attention_layernorm"), ("mlp_out_norm", "post_feedforward_layernorm")),
}


def _decoder_keys(m: _KeyMap, cfg: ModelConfig, p: str) -> None:
    m.add(("embed",), f"{p}embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size))
    for i in range(cfg.num_layers):
        _decoder_layer_keys(m, cfg, ("layers", i), f"{p}layers.{i}.")
    m.add(("final_norm", "weight"), f"{p}norm.weight", (cfg.hidden_size,))


def _decoder_layer_keys(m: _KeyMap, cfg: ModelConfig, L: tuple, q: str) -> None:
    h, f = cfg.hidden_size, cfg.intermediate_size
    nh, kvh, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    for ours, theirs in _NORMS[cfg.norm_layout]:
        m.add(L + (ours, "weight"), f"{q}{theirs}.weight", (h,))
    qk = {"head": (d, d), "full": (nh * d, kvh * d)}.get(cfg.qk_norm)
    if qk:
        m.add(L + ("attn", "q_norm", "weight"), f"{q}self_attn.q_norm.weight", (qk[0],))
        m.add(L + ("attn", "k_norm", "weight"), f"{q}self_attn.k_norm.weight", (qk[1],))
    fused = cfg.model_type == "phi3"  # Phi-3 stores q/k/v as one qkv_proj and gate/up as one gate_up_proj
    if fused:
        qkv = (("q_proj", nh * d), ("k_proj", kvh * d), ("v_proj", kvh * d))
        m.split(L + ("attn",), f"{q}self_attn.qkv_proj.weight", h, qkv)
        m.split(L + ("mlp",), f"{q}mlp.gate_up_proj.weight", h, (("gate_proj", f), ("up_proj", f)))
    for name, dout, bias in (
        ("q_proj", nh * d, cfg.attention_bias),
        ("k_proj", kvh * d, cfg.attention_bias),
        ("v_proj", kvh * d, cfg.attention_bias),
        ("o_proj", h, cfg.o_bias),
    ):
        din = nh * d if name == "o_proj" else h
        if not (fused and name != "o_proj"):
            m.lin(L + ("attn", name, "kernel"), f"{q}self_attn.{name}.weight", din, dout)
        if bias:
            m.add(L + ("attn", name, "bias"), f"{q}self_attn.{name}.bias", (dout,))
    for name, din, dout in (("gate_proj", h, f), ("up_proj", h, f), ("down_proj", f, h)):
        if not (fused and name != "down_proj"):
            m.lin(L + ("mlp", name, "kernel"), f"{q}mlp.{name}.weight", din, dout)
        if cfg.mlp_bias:
            m.add(L + ("mlp", name, "bias"), f"{q}mlp.{name}.bias", (dout,))


def _flat_params(model: Transformer) -> dict[tuple, nnx.Variable]:
    state = nnx.state(model, nnx.Param)
    return {tuple(k): v for k, v in nnx.to_flat_state(state)}


def load_model(
    path: str | os.PathLike, *, dtype="float32", head: str | None = None, mesh=None, rules=None, fuse: bool = False
) -> Transformer:
    """Load a checkpoint as an NNX model: a Hugging Face directory (config.json + safetensors), or a
    GGUF file (or a directory holding one), dequantized to `dtype`.

    dtype: "float32" or "bfloat16" (parameters and compute; outputs are float32).
    head: override the head ("lm" or "score") that `architectures` implies.
    mesh: place each tensor straight onto its shards of this mesh (by `rules`, default
    vas_jax.sharding.DECODE_RULES): no device ever holds a full copy of a sharded tensor.
    fuse: merge each layer's q/k/v and gate/up projections (`fuse_projections`): faster decoding,
    the same outputs; such a model cannot be trained or saved.
    A path may also be a hub id, ORG/NAME or ORG/NAME/FILE.gguf (`vas_jax.hub.resolve_model`).
    """
    path = resolve_model(path)
    gguf = find_gguf(path) if path.exists() else None
    if gguf is not None:  # dequantized by the gguf library, read through the same key map
        reader = GGUFCheckpoint(gguf)
        d = reader.config
    else:
        d = read_config(path)
    cfg = config_from_hf(d)
    if head is not None and head != cfg.head:
        raise VasError(f"{path} holds a {cfg.head!r}-head model, but a {head!r}-head model was asked for")
    dt = parse_dtype(dtype)
    if gguf is None:
        reader = _Reader(path)
    prefix = _prefix(cfg, reader.keys())
    abstract = nnx.eval_shape(lambda: Transformer(cfg, dtype=dt, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))
    loaded = {}
    for path_, names, shapes, fr, _ in _key_map(cfg, prefix):
        arrays = [reader.get(n, s) for n, s in zip(names, shapes)]
        x = np.asarray(fr(*arrays))
        want = flat[path_].shape if hasattr(flat[path_], "shape") else flat[path_].value.shape
        if tuple(x.shape) != tuple(want):  # pragma: no cover - the key map guarantees it
            raise VasError(f"tensor {names[0]!r} maps to shape {x.shape}, expected {want}")
        loaded[path_] = x
    missing = [p for p in flat if p not in loaded]
    if missing:  # pragma: no cover - would be a key-map bug
        raise RuntimeError(f"no checkpoint tensor for parameters {missing[:3]}")
    from .sharding import DECODE_RULES, shard_model, state_shardings

    host = _host_device() if fuse and mesh is not None else None
    shardings = None
    if mesh is not None and host is None:
        shardings = dict(
            nnx.to_flat_state(
                state_shardings(nnx.from_flat_state({p: v.value for p, v in flat.items()}), mesh, rules or DECODE_RULES)
            )
        )
    for p, var in flat.items():  # onto its shards, the host (to be fused first) or the default device
        var.value = jax.device_put(np.asarray(loaded[p]).astype(dt), shardings[p] if shardings is not None else host)
    model = nnx.merge(graphdef, nnx.from_flat_state(flat))
    if fuse:
        from .model import fuse_projections

        with jax.default_device(host):  # on a mesh, fused in host memory, then placed once
            model = fuse_projections(model)
        if mesh is not None:  # kv groups and MLP units stay whole on their shards
            model = shard_model(model, mesh, rules or DECODE_RULES)
    return model


def _host_device():
    """The host's CPU device, where a model is fused before it goes onto a mesh (None if jax runs
    without its CPU backend; the model is then placed, fused and placed again)."""
    try:
        return jax.local_devices(backend="cpu")[0]
    except RuntimeError:
        return None


def save_model(model: Transformer, path: str | os.PathLike, *, dtype=None, tokenizer=None) -> Path:
    """Save as a Hugging Face directory (config.json + model.safetensors) that transformers loads."""
    from safetensors.numpy import save_file

    from .model import is_fused

    if is_fused(model):
        raise VasError(
            "this model's projections are fused for decoding (fuse_projections); save the model "
            "as loaded, before fusing"
        )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    dt = parse_dtype(dtype) if dtype is not None else model.dtype
    flat = {k: np.asarray(jax.device_get(v[...])) for k, v in _flat_params(model).items()}
    out: dict[str, np.ndarray] = {}
    pending: dict[str, list] = {}
    items = _key_map(cfg, "transformer." if cfg.is_gpt2 else "model.")
    n_parts = {}
    for _, names, _, _, to in items:
        if to is None:
            n_parts[names[0]] = n_parts.get(names[0], 0) + 1
    for path_, names, _shapes, _, to in items:
        x = flat[path_]
        if to is None:  # a slice of a fused tensor: collect the parts in order
            pending.setdefault(names[0], []).append(x)
            if len(pending[names[0]]) == n_parts[names[0]]:
                parts = pending.pop(names[0])
                if cfg.is_gpt2:  # Conv1D: [in, out], parts side by side in the output columns
                    out[names[0]] = np.concatenate(parts, axis=-1)
                else:  # nn.Linear: [out, in], parts stacked in the output rows
                    out[names[0]] = np.concatenate(parts, axis=-1).T
            continue
        out[names[0]] = to(x)[0]
    out = {k: np.ascontiguousarray(v.astype(dt)) for k, v in out.items()}
    save_file(out, str(path / "model.safetensors"), metadata={"format": "pt"})
    # safetensors writes through a private temporary file (mode 0600): give it the mode every other file has
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path / "model.safetensors", 0o666 & ~umask)
    hf = config_to_hf(cfg)
    hf["torch_dtype"] = hf["dtype"] = "bfloat16" if dt == jnp.bfloat16 else "float32"
    (path / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path
