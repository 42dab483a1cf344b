"""Decoder-only transformers (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, OLMo 2, GPT-2) as Flax NNX modules.

One module family covers every architecture; the differences are static
config fields (norm type, positions, biases, activation, head). Weights are
stored `[in, out]`; the loader transposes Hugging Face's `[out, in]`.

Three ways to run a model:
- `model(input_ids, attention_mask=None, positions=None)`: full sequence, no cache.
- `model.forward(input_ids, cache, mode=...)` with an explicit `KVCache`:
  `"prefill"` (empty cache, left-padded prompts), `"extend"` (append tokens),
  or `"candidates"` (K alternative next tokens per row, each a query at the same
  position that sees the cached prefix and itself only; none is written).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import nnx

from . import decode_attention
from .cache import KVCache
from .config import ModelConfig
from .errors import VasError

_NEG = -1e30  # finite, so a fully masked row (a pad query) gives no NaN


def _act(name: str, x):
    if name == "silu":
        return jax.nn.silu(x)
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu(x)
    raise ValueError(name)


def rope_inv_freq(cfg: ModelConfig, length: int = 0, local: bool = False) -> np.ndarray:
    """Inverse frequencies [head_dim/2], with linear, Llama-3 or LongRoPE scaling.

    local: a sliding-window layer's frequencies where the model has a base of their own (Gemma 3:
    `rope_local_theta`, unscaled). length: the longest sequence the call sees, which picks
    LongRoPE's long factors beyond `original_max_position_embeddings` (static: the cache's size in
    a decode, the sequence's length otherwise). A LongRoPE model's attention factor scales the
    frequencies' cos and sin; `rope_attention_factor` returns it.
    """
    d = cfg.head_dim
    if local and cfg.rope_local_theta:
        return (1.0 / (cfg.rope_local_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))).astype(np.float32)
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    kind = cfg.rope_scaling[0]
    if kind == "longrope":
        _, orig, _, short, long_ = cfg.rope_scaling
        inv = inv / np.asarray(long_ if length > orig else short, np.float64)
    elif kind == "linear":
        inv = inv / cfg.rope_scaling[1]
    elif kind == "llama3":
        _, factor, low, high, old_ctx = cfg.rope_scaling
        low_wavelen = old_ctx / low
        high_wavelen = old_ctx / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = np.where(medium, smoothed, scaled)
    return inv.astype(np.float32)


def rope_attention_factor(cfg: ModelConfig) -> float:
    return cfg.rope_scaling[2] if cfg.rope_scaling[0] == "longrope" else 1.0


def apply_rope(x, positions, inv_freq, factor: float = 1.0):
    """x: [B, T, H, D]; positions: int32[B, T]. Half-split rotation (HF's rotate_half); cos and sin
    times `factor` (LongRoPE's attention factor)."""
    ang = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    cos = jnp.cos(ang)[:, :, None, :]
    sin = jnp.sin(ang)[:, :, None, :]
    if factor != 1.0:
        cos, sin = cos * factor, sin * factor
    xf = x.astype(jnp.float32)
    x1, x2 = jnp.split(xf, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


DEFER_NORM_ROWS = 64  # rows (batch x tokens) up to which the trunk defers RMSNorm's row scale


@dataclasses.dataclass(frozen=True)
class RowScaled:
    """An RMSNorm output not yet multiplied out: `x` (the input times the norm's weight) scaled per row
    by `scale` (float32 [..., 1]). A projection of it is the projection of `x` scaled after the
    product -- the same numbers up to rounding, without a kernel that writes the normalised rows."""

    x: jax.Array
    scale: jax.Array

    @property
    def shape(self):
        return self.x.shape


class Linear(nnx.Module):
    """y = x W (+ b), W stored [in, out]; optionally plus a low-rank update scale * x A B (LoRA)."""

    def __init__(self, din: int, dout: int, *, bias: bool, dtype, rngs: nnx.Rngs):
        self.kernel = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (din, dout), dtype))
        self.bias = nnx.Param(jnp.zeros((dout,), dtype)) if bias else None
        self.lora_a = nnx.data(None)  # data slots, filled by add_lora
        self.lora_b = nnx.data(None)
        self.lora_scale = 0.0

    def __call__(self, x):
        scale = None
        if isinstance(x, RowScaled):  # (s * x) W = s * (x W): the row scale after the product
            x, scale = x.x, x.scale
        # products accumulated in float32 and rounded once; in a one-token decode step on a GPU this
        # is also what lets XLA fuse the vector-matrix product into one pass over the weight (in
        # bfloat16 it can split it into a product the size of the weight, written, then summed)
        y = jnp.dot(x, self.kernel[...].astype(x.dtype), preferred_element_type=jnp.float32)
        if self.lora_a is not None:
            y = y + self.lora_scale * jnp.dot(
                jnp.dot(x, self.lora_a[...].astype(x.dtype)),
                self.lora_b[...].astype(x.dtype),
                preferred_element_type=jnp.float32,
            )
        y = (y if scale is None else y * scale).astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(x.dtype)
        return y


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(model, rank: int, *, alpha: float | None = None, targets=LORA_TARGETS, seed: int = 0):
    """Give the trunk's projections LoRA adapters (A random, B zero: the model's output is unchanged)."""
    rngs = nnx.Rngs(seed)
    scale = (alpha if alpha is not None else rank) / rank
    for path, mod in model.iter_modules():
        if isinstance(mod, Linear) and path and path[-1] in targets:
            din, dout = mod.kernel.shape
            dt = mod.kernel[...].dtype
            mod.lora_a = nnx.data(nnx.Param(jax.random.normal(rngs.params(), (din, rank), dt) / np.sqrt(din)))
            mod.lora_b = nnx.data(nnx.Param(jnp.zeros((rank, dout), dt)))
            mod.lora_scale = scale
    return model


def merge_lora(model):
    """Fold every adapter into its kernel (W + scale * A B) and remove it: a plain model again."""
    for _, mod in model.iter_modules():
        if isinstance(mod, Linear) and mod.lora_a is not None:
            w = mod.kernel[...]
            delta = mod.lora_scale * (mod.lora_a[...].astype(jnp.float32) @ mod.lora_b[...].astype(jnp.float32))
            mod.kernel = nnx.Param((w.astype(jnp.float32) + delta).astype(w.dtype))
            mod.lora_a = nnx.data(None)
            mod.lora_b = nnx.data(None)
            mod.lora_scale = 0.0
    return model


def _fused_linear(parts, layout, *, dtype):
    """One Linear whose kernel concatenates `parts`' kernels (and biases) as `layout` arranges them."""
    din = parts[0].kernel.shape[0]
    kernel = layout([p.kernel[...] for p in parts])
    lin = Linear(din, kernel.shape[-1], bias=parts[0].bias is not None, dtype=dtype, rngs=nnx.Rngs(0))
    lin.kernel = nnx.Param(kernel.reshape(din, -1))
    if parts[0].bias is not None:
        lin.bias = nnx.Param(layout([p.bias[...][None] for p in parts]).reshape(-1))
    return lin


def fuse_projections(model):
    """Merge each layer's q/k/v projections into one matmul and gate/up into one (for decoding).

    The same function, fewer and larger matrix products per layer: on a GPU a decode step is
    bound by the number of kernels more than by their size. Layouts keep tensor parallelism
    whole: q/k/v are grouped per kv head (its query heads, its key, its value), gate/up are
    interleaved per unit, so a split of the output dimension keeps each group on one device.
    Works in place and returns the model; LoRA adapters must be merged first. A fused model
    decodes and scores like the original; it cannot be trained or saved.
    """
    for _, mod in model.iter_modules():
        if isinstance(mod, Linear) and mod.lora_a is not None:
            raise VasError("this model has LoRA adapters; merge them (merge_lora) before fusing projections")
    for blk in model.layers:
        a = blk.attn
        if a.qkv_proj is None:
            g = a.nh // a.kvh

            def qkv_layout(ws, a=a, g=g):
                q, k, v = ws
                lead = q.shape[0]
                return jnp.concatenate(
                    [q.reshape(lead, a.kvh, g * a.d), k.reshape(lead, a.kvh, a.d), v.reshape(lead, a.kvh, a.d)], axis=-1
                )

            a.qkv_proj = nnx.data(_fused_linear([a.q_proj, a.k_proj, a.v_proj], qkv_layout, dtype=model.dtype))
            a.q_proj = a.k_proj = a.v_proj = nnx.data(None)
        m = blk.mlp
        if m.gated and m.gate_up_proj is None:
            m.gate_up_proj = nnx.data(
                _fused_linear([m.gate_proj, m.up_proj], lambda ws: jnp.stack(ws, axis=-1), dtype=model.dtype)
            )
            m.gate_proj = m.up_proj = nnx.data(None)
    return model


def is_fused(model) -> bool:
    return any(blk.attn.qkv_proj is not None for blk in model.layers)


class Norm(nnx.Module):
    """RMSNorm (Llama family) or LayerNorm (GPT-2); statistics in float32."""

    def __init__(self, dim: int, *, eps: float, layer_norm: bool, dtype, offset: float = 0.0):
        self.eps = eps
        self.offset = offset  # Gemma's RMSNorm multiplies by (1 + w), in float32, then rounds
        self.weight = nnx.Param(jnp.full((dim,), 1.0 - offset, dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), dtype)) if layer_norm else None

    def __call__(self, x, deferred: bool = False):
        """deferred (RMSNorm): a `RowScaled` for projections to take, the row scale applied after them
        (a decode step saves one kernel per norm); LayerNorm always returns the normalised array."""
        xf = x.astype(jnp.float32)
        if self.bias is None:
            scale = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
            if self.offset:
                w = self.weight[...].astype(jnp.float32) + self.offset
                if deferred:
                    return RowScaled((w * xf).astype(x.dtype), scale)
                return (xf * scale * w).astype(x.dtype)
            if deferred:
                return RowScaled(self.weight[...].astype(x.dtype) * x, scale)
            return self.weight[...].astype(x.dtype) * (xf * scale).astype(x.dtype)
        mu = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mu), axis=-1, keepdims=True)
        xf = (xf - mu) * jax.lax.rsqrt(var + self.eps)
        y = xf * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)


