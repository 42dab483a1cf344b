"""The KV cache: an explicit pytree passed into and out of jitted code.

Layout (the jax-llm-examples pattern): every row of the batch shares one write
index; rows are left-padded, so row `b` holds valid keys in slots
`[starts[b], index)`. Writing T new tokens is one `dynamic_update_slice` per
layer at `index`, and a slot's position is `slot - starts[b]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    k: tuple  # per layer: [B, KVH, S, D] (head-major: attention reads it without a transpose)
    v: tuple  # per layer: [B, KVH, S, D]
    index: jax.Array  # int32[]: next slot to write, shared by all rows
    starts: jax.Array  # int32[B]: first valid slot of each row

    @property
    def size(self) -> int:
        return self.k[0].shape[2]

    @property
    def batch(self) -> int:
        return self.k[0].shape[0]

    def slot_positions(self) -> jax.Array:
        """int32[B, S]: the position of each slot's token (negative before the row starts)."""
        return jnp.arange(self.size, dtype=jnp.int32)[None, :] - self.starts[:, None]

    def valid_slots(self) -> jax.Array:
        """bool[B, S]: slots that hold a real token of their row."""
        s = jnp.arange(self.size, dtype=jnp.int32)[None, :]
        return (s >= self.starts[:, None]) & (s < self.index)

    def next_positions(self) -> jax.Array:
        """int32[B]: the position of the next token each row will write."""
        return self.index - self.starts


def init_cache(cfg, batch: int, size: int, dtype, starts=None) -> KVCache:
    """An empty cache for `batch` rows of `size` slots; `starts` from left padding."""
    shape = (batch, cfg.num_kv_heads, size, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    if starts is None:
        starts = jnp.zeros((batch,), jnp.int32)
    return KVCache(
        k=zeros,
        v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        index=jnp.zeros((), jnp.int32),
        starts=jnp.asarray(starts, jnp.int32),
    )


def insert_candidate(cache: KVCache, new_kv, choice: jax.Array) -> KVCache:
    """Write the chosen candidate's keys/values (from a `candidates` forward) at `index`.

    new_kv: (k, v), each a per-layer tuple of [B, KVH, K, D]; choice: int32[B] in [0, K).
    No second forward pass is needed: the candidate pass already computed them.
    """
    idx = choice[:, None, None, None]

    def pick(x):
        return jnp.take_along_axis(x, idx, axis=2)  # [B, KVH, 1, D]

    def write(buf, x):
        return jax.lax.dynamic_update_slice(buf, pick(x).astype(buf.dtype), (0, 0, cache.index, 0))

    k_new, v_new = new_kv
    return cache.replace(
        k=tuple(write(b, x) for b, x in zip(cache.k, k_new)),
        v=tuple(write(b, x) for b, x in zip(cache.v, v_new)),
        index=cache.index + 1,
    )
