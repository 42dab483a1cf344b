"""Decode attention as one fused GPU kernel (Pallas, Triton backend), flash-decoding style.

A decode step's queries (one token per row for the base; the pending token and the k candidates
for a value model) all read the same contiguous run of cache slots, `[lo[b], hi[b])` for row b.
XLA runs that attention as several kernels per layer (scores, mask, max, exp-sum, value product);
this kernel does scores, mask, online softmax and the value product in one, and reads only the
filled slots, not the whole cache. The step's own keys -- its new token, and a VAS candidate's own
key (never in the cache) -- are one more small block of the same online softmax, and the kernel
stores the new token in the cache itself (`write=True`). When a small batch would leave the GPU
idle, the slots are split into ranges whose partial results (unnormalised output, running max and
sum) a short XLA epilogue merges.

`interpret=True` runs the same kernel through Pallas's interpreter on any backend (the CPU tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from einops import rearrange
from jax.experimental import pallas as pl

from .errors import VasError

ATTENTION_IMPLS = ("xla", "pallas", "interpret")  # decode attention: XLA's, or this kernel (GPU / interpreted)

_NEG = -1e30  # finite: exp(_NEG - m) is 0 and a range with no valid slot adds nothing

BLOCK_K = 64  # cache slots per inner step; the cache size is padded to a multiple of it (`padded_size`)


def check_attention(attention: str) -> None:
    """A VasError unless `attention` names an implementation that can run here."""
    if attention not in ATTENTION_IMPLS:
        raise VasError(f"attention must be one of {', '.join(ATTENTION_IMPLS)}, got {attention!r}")
    if attention == "pallas" and jax.default_backend() != "gpu":
        raise VasError(
            f"attention='pallas' is a GPU kernel and this backend is {jax.default_backend()}; use "
            "attention='xla' (or 'interpret' to check the kernel, slowly)"
        )


def padded_size(size: int) -> int:
    """Cache slots to allocate for a kernel-read cache: a multiple of BLOCK_K."""
    return -(-size // BLOCK_K) * BLOCK_K


def supported(head_dim: int, size: int, interpret: bool = False) -> bool:
    """Whether the kernel can read a cache of `size` slots with `head_dim`-wide heads (else: XLA).
    On a GPU a head must be a power of two of at least 16 wide (Triton's matrix products); the
    interpreter takes any."""
    pow2 = head_dim >= 16 and head_dim & (head_dim - 1) == 0
    return size % BLOCK_K == 0 and (pow2 or interpret)


MAX_BLOCKS = 8  # blocks one program reads before the slots are split over several (flash-decoding)


def block_splits(batch: int, kv_heads: int, size: int) -> int:
    """Slot ranges per (row, kv head). One range (no merge epilogue) unless a program would read more
    than MAX_BLOCKS blocks while the grid leaves a GPU's ~100+ SMs idle. Ranges are whole blocks,
    all of one length but the last."""
    blocks = size // BLOCK_K
    programs = batch * kv_heads
    if blocks <= MAX_BLOCKS or programs >= 128:
        return 1
    n = min(-(-blocks // MAX_BLOCKS) * 4, -(-128 // programs), blocks)  # up to 4 waves of short ranges
    return -(-blocks // -(-blocks // n))  # as many ranges as whole-block ranges of that length need


MIN_DOT = 16  # the smallest side of a GPU matrix product (Triton's tl.dot)


def _dot(a, b, trans_b=False):
    """a @ b (a @ b.T with trans_b), accumulated in float32; float32 inputs multiplied as float32
    (not TF32), bfloat16 as bfloat16. With fewer than MIN_DOT rows in `a` (a decode step's few query
    heads per kv head), a broadcast product and a sum: no matrix unit, so no rows padded up to 16."""
    if a.shape[0] < MIN_DOT:
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        if trans_b:  # [R, 1, D] * [1, N, D], summed over D
            return jnp.sum(a[:, None, :] * b[None, :, :], axis=2)
        return jnp.sum(a[:, :, None] * b[None, :, :], axis=1)  # [R, N, 1] * [1, N, D], summed over N
    dims = (((1,), (1 if trans_b else 0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def _online(carry, s, ok, v):
    """One step of the online softmax: scores s [R, N] (float32), ok bool[R, N], values v [N, D]."""
    o, m, total = carry
    s = jnp.where(ok, s, _NEG)
    m_new = jnp.maximum(m, jnp.max(s, axis=1))
    p = jnp.where(ok, jnp.exp(s - m_new[:, None]), 0.0)  # 0, not exp(0), where a whole row is masked
    corr = jnp.exp(m - m_new)
    return o * corr[:, None] + _dot(p.astype(v.dtype), v), m_new, total * corr + jnp.sum(p, axis=1)


def _kernel(lo_ref, hi_ref, q_ref, k_ref, v_ref, *outs, scale, split_len, t, r, tp, n_own_from, n_new, split):
    """One (row, kv head, slot range). q_ref [R (+ 2 Tp), D]: the queries (head g, query i at row
    g * t + i), then with own keys (tp > 0) the Tp keys and the Tp values of the step's tokens: token
    j < n_new is new (seen by queries i >= j, and written to the cache at slot hi + j), token
    j >= n_own_from is seen by query j alone; k_ref, v_ref [S, D], the cache. Writes the normalised
    output [R, D] or, with several ranges (`split`), this range's unnormalised output, running max
    and sum; then, with new tokens, the cache (aliased: only their slots are stored)."""
    if n_new:
        *outs, k_out, v_out = outs
    s_id = pl.program_id(2)
    lo = jnp.maximum(lo_ref[...], s_id * split_len)
    hi = jnp.minimum(hi_ref[...], (s_id + 1) * split_len)
    q = q_ref[pl.ds(0, r), :] if tp else q_ref[...]
    d = q.shape[1]
    carry = (jnp.zeros((r, d), jnp.float32), jnp.full((r,), _NEG, jnp.float32), jnp.zeros((r,), jnp.float32))
    if n_own_from is not None:  # the step's own tokens: a [R, Tp] product masked to what each query sees
        ko = q_ref[pl.ds(r, tp), :]
        col = jnp.arange(tp, dtype=jnp.int32)[None, :]
        row_t = (jnp.arange(r, dtype=jnp.int32) % t)[:, None]
        ok = ((col < n_new) & (col <= row_t)) | ((col == row_t) & (col >= n_own_from))
        carry = _online(carry, _dot(q, ko, trans_b=True) * scale, ok & (s_id == 0), q_ref[pl.ds(r + tp, tp), :])
    if n_new:

        @pl.when(s_id == 0)
        def _():
            for j in range(n_new):  # the new tokens enter the cache here: no update kernel of their own
                k_out[pl.ds(hi_ref[...] + j, 1), :] = q_ref[pl.ds(r + j, 1), :]
                v_out[pl.ds(hi_ref[...] + j, 1), :] = q_ref[pl.ds(r + tp + j, 1), :]

    first = lo // BLOCK_K
    last = jnp.where(hi > lo, (hi + BLOCK_K - 1) // BLOCK_K, first)  # blocks meeting [lo, hi)

    def body(j, carry):
        start = pl.multiple_of(j * BLOCK_K, BLOCK_K)
        slot = start + jnp.arange(BLOCK_K, dtype=jnp.int32)
        s = _dot(q, k_ref[pl.ds(start, BLOCK_K), :], trans_b=True) * scale  # [R, BLOCK_K]
        return _online(carry, s, ((slot >= lo) & (slot < hi))[None, :], v_ref[pl.ds(start, BLOCK_K), :])

    o, m, total = jax.lax.fori_loop(first, last, body, carry)
    if split:
        o_ref, m_ref, total_ref = outs
        o_ref[...] = o
        m_ref[...] = m
        total_ref[...] = total
    else:
        outs[0][...] = (o / total[:, None]).astype(outs[0].dtype)


def _pow2(n: int, least: int = 1) -> int:
    """The power of two >= n and >= `least`."""
    return max(least, 1 << (n - 1).bit_length())


def _rows(n: int) -> int:
    """Query rows a program holds for n queries: a power of two (Triton's shapes); under MIN_DOT as
    they are (products by `_dot`'s broadcast path, and nothing to slice off the output), else at
    least MIN_DOT (matrix products)."""
    return _pow2(n) if n < MIN_DOT else _pow2(n, MIN_DOT)


@functools.partial(jax.named_call, name="decode_attention")
def decode_attention(
    q,
    k_cache,
    v_cache,
    lo,
    hi,
    scale: float,
    own=None,
    *,
    write: bool = False,
    interpret: bool = False,
    splits: int | None = None,
):
    """Attention of decode-step queries over the cache slots `[lo[b], hi[b])`.

    q: [B, T, NH, D]; k_cache, v_cache: [B, KVH, S, D] (S a multiple of BLOCK_K); lo, hi: int32[B].
    own: (k, v [B, KVH, T, D], n) -- the step's own keys and values: query t >= n also attends to its
    own (the VAS candidates after n pending tokens), normalised jointly with the cache. splits: slot
    ranges per (row, kv head), of whole blocks (default: `block_splits`). Returns [B, T, NH * D] in the
    cache's dtype.

    write=True: the first n tokens are new, not yet in the cache: each query t sees new tokens j <= t
    (causally) besides the cache, and the kernel stores them at slots hi + j (hi: the same for every
    row, the cache's write index). Returns (out, k_cache', v_cache'), the caches updated in place.
    """
    b, t, nh, d = q.shape
    kvh, size = k_cache.shape[1], k_cache.shape[2]
    g = nh // kvh
    dtype = k_cache.dtype
    qg = rearrange(q, "b t (k g) d -> b k (g t) d", k=kvh).astype(dtype)
    r = _rows(g * t)
    qg = jnp.pad(qg, ((0, 0), (0, 0), (0, r - g * t), (0, 0)))
    blocks = size // BLOCK_K
    n_split = splits or block_splits(b, kvh, size)
    per = -(-blocks // n_split)  # blocks per range
    n_split = -(-blocks // per)
    split = n_split > 1
    n_own_from, tp, n_new = None, 0, 0
    if own is not None:  # queries, own keys, own values: one array (one kernel makes it, not three)
        ks, vs, n_own_from = own
        n_new = n_own_from if write else 0
        tp = _pow2(t) if r < MIN_DOT else _pow2(t, MIN_DOT)  # own-key products by broadcast need no 16
        pad = ((0, 0), (0, 0), (0, tp - t), (0, 0))
        qg = jnp.concatenate([qg, jnp.pad(ks.astype(dtype), pad), jnp.pad(vs.astype(dtype), pad)], axis=2)
    row = pl.BlockSpec((None,), lambda i, h, s: (i,))
    whole = pl.BlockSpec((None, None, size, d), lambda i, h, s: (i, h, 0, 0))
    in_specs = [row, row, pl.BlockSpec((None, None, r + 2 * tp, d), lambda i, h, s: (i, h, 0, 0)), whole, whole]
    args = [jnp.asarray(lo, jnp.int32), jnp.asarray(hi, jnp.int32), qg, k_cache, v_cache]
    if split:
        out_specs = [
            pl.BlockSpec((None, None, None, r, d), lambda i, h, s: (i, h, s, 0, 0)),
            pl.BlockSpec((None, None, None, r), lambda i, h, s: (i, h, s, 0)),
            pl.BlockSpec((None, None, None, r), lambda i, h, s: (i, h, s, 0)),
        ]
        out_shape = [
            jax.ShapeDtypeStruct((b, kvh, n_split, r, d), jnp.float32),
            jax.ShapeDtypeStruct((b, kvh, n_split, r), jnp.float32),
            jax.ShapeDtypeStruct((b, kvh, n_split, r), jnp.float32),
        ]
    else:
        out_specs = [pl.BlockSpec((None, None, r, d), lambda i, h, s: (i, h, 0, 0))]
        out_shape = [jax.ShapeDtypeStruct((b, kvh, r, d), dtype)]
    aliases = {}
    if n_new:  # the caches come back out, written in place (inputs 3 and 4)
        aliases = {3: len(out_shape), 4: len(out_shape) + 1}
        out_specs += [whole, whole]
        out_shape += [jax.ShapeDtypeStruct(k_cache.shape, dtype), jax.ShapeDtypeStruct(v_cache.shape, dtype)]
    params = {}
    if not interpret:
        from jax.experimental.pallas import triton as plgpu

        # 8 warps once a program's [R, D] accumulator and [R, BLOCK_K] scores would crowd 4 warps' registers
        params = dict(compiler_params=plgpu.CompilerParams(num_warps=4 if r <= 64 else 8, num_stages=2))
    kernel = functools.partial(
        _kernel,
        scale=float(scale),
        split_len=per * BLOCK_K,
        t=t,
        r=r,
        tp=tp,
        n_own_from=n_own_from,
        n_new=n_new,
        split=split,
    )
    outs = pl.pallas_call(
        kernel,
        grid=(b, kvh, n_split),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        input_output_aliases=aliases,
        interpret=interpret,
        name="vas_decode_attention",
        **params,
    )(*args)
    caches = (k_cache, v_cache)
    if n_new:
        *outs, k_new, v_new = outs
        caches = (k_new, v_new)
    if split:  # merge the slot ranges: one short elementwise epilogue
        o, m, total = outs
        w = jnp.exp(m - jnp.max(m, axis=2, keepdims=True))  # [B, KVH, n_split, R]
        out = (jnp.sum(o * w[..., None], axis=2) / jnp.sum(total * w, axis=2)[..., None]).astype(dtype)
    else:
        out = outs[0]
    out = rearrange(out[:, :, : g * t], "b k (g t) d -> b t (k g d)", g=g)
    return (out, *caches) if write else out


def sharded_decode_attention(
    q, k_cache, v_cache, lo, hi, scale: float, own=None, *, cache_sharding, write: bool = False, interpret: bool = False
):
    """`decode_attention` on a mesh: each device runs the kernel on its rows and kv heads.

    cache_sharding: the caches' NamedSharding ([B, KVH, S, D]: rows over one axis, kv heads over
    another or replicated). Queries follow it (a kv head's query heads are contiguous), and so does
    the output [B, T, NH * D]; nothing is gathered.
    """
    from jax.sharding import PartitionSpec as P

    spec = tuple(cache_sharding.spec) + (None,) * (4 - len(cache_sharding.spec))
    rows, heads = spec[0], spec[1]
    cache = P(rows, heads, None, None)
    in_specs = [P(rows, None, heads, None), cache, cache, P(rows), P(rows)]
    args = [q, k_cache, v_cache, lo, hi]
    n_own = None
    if own is not None:
        ks, vs, n_own = own
        in_specs += [cache, cache]
        args += [ks, vs]

    def local(q, k, v, lo, hi, *own_kv):
        return decode_attention(
            q, k, v, lo, hi, scale, own=(*own_kv, n_own) if own_kv else None, write=write, interpret=interpret
        )

    out_specs = (P(rows, None, heads), cache, cache) if write else P(rows, None, heads)
    return jax.shard_map(
        local, mesh=cache_sharding.mesh, in_specs=tuple(in_specs), out_specs=out_specs, check_vma=False
    )(*args)
