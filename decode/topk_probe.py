"""Time lax.top_k over a vocabulary-sized row (the VAS candidate pick) on the current device.

    python decode/topk_probe.py
"""

import time

import jax
import jax.numpy as jnp

for b in (1, 16):
    x = jax.random.normal(jax.random.key(0), (b, 32768), jnp.float32)
    for k in (8, 16, 20, 32):
        f = jax.jit(lambda x, k=k: jax.lax.top_k(x, k))
        jax.block_until_ready(f(x))
        n = 200
        t = time.perf_counter()
        for _ in range(n):
            r = f(x)
        jax.block_until_ready(r)
        us = (time.perf_counter() - t) / n * 1e6
        sort = "sort" in f.lower(x).compile().as_text()
        print(f"top_k batch {b:>2} k {k:>2}: {us:7.1f} us per call (dispatch included), sort in HLO: {sort}")
