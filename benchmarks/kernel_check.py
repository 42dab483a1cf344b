"""The fused decode-attention kernel on this machine's GPU against XLA's attention.

    python -m benchmarks.kernel_check        # on a GPU machine, repository root

Random inputs at decoding's shapes (a base step: one query per row; a value step: the pending token
and 20 candidates with their own keys), float32 and bfloat16, rows starting at different slots; then
greedy decoding of a small random model with each implementation. Prints the largest differences and
exits non-zero if the kernel disagrees (so a timing run after it is not read for a broken kernel).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import vas_jax
from vas_jax import ModelConfig, Transformer
from vas_jax.decode_attention import decode_attention
from vas_jax.model import attend

# (batch, tokens, heads, kv heads, head width, slots): a base step; a value step (pending token and 20
# candidates) with two head layouts; a long cache on a short grid (its slots split into ranges)
SHAPES = [(1, 1, 32, 8, 64, 384), (16, 21, 32, 8, 64, 384), (16, 21, 16, 4, 64, 384), (4, 3, 8, 8, 128, 1024)]


def attention_cases() -> bool:
    ok = True
    rng = np.random.RandomState(0)
    for b, t, nh, kvh, d, size in SHAPES:
        for dtype, tol in ((jnp.float32, 2e-3), (jnp.bfloat16, 3e-2)):

            def arr(*shape, dtype=dtype):
                return jnp.asarray(rng.randn(*shape), dtype)

            q, kc, vc, ks, vs = (
                arr(b, t, nh, d),
                arr(b, kvh, size, d),
                arr(b, kvh, size, d),
                arr(b, kvh, t, d),
                arr(b, kvh, t, d),
            )
            lo = jnp.asarray(rng.randint(0, size // 2, size=b), jnp.int32)
            hi = jnp.full((b,), size - 7, jnp.int32)
            slot = jnp.arange(size)
            mask = jnp.broadcast_to(((slot >= lo[:, None]) & (slot < hi[:, None]))[:, None], (b, t, size))
            own = (ks, vs, 1) if t > 1 else None
            own_ref = (ks, vs, jnp.arange(t) >= 1) if t > 1 else None
            want = jax.jit(lambda *a, own_ref=own_ref: attend(*a, 0.125, own=own_ref))(q, kc, vc, mask)
            got = jax.jit(lambda *a, own=own: decode_attention(*a, 0.125, own=own))(q, kc, vc, lo, hi)
            # write=True (how decoding calls it): the step's first token is new; the kernel attends to it
            # and stores it at the write index (size - 8: the reference reads up to it), the rest left as it was
            index = size - 8
            wk, wv = (jax.lax.dynamic_update_slice(c, x[:, :, :1], (0, 0, index, 0)) for c, x in ((kc, ks), (vc, vs)))
            want_w = jax.jit(lambda *a, own_ref=own_ref: attend(*a, 0.125, own=own_ref))(q, wk, wv, mask)
            got_w, kc_w, vc_w = jax.jit(
                lambda *a, ks=ks, vs=vs: decode_attention(*a, 0.125, own=(ks, vs, 1), write=True)
            )(q, kc.copy(), vc.copy(), lo, jnp.full((b,), index, jnp.int32))
            err = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want.astype(jnp.float32))))
            err_w = float(jnp.max(jnp.abs(got_w.astype(jnp.float32) - want_w.astype(jnp.float32))))
            cache_ok = bool(jnp.all(kc_w == wk) & jnp.all(vc_w == wv))
            good = err <= tol and err_w <= tol and cache_ok
            ok &= good
            print(
                f"attention b={b:>2} t={t:>2} heads {nh}/{kvh} d={d} slots {size} {jnp.dtype(dtype).name:>8}: "
                f"max |diff| {err:.2e}, writing the new token {err_w:.2e} (cache {'exact' if cache_ok else 'WRONG'}) "
                f"{'ok' if good else 'FAIL'}",
                flush=True,
            )
    return ok


IMPLS = ("xla", "pallas")


def decoding() -> bool:
    cfg = ModelConfig(
        model_type="llama",
        vocab_size=4096,
        hidden_size=512,
        intermediate_size=1024,
        num_layers=4,
        num_heads=8,
        num_kv_heads=2,
        head_dim=64,
        max_position_embeddings=1024,
        norm_eps=1e-5,
        head="lm",
    )
    base = Transformer(cfg, rngs=nnx.Rngs(0))
    value = Transformer(cfg.replace(head="score", num_labels=1, num_layers=2), rngs=nnx.Rngs(1))
    rng = np.random.RandomState(1)
    prompts = [rng.randint(4, 4096, size=n).tolist() for n in (40, 7, 100, 64)]
    kw = dict(key=jax.random.key(0), max_new_tokens=48, temperature=0.0)
    runs = {
        impl: (
            vas_jax.generate(base, prompts, attention=impl, **kw),
            vas_jax.vas_decode(base, value, prompts, beta=2.0, attention=impl, **kw),
        )
        for impl in IMPLS
    }
    ok = True
    for name, want, got in zip(("generate", "vas_decode"), runs[IMPLS[0]], runs[IMPLS[1]]):
        same = np.mean([a == b for a, b in zip(np.asarray(want.tokens).ravel(), np.asarray(got.tokens).ravel())])
        lp = float(np.max(np.abs(np.asarray(want.logprobs) - np.asarray(got.logprobs))))
        good = same >= 0.95  # greedy float32: a near-tie may still flip a token and what follows it
        ok &= good
        print(
            f"greedy {name}: {same:.1%} of tokens equal, max |logprob diff| {lp:.2e} {'ok' if good else 'FAIL'}",
            flush=True,
        )
    return ok


if __name__ == "__main__":
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    if jax.default_backend() != "gpu":
        sys.exit("kernel_check needs a GPU (the CPU tests run the kernel through the Pallas interpreter)")
    with jax.default_matmul_precision("highest"):  # XLA's float32 products as float32, like the kernel's
        sys.exit(0 if attention_cases() & decoding() else 1)