def _softcap(x, cap: float):
    return x if not cap else jnp.tanh(x / cap) * cap


def attend(q, k, v, mask, scale, own=None, softcap: float = 0.0):
    """Softmax attention of q over keys/values k, v.

    q: [B, T, NH, D]; k, v: [B, KVH, S, D]; mask: bool[B, T, S]. Keys are head-major so both
    matmuls read a cache in place (batch dims B, KVH lead); grouped-query heads are folded into
    groups. own: (k, v [B, KVH, T, D], ok bool[T]): query t also sees its own key/value where ok[t]
    (a candidate token that attends to the cache and to itself), normalised jointly with the rest:
    one product per query, not a [T, T] matrix that is zero off its diagonal. softcap: Gemma 2's
    cap * tanh(score / cap) on the scaled scores.
    """
    qg = rearrange(q, "b t (k g) d -> b k g t d", k=k.shape[1])
    sc = _softcap(jnp.einsum("bkgtd,bksd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale, softcap)
    sc = jnp.where(mask[:, None, None], sc, _NEG)
    if own is None:
        p = jax.nn.softmax(sc, axis=-1)
        out = jnp.einsum("bkgts,bksd->bkgtd", p.astype(v.dtype), v)
        return rearrange(out, "b k g t d -> b t (k g d)")
    ks, vs, ok = own
    sc_own = _softcap(jnp.einsum("bkgtd,bktd->bkgt", qg.astype(jnp.float32), ks.astype(jnp.float32)) * scale, softcap)
    sc_own = jnp.where(ok, sc_own, _NEG)
    m = jnp.maximum(jnp.max(sc, axis=-1), sc_own)
    e = jnp.exp(sc - m[..., None])
    e_own = jnp.exp(sc_own - m)
    denom = jnp.sum(e, axis=-1) + e_own
    out = jnp.einsum("bkgts,bksd->bkgtd", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
    out = (out + e_own[..., None] * vs[:, :, None].astype(jnp.float32)) / denom[..., None]
    return rearrange(out.astype(v.dtype), "b k g t d -> b t (k g d)")


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, layer: int, *, dtype, rngs: nnx.Rngs):
        h, nh, kvh, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.nh, self.kvh, self.d = nh, kvh, d
        self.q_proj = Linear(h, nh * d, bias=cfg.attention_bias, dtype=dtype, rngs=rngs)
        self.k_proj = Linear(h, kvh * d, bias=cfg.attention_bias, dtype=dtype, rngs=rngs)
        self.v_proj = Linear(h, kvh * d, bias=cfg.attention_bias, dtype=dtype, rngs=rngs)
        self.o_proj = Linear(nh * d, h, bias=cfg.o_bias, dtype=dtype, rngs=rngs)
        self.qkv_proj = nnx.data(None)  # set by fuse_projections
        scale = cfg.query_scale or d**-0.5
        if cfg.attn_scale_by_layer:
            scale /= float(layer + 1)
        self.scale = scale
        self.softcap = cfg.attn_softcap
        self.use_rope = not cfg.is_gpt2
        self.rope_factor = rope_attention_factor(cfg)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:  # per head (over head_dim) or over the whole projection (OLMo 2)
            nq, nk = (d, d) if cfg.qk_norm == "head" else (nh * d, kvh * d)
            self.q_norm = Norm(nq, eps=cfg.norm_eps, layer_norm=False, dtype=dtype, offset=cfg.norm_offset)
            self.k_norm = Norm(nk, eps=cfg.norm_eps, layer_norm=False, dtype=dtype, offset=cfg.norm_offset)

    def qkv(self, x, positions, inv_freq):
        b, t, _ = x.shape
        if self.qkv_proj is not None:  # fused: per kv head, its query group, then its key and value
            y = self.qkv_proj(x).reshape(b, t, self.kvh, self.nh // self.kvh + 2, self.d)
            q = y[:, :, :, :-2].reshape(b, t, self.nh, self.d)
            k, v = y[:, :, :, -2], y[:, :, :, -1]
        else:
            q = self.q_proj(x).reshape(b, t, self.nh, self.d)
            k = self.k_proj(x).reshape(b, t, self.kvh, self.d)
            v = self.v_proj(x).reshape(b, t, self.kvh, self.d)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        elif self.qk_norm == "full":
            q = self.q_norm(q.reshape(b, t, -1)).reshape(q.shape)
            k = self.k_norm(k.reshape(b, t, -1)).reshape(k.shape)
        if self.use_rope:
            q = apply_rope(q, positions, inv_freq, self.rope_factor)
            k = apply_rope(k, positions, inv_freq, self.rope_factor)
        # keys/values head-major, the cache's layout: [B, KVH, T, D]
        return q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
        h, f = cfg.hidden_size, cfg.intermediate_size
        self.act = cfg.activation
        self.gated = not cfg.is_gpt2
        if self.gated:
            self.gate_proj = Linear(h, f, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)
        self.up_proj = Linear(h, f, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)
        self.down_proj = Linear(f, h, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)
        self.gate_up_proj = nnx.data(None)  # set by fuse_projections

    def __call__(self, x):
        if self.gate_up_proj is not None:  # fused: gate and up interleaved, [..., F, 2]
            y = self.gate_up_proj(x)
            y = y.reshape(y.shape[:-1] + (-1, 2))
            return self.down_proj(_act(self.act, y[..., 0]) * y[..., 1])
        if self.gated:
            return self.down_proj(_act(self.act, self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(_act(self.act, self.up_proj(x)))


class Block(nnx.Module):
    """Attention and MLP, each with its residual. Norms by `norm_layout`: `input_norm` before attention
    and `post_norm` before the MLP ("pre", "sandwich"); `attn_out_norm` / `mlp_out_norm` on their
    outputs ("sandwich", "post")."""

    def __init__(self, cfg: ModelConfig, layer: int, *, dtype, rngs: nnx.Rngs):
        def norm():
            return Norm(cfg.hidden_size, eps=cfg.norm_eps, layer_norm=cfg.is_gpt2, dtype=dtype, offset=cfg.norm_offset)

        before, after = cfg.norm_layout in ("pre", "sandwich"), cfg.norm_layout in ("sandwich", "post")
        self.input_norm = norm() if before else None
        self.attn = Attention(cfg, layer, dtype=dtype, rngs=rngs)
        self.attn_out_norm = norm() if after else None
        self.post_norm = norm() if before else None
        self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)
        self.mlp_out_norm = norm() if after else None


def _write(buf, x, index):
    """Write x [B, KVH, P, D] into the cache buffer at `index`: one slice update for a shared index,
    one per row for per-row indices (int32[B])."""
    if index.ndim == 0:
        return jax.lax.dynamic_update_slice(buf, x, (0, 0, index, 0))
    return jax.vmap(lambda c, y, i: jax.lax.dynamic_update_slice(c, y, (0, i, 0)))(buf, x, index)


def _window_ok(pos_q, pos_k, window: int):
    """pos_q: [B, T]; pos_k: [B, S] -> bool[B, T, S] (True everywhere when window == 0)."""
    if not window:
        return None
    return (pos_q[:, :, None] - pos_k[:, None, :]) < window


class Transformer(nnx.Module):
    """A decoder-only LM trunk with a causal-LM head or a sequence-score head."""

    def __init__(self, cfg: ModelConfig, *, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        dtype = jnp.dtype(dtype)
        self.config = cfg
        self.dtype_name = dtype.name
        self.shard_hints = None  # {name: sharding} inside a sharded train step (sharding.train_hints) or decode
        self.embed = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (cfg.vocab_size, cfg.hidden_size), dtype))
        if cfg.is_gpt2:
            self.pos_embed = nnx.Param(
                nnx.initializers.normal(0.01)(rngs.params(), (cfg.max_position_embeddings, cfg.hidden_size), dtype)
            )
        self.layers = nnx.List([Block(cfg, i, dtype=dtype, rngs=rngs) for i in range(cfg.num_layers)])
        self.final_norm = Norm(
            cfg.hidden_size, eps=cfg.norm_eps, layer_norm=cfg.is_gpt2, dtype=dtype, offset=cfg.norm_offset
        )
        if cfg.head == "score":
            self.score = Linear(cfg.hidden_size, cfg.num_labels, bias=False, dtype=dtype, rngs=rngs)
        elif not cfg.tie_word_embeddings:
            self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False, dtype=dtype, rngs=rngs)

    # ------------------------------------------------------------------ pieces
    @property
    def dtype(self):
        return jnp.dtype(self.dtype_name)

    def _hint(self, name: str):
        """A sharding set (as `shard_hints`) only inside a sharded train step or decode program."""
        return self.shard_hints.get(name) if self.shard_hints else None

    def _embed(self, input_ids, positions):
        table = self.embed[...]
        if self._hint("embed_table") is not None:
            table = jax.lax.with_sharding_constraint(table, self._hint("embed_table"))
        x = jnp.take(table, input_ids, axis=0).astype(self.dtype)
        if self.config.embed_scale:  # Gemma: times sqrt(hidden), the factor rounded to the model's dtype
            x = x * jnp.asarray(math.sqrt(self.config.hidden_size), self.dtype)
        if self.config.is_gpt2:
            pos = jnp.clip(positions, 0, self.config.max_position_embeddings - 1)
            x = x + jnp.take(self.pos_embed[...], pos, axis=0).astype(self.dtype)
        return x

    def _head(self, h):
        """Final hidden [B, T, H] -> float32 logits [B, T, V] or scores [B, T] / [B, T, L]."""
        cfg = self.config
        if cfg.head == "score":
            s = self.score(h).astype(jnp.float32)
            return s[..., 0] if cfg.num_labels == 1 else s
        if cfg.tie_word_embeddings:
            w = self.embed[...].astype(h.dtype)
            logits = jnp.einsum("bth,vh->btv", h, w, preferred_element_type=jnp.float32)
        else:
            logits = self.lm_head(h).astype(jnp.float32)
        return _softcap(logits, cfg.final_softcap)

    def _trunk(self, x, attn_fn, length: int):
        """length: the longest sequence this call sees (static), for LongRoPE's choice of factors."""
        cfg = self.config
        inv_freq = inv_local = None
        if not cfg.is_gpt2:
            inv_freq = jnp.asarray(rope_inv_freq(cfg, length))
            inv_local = jnp.asarray(rope_inv_freq(cfg, length, local=True)) if cfg.rope_local_theta else inv_freq
        pin = self._hint("residual")
        # a decode step's few rows: each RMSNorm's row scale rides on the projections after it (one
        # kernel less per norm on a GPU at one row: 32 a step for a 16-layer model); with many rows
        # (prefill, training, a batch of candidates) XLA fuses the norm as well or better unfolded
        defer = math.prod(x.shape[:-1]) <= DEFER_NORM_ROWS
        for i, blk in enumerate(self.layers):
            if pin is not None:
                x = jax.lax.with_sharding_constraint(x, pin)
            h = x if blk.input_norm is None else blk.input_norm(x, deferred=defer)
            a = blk.attn.o_proj(attn_fn(i, blk.attn, h, inv_local if cfg.window(i) else inv_freq))
            x = x + (a if blk.attn_out_norm is None else blk.attn_out_norm(a))
            m = blk.mlp(x if blk.post_norm is None else blk.post_norm(x, deferred=defer))
            x = x + (m if blk.mlp_out_norm is None else blk.mlp_out_norm(m))
        return self.final_norm(x)

    # ---------------------------------------------------------- full sequence
    def hidden_states(self, input_ids, attention_mask=None, positions=None):
        """Final-norm hidden states [B, T, H] of a (left- or right-) padded batch."""
        input_ids = jnp.asarray(input_ids, jnp.int32)
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), bool)
        attention_mask = jnp.asarray(attention_mask).astype(bool)
        if positions is None:
            positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)
        positions = jnp.asarray(positions, jnp.int32)
        causal = jnp.tril(jnp.ones((t, t), bool))[None]
        base_mask = causal & attention_mask[:, None, :]
        masks = {}

        def attn_fn(i, attn, x, inv_freq):
            w = self.config.window(i)
            if w not in masks:
                ok = _window_ok(positions, positions, w)
                masks[w] = base_mask if ok is None else base_mask & ok
            q, k, v = attn.qkv(x, positions, inv_freq)
            return attend(q, k, v, masks[w], attn.scale, softcap=attn.softcap)

        return self._trunk(self._embed(input_ids, positions), attn_fn, t)

    def __call__(self, input_ids, attention_mask=None, positions=None):
        """input_ids: int[B, T] -> float32 logits [B, T, V] (LM) or scores [B, T] (score head).

        attention_mask: bool/int[B, T], 1 for real tokens (any padding side);
        positions: int[B, T], by default the count of real tokens before each one.
        """
        return self._head(self.hidden_states(input_ids, attention_mask, positions))

    # ------------------------------------------------------------ with cache
    def forward(
        self,
        input_ids,
        cache: KVCache,
        *,
        mode: str = "extend",
        outputs: str = "all",
        n_pending: int = 0,
        attention: str = "xla",
    ):
        """Run tokens against an explicit KV cache.

        input_ids: int32[B, T].
        - "prefill": the cache is empty; T left-padded prompt tokens are written. Returns (out, cache').
        - "extend": T tokens are appended (written, then attended causally). Returns (out, cache').
        - "candidates": the first `n_pending` tokens are appended as in "extend"; the remaining
          K = T - n_pending tokens are alternatives for the next position: each is a query at that
          one position that sees the cache (pending tokens included) and itself only, and none is
          written. Returns (out for the K candidates, cache').
        outputs: "all" positions, only the "last" one ([B, 1, ...]), or "none" (out is None).
        attention: "xla", or "pallas" for the fused decode-attention kernel (`vas_jax.decode_attention`;
        "interpret" runs it through the Pallas interpreter) where a step's queries all read the same
        slots (one written token, or candidates after at most one pending token), no sliding window
        limits them and the cache size suits the kernel; elsewhere XLA's attention.
        """
        input_ids = jnp.asarray(input_ids, jnp.int32)
        b, t = input_ids.shape
        cfg = self.config
        if mode not in ("prefill", "extend", "candidates"):
            raise ValueError(f"unknown mode {mode!r}")
        decode_attention.check_attention(attention)
        p = n_pending if mode == "candidates" else t  # tokens written to the cache
        kc_ = t - p  # candidate tokens
        # one write index for the batch (int32[]: `decode_program`'s left-padded rows), or one per row
        # (int32[B]: the step engine's slots, each at its own length)
        per_row = cache.index.ndim == 1
        index = cache.index[:, None] if per_row else cache.index  # [B, 1] or []
        slots = index + jnp.arange(p, dtype=jnp.int32)  # where the written tokens go: [B, P] or [P]
        pos_w = jnp.broadcast_to(slots - cache.starts[:, None], (b, p))  # [B, P]
        pos_c = jnp.broadcast_to((cache.index + p - cache.starts)[:, None], (b, kc_))  # [B, K]
        positions = jnp.concatenate([pos_w, pos_c], axis=1)
        s_idx = jnp.arange(cache.size, dtype=jnp.int32)
        ctx_pos = cache.slot_positions()
        # The written tokens go into the cache first and every query reads the updated cache:
        # reading the old buffer and then writing it would make XLA copy the whole cache per step.
        last_slot = jnp.concatenate([jnp.broadcast_to(slots, (b, p)), jnp.broadcast_to(index + p - 1, (b, kc_))], 1)
        ctx_mask = (s_idx[None, None, :] <= last_slot[:, :, None]) & (s_idx >= cache.starts[:, None])[:, None, :]
        new_mask = None
        if mode == "prefill":  # attend among the new tokens only: the cache holds nothing before them
            new_mask = jnp.tril(jnp.ones((t, t), bool))[None] & (pos_w >= 0)[:, None, :]
        own_ok = jnp.arange(t) >= p  # queries that see their own key outside the cache: the candidates
        # the fused kernel: every query of a row reads slots [starts, index) and the step's own tokens
        use_kernel = (
            attention != "xla"
            and not per_row  # the kernel writes at one index for the batch
            and mode != "prefill"
            and (p == t == 1 or (mode == "candidates" and p <= 1))
            and not cfg.attn_softcap  # the kernel has no soft-capping
            and decode_attention.supported(cfg.head_dim, cache.size, attention == "interpret")
        )
        masks = {}
        ks, vs = [], []

        def with_window(m, pos_k, w):
            ok = _window_ok(positions, pos_k, w)
            return m if ok is None else m & ok

        def attn_fn(i, attn, x, inv_freq):
            w = cfg.window(i)
            q, k, v = attn.qkv(x, positions, inv_freq)
            k = k.astype(cache.k[i].dtype)
            v = v.astype(cache.v[i].dtype)
            kw, vw = k[:, :, :p], v[:, :, :p]
            if use_kernel and not (w and w < cache.size):
                # the kernel reads the filled slots, sees the step's new tokens as its own keys and
                # writes them into the cache itself: no cache-update kernels for this layer
                hi = jnp.broadcast_to(cache.index, (b,))
                kw_ = dict(own=(k, v, p), write=True, interpret=attention == "interpret")
                if self._hint("kv_cache") is not None:  # on a mesh: the kernel per device, on its shards
                    out, kc, vc = decode_attention.sharded_decode_attention(
                        q,
                        cache.k[i],
                        cache.v[i],
                        cache.starts,
                        hi,
                        attn.scale,
                        cache_sharding=self._hint("kv_cache"),
                        **kw_,
                    )
                else:
                    out, kc, vc = decode_attention.decode_attention(
                        q, cache.k[i], cache.v[i], cache.starts, hi, attn.scale, **kw_
                    )
                ks.append(kc)
                vs.append(vc)
                return out
            kc = _write(cache.k[i], kw, cache.index) if p else cache.k[i]
            vc = _write(cache.v[i], vw, cache.index) if p else cache.v[i]
            ks.append(kc)
            vs.append(vc)
            if w not in masks:  # XLA's attention only: the kernel masks by slot range itself
                masks[w] = (
                    with_window(ctx_mask, ctx_pos, w),
                    with_window(new_mask, pos_w, w) if new_mask is not None else None,
                )
            cm, nm = masks[w]
            if mode == "prefill":
                return attend(q, kw, vw, nm, attn.scale, softcap=attn.softcap)
            return attend(q, kc, vc, cm, attn.scale, own=(k, v, own_ok) if kc_ else None, softcap=attn.softcap)

        h = self._trunk(self._embed(input_ids, positions), attn_fn, cache.size)
        if mode == "candidates":
            h = h[:, p:]
        out = None if outputs == "none" else self._head(h[:, -1:] if outputs == "last" else h)
        new_cache = cache.replace(k=tuple(ks), v=tuple(vs), index=cache.index + p)
        return out, new_cache
