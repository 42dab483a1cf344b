"""Decode attention as one fused GPU kernel (Pallas, Triton backend), flash-decoding style.

A decode step's queries (one token per row for the base; the pending token and the k candidates
for a value model) all read the same contiguous run of cache slots, `[lo[b], hi[b])` for row b.
XLA runs that attention as several kernels per layer (scores, mask, max, exp-sum, value product);
this kernel does scores, mask, online softmax and the value product in one, and reads only the
filled slots, not the whole cache. The slots are split into `n_split` ranges so a small batch
still fills the GPU; the ranges' partial results (unnormalised output, running max and sum) are
merged by a short XLA epilogue, which also adds each candidate's attention to its own key.

`interpret=True` runs the same kernel through Pallas's interpreter on any backend (the CPU tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from einops import rearrange
from jax.experimental import pallas as pl

_NEG = -1e30  # finite: exp(_NEG - m) is 0 and a range with no valid slot adds nothing

BLOCK_K = 64  # cache slots per inner step; the cache size is padded to a multiple of it (`padded_size`)


def padded_size(size: int) -> int:
    """Cache slots to allocate for a kernel-read cache: a multiple of BLOCK_K."""
    return -(-size // BLOCK_K) * BLOCK_K


def supported(head_dim: int, size: int, interpret: bool = False) -> bool:
    """Whether the kernel can read a cache of `size` slots with `head_dim`-wide heads (else: XLA).
    On a GPU a head must be a power of two of at least 16 wide (Triton's matrix products); the
    interpreter takes any."""
    pow2 = head_dim >= 16 and head_dim & (head_dim - 1) == 0
    return size % BLOCK_K == 0 and (pow2 or interpret)


def _splits(batch: int, kv_heads: int, size: int) -> int:
    """Slot ranges per (row, kv head): enough programs for a GPU's ~100+ SMs, each range whole blocks."""
    blocks = size // BLOCK_K
    want = max(1, -(-128 // (batch * kv_heads)))
    n = min(blocks, want)
    while blocks % n:
        n -= 1
    return n


def _dot(a, b, trans_b=False):
    """a @ b (a @ b.T with trans_b), accumulated in float32."""
    dims = (((1,), (1 if trans_b else 0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _kernel(lo_ref, hi_ref, q_ref, k_ref, v_ref, o_ref, m_ref, l_ref, *, scale, split_len):
    """One (row, kv head, slot range): q_ref [R, D]; k_ref, v_ref [S, D]; outputs for this range."""
    s_id = pl.program_id(2)
    lo = jnp.maximum(lo_ref[...], s_id * split_len)
    hi = jnp.minimum(hi_ref[...], (s_id + 1) * split_len)
    q = q_ref[...]
    r, d = q.shape
    first = lo // BLOCK_K
    last = jnp.where(hi > lo, (hi + BLOCK_K - 1) // BLOCK_K, first)  # blocks meeting [lo, hi)

    def body(j, carry):
        o, m, l = carry
        start = pl.multiple_of(j * BLOCK_K, BLOCK_K)
        k = k_ref[pl.ds(start, BLOCK_K), :]
        v = v_ref[pl.ds(start, BLOCK_K), :]
        s = _dot(q, k, trans_b=True) * scale  # [R, BLOCK_K] float32
        slot = start + jnp.arange(BLOCK_K, dtype=jnp.int32)
        s = jnp.where(((slot >= lo) & (slot < hi))[None, :], s, _NEG)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        p = jnp.exp(s - m_new[:, None])
        corr = jnp.exp(m - m_new)
        l = l * corr + jnp.sum(p, axis=1)
        o = o * corr[:, None] + _dot(p.astype(v.dtype), v)
        return o, m_new, l

    init = (jnp.zeros((r, d), jnp.float32), jnp.full((r,), _NEG, jnp.float32), jnp.zeros((r,), jnp.float32))
    o, m, l = jax.lax.fori_loop(first, last, body, init)
    o_ref[...] = o
    m_ref[...] = m
    l_ref[...] = l


def _rows(n: int) -> int:
    """Query rows per program: a power of two, at least 16 (the GPU's smallest matrix product)."""
    return max(16, 1 << (n - 1).bit_length())


@functools.partial(jax.named_call, name="decode_attention")
def decode_attention(q, k_cache, v_cache, lo, hi, scale: float, own=None, *, interpret: bool = False):
    """Attention of decode-step queries over the cache slots `[lo[b], hi[b])`.

    q: [B, T, NH, D]; k_cache, v_cache: [B, KVH, S, D] (S a multiple of BLOCK_K); lo, hi: int32[B].
    own: (k, v [B, KVH, T, D], ok bool[T]) -- query t also attends to its own key/value where ok[t]
    (the VAS candidates), normalised jointly with the cache. Returns [B, T, NH * D] in v's dtype.
    """
    b, t, nh, d = q.shape
    kvh, size = k_cache.shape[1], k_cache.shape[2]
    g = nh // kvh
    qg = rearrange(q, "b t (k g) d -> b k (g t) d", k=kvh).astype(k_cache.dtype)
    r = _rows(g * t)
    if r != g * t:
        qg = jnp.pad(qg, ((0, 0), (0, 0), (0, r - g * t), (0, 0)))
    n_split = _splits(b, kvh, size)
    split_len = size // n_split
    kernel = functools.partial(_kernel, scale=float(scale), split_len=split_len)
    params = {}
    if not interpret:
        from jax.experimental.pallas import triton as plgpu

        params = dict(compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2))
    row = pl.BlockSpec((None,), lambda i, h, s: (i,))
    o, m, l = pl.pallas_call(
        kernel,
        grid=(b, kvh, n_split),
        in_specs=[
            row,
            row,
            pl.BlockSpec((None, None, r, d), lambda i, h, s: (i, h, 0, 0)),
            pl.BlockSpec((None, None, size, d), lambda i, h, s: (i, h, 0, 0)),
            pl.BlockSpec((None, None, size, d), lambda i, h, s: (i, h, 0, 0)),
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, r, d), lambda i, h, s: (i, h, s, 0, 0)),
            pl.BlockSpec((None, None, None, r), lambda i, h, s: (i, h, s, 0)),
            pl.BlockSpec((None, None, None, r), lambda i, h, s: (i, h, s, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((b, kvh, n_split, r, d), jnp.float32),
            jax.ShapeDtypeStruct((b, kvh, n_split, r), jnp.float32),
            jax.ShapeDtypeStruct((b, kvh, n_split, r), jnp.float32),
        ],
        interpret=interpret,
        name="vas_decode_attention",
        **params,
    )(jnp.asarray(lo, jnp.int32), jnp.asarray(hi, jnp.int32), qg, k_cache, v_cache)
    o, m, l = o[:, :, :, : g * t], m[:, :, :, : g * t], l[:, :, :, : g * t]
    # merge the slot ranges (and each candidate's own key): one short elementwise epilogue
    mx = jnp.max(m, axis=2)  # [B, KVH, G*T]
    if own is not None:
        ks, vs, ok = own
        qo = rearrange(q, "b t (k g) d -> b k g t d", k=kvh).astype(jnp.float32)
        s_own = jnp.einsum("bkgtd,bktd->bkgt", qo, ks.astype(jnp.float32)) * scale
        s_own = rearrange(jnp.where(ok, s_own, _NEG), "b k g t -> b k (g t)")
        mx = jnp.maximum(mx, s_own)
    w = jnp.exp(m - mx[:, :, None])  # [B, KVH, n_split, G*T]
    num = jnp.sum(o * w[..., None], axis=2)
    den = jnp.sum(l * w, axis=2)
    if own is not None:
        e_own = jnp.exp(s_own - mx)
        v_own = jnp.broadcast_to(vs[:, :, None].astype(jnp.float32), (b, kvh, g, t, d))
        num = num + e_own[..., None] * rearrange(v_own, "b k g t d -> b k (g t) d")
        den = den + e_own
    out = (num / den[..., None]).astype(v_cache.dtype)
    return rearrange(out, "b k (g t) d -> b t (k g d)", g=g)
