"""What the VAS candidate pick (top-k of a vocabulary-sized row) costs inside a compiled loop.

    python -m benchmarks.topk_probe            # on the machine to measure

Times `lax.top_k` and the other exact picks of `vas_jax.sampling.top_k` (top-k within chunks of the
row, then of those candidates; or rounds of at most 16) per call inside a `fori_loop`, so dispatch
is not counted. On a GPU, k = 20 lowers to a sort of the whole row while k <= 16 has a kernel of its
own. All give the same values and indices (ties to the lower index); checked before timing.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from vas_jax.sampling import top_k


def per_call_us(fn, x, n: int = 200) -> float:
    def loop(x):
        def body(i, acc):
            v, _ = fn(x + i.astype(x.dtype) * 1e-3)
            return acc + v[:, 0]

        return jax.lax.fori_loop(0, n, body, jnp.zeros(x.shape[0], x.dtype))

    f = jax.jit(loop)
    jax.block_until_ready(f(x))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(f(x))
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def main():
    print(f"device: {jax.devices()[0].device_kind}")
    rng = np.random.RandomState(0)
    variants = {
        "chunked 512": ("chunked", 512),
        "chunked 1024": ("chunked", 1024),
        "chunked 4096": ("chunked", 4096),
        "rounds": ("rounds", 0),
    }
    for b in (1, 16):
        x = jnp.asarray(rng.randn(b, 32768).astype(np.float32))
        tied = jnp.asarray(rng.randint(0, 50, size=(b, 32768)).astype(np.float32))
        for k in (16, 20):
            for arr in (x, tied):
                ref = jax.lax.top_k(arr, k)
                for method, chunk in variants.values():
                    got = top_k(arr, k, method, chunk)
                    assert np.array_equal(np.asarray(ref[0]), np.asarray(got[0]))
                    assert np.array_equal(np.asarray(ref[1]), np.asarray(got[1]))
            one = per_call_us(lambda a, k=k: jax.lax.top_k(a, k), x)
            rest = "  ".join(
                f"{name} {per_call_us(lambda a, k=k, m=m, c=c: top_k(a, k, m, c), x):7.1f}"
                for name, (m, c) in variants.items()
            )
            print(f"batch {b:>2} k {k:>2}: lax.top_k {one:7.1f}  {rest}  (us per call)", flush=True)


if __name__ == "__main__":
    main()
