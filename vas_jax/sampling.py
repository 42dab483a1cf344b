"""Turning next-token logits into tokens.

Order, the same as Hugging Face's `generate` (and tested against a slow reference):
  1. guidance (VAS only): β·centred values added to the base's top-k logits;
  2. temperature: logits / T (T = 0 means greedy: argmax, nothing else applies);
  3. top-k filter (plain sampling's `top_k`, 0 = off): keep the k largest;
  4. top-p filter (nucleus, 1.0 = off): keep the smallest set of largest tokens whose
     probability reaches p (a token is kept while the mass before it is < p);
  5. sample from the softmax of what is left.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """Static part of a sampler (hashable: a jit static argument). Scalars are traced separately."""

    greedy: bool = False
    top_k: int = 0  # filter; 0 = off
    use_top_p: bool = False
    one_pass: bool = False  # `sample_scored`: one fused pass over the vocabulary (see `one_pass_pays`)


def eos_tuple(eos_token_id) -> tuple:
    """An end token, a list of them, or None -> a tuple of ids (a static, hashable spec field)."""
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, (int, np.integer)):
        return (int(eos_token_id),)
    return tuple(int(e) for e in eos_token_id)


def one_pass_pays() -> bool:
    """Whether `sample_scored`'s fused vocabulary pass is the faster here: on a GPU it launches far
    fewer kernels than the separate passes; on a CPU it is slower than them (measured by
    benchmarks/vocab_pass_probe.py; the numbers are in BENCHMARKS.md)."""
    return jax.default_backend() == "gpu"


def top_k_filter(logits, k: int):
    """Keep the k largest logits of each row ([B, V]); others -> -inf."""
    kth = jax.lax.top_k(logits, k)[0][:, -1:]
    return jnp.where(logits >= kth, logits, NEG_INF)


def top_p_filter(logits, top_p):
    """Nucleus filter on [B, V] logits (top_p traced, in (0, 1])."""
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < top_p
    keep = keep.at[:, 0].set(True)
    # the smallest kept logit is the threshold
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= threshold, logits, NEG_INF)


def process_logits(logits, spec: SamplerSpec, temperature, top_p):
    """Steps 2-4 above on float32 [B, V] logits; returns the logits sampled from."""
    x = logits / jnp.maximum(temperature, 1e-6)
    if spec.top_k:
        x = top_k_filter(x, spec.top_k)
    if spec.use_top_p:
        x = top_p_filter(x, top_p)
    return x


def sample(key, logits, spec: SamplerSpec, temperature, top_p):
    """logits: float32[B, V] -> (tokens int32[B], log-prob of each token under the sampled distribution)."""
    if spec.greedy:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return tok, jnp.zeros(tok.shape, jnp.float32)
    x = process_logits(logits, spec, temperature, top_p)
    tok = jax.random.categorical(key, x, axis=-1).astype(jnp.int32)
    lp = jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), tok[:, None], axis=-1)[:, 0]
    return tok, lp


def _lse_combine(ma, sa, mb, sb):
    """Merge two (max, sum of exp(x - max)) summaries of disjoint sets (max -inf: an empty set)."""
    m = jnp.maximum(ma, mb)
    ref = jnp.where(m == NEG_INF, 0.0, m)
    return m, sa * jnp.exp(ma - ref) + sb * jnp.exp(mb - ref)


def sample_scored(key, logits, base_logits, spec: SamplerSpec, temperature, top_p):
    """`sample` plus each token's log-prob under `base_logits` [B, V] (the unguided model).

    Returns (tokens, log-prob under the sampled distribution, log-prob under the base): the same
    tokens and values as `sample` and a log_softmax of `base_logits`. With plain sampling (no top-k or
    top-p filter) and `spec.one_pass`, all three come from ONE pass over the vocabulary: a variadic
    reduction carrying both log-normalisers (running max and sum) and the Gumbel-max pick (the same
    noise as `jax.random.categorical`, so the same tokens). Log-probs agree with the separate passes
    to float32 rounding of a 32k-term sum (~1e-5 relative).
    """
    if spec.greedy or spec.top_k or spec.use_top_p or not spec.one_pass:
        tok, lp = sample(key, logits, spec, temperature, top_p)
        base_lp = jnp.take_along_axis(jax.nn.log_softmax(base_logits, axis=-1), tok[:, None], axis=1)[:, 0]
        return tok, lp, base_lp
    x = process_logits(logits, spec, temperature, top_p)
    z = jax.random.gumbel(key, x.shape, x.dtype) + x  # what jax.random.categorical takes the argmax of
    idx = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1)
    one = jnp.ones_like(x)

    def combine(a, b):
        xm_a, xs_a, bm_a, bs_a, z_a, i_a, xat_a, bat_a = a
        xm_b, xs_b, bm_b, bs_b, z_b, i_b, xat_b, bat_b = b
        xm, xs = _lse_combine(xm_a, xs_a, xm_b, xs_b)
        bm, bs = _lse_combine(bm_a, bs_a, bm_b, bs_b)
        nan_a, nan_b = jnp.isnan(z_a), jnp.isnan(z_b)  # jnp.argmax's order: the first NaN, else the first max
        take_a = ((z_a > z_b) | ((z_a == z_b) | (nan_a & nan_b)) & (i_a < i_b)) | (nan_a & ~nan_b)
        pick = functools.partial(jnp.where, take_a)
        return xm, xs, bm, bs, pick(z_a, z_b), pick(i_a, i_b), pick(xat_a, xat_b), pick(bat_a, bat_b)

    f0, neg = jnp.float32(0), jnp.float32(NEG_INF)
    xm, xs, bm, bs, _, tok, x_at, b_at = jax.lax.reduce(
        (x, one, base_logits, one, z, idx, x, base_logits),
        (neg, f0, neg, f0, neg, jnp.int32(jnp.iinfo(jnp.int32).max), f0, f0),
        combine,
        (1,),
    )
    return tok, x_at - (xm + jnp.log(xs)), b_at - (bm + jnp.log(bs))


TOPK_METHODS = ("lax", "chunked", "rounds")


def top_k(x, k: int, method: str = "lax", chunk: int = 1024):
    """(values, indices) of the k largest entries of each row of x [B, V], ties to the lower index.

    The methods give the same result; on GPUs `lax.top_k` with k > 16 sorts the whole row (k <= 16
    has a kernel of its own), which the others avoid:
    - "lax": `lax.top_k` of the row;
    - "chunked": the top k of each chunk of `chunk` entries, then the top k of those candidates (every
      row's top k lies among its chunks' top k);
    - "rounds": `lax.top_k` of at most 16 at a time, each round masking what the earlier ones took
      (exact while a row has k entries above -inf, as logits do).
    """
    b, v = x.shape
    if method == "rounds" and k > 16:
        rows = jnp.arange(b)[:, None]
        vals, idx = [], []
        while k > 0:
            got = jax.lax.top_k(x, min(k, 16))
            vals.append(got[0])
            idx.append(got[1])
            k -= got[0].shape[1]
            if k:
                x = x.at[rows, got[1]].set(-jnp.inf)
        return jnp.concatenate(vals, axis=1), jnp.concatenate(idx, axis=1)
    if method != "chunked" or k > chunk or v <= chunk:
        return jax.lax.top_k(x, k)
    n = -(-v // chunk)
    if n * chunk != v:  # pad with -inf at the end: never picked ahead of a real entry
        x = jnp.pad(x, ((0, 0), (0, n * chunk - v)), constant_values=-jnp.inf)
    vals, idx = jax.lax.top_k(x.reshape(b, n, chunk), k)  # [B, n, k]
    idx = idx + (jnp.arange(n, dtype=idx.dtype) * chunk)[None, :, None]
    top, pos = jax.lax.top_k(vals.reshape(b, n * k), k)  # candidates in index order: ties keep the lower
    return top, jnp.take_along_axis(idx.reshape(b, n * k), pos, axis=1)
