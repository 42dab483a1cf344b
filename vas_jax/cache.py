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

    def slot_positions(self) -> jax.Array:
        """int32[B, S]: the position of each slot's token (negative before the row starts)."""
        return jnp.arange(self.size, dtype=jnp.int32)[None, :] - self.starts[:, None]


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
