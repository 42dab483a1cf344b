"""The per-step pass over the vocabulary: one fused variadic reduction vs the separate passes.

    python -m benchmarks.vocab_pass_probe      # on the machine to measure

`vas_jax.sampling.sample_scored` picks the token and both log-probs (policy and base) either in one
variadic reduction (`SamplerSpec(one_pass=True)`, the GPU default: `sampling.one_pass_pays`) or with
`jax.random.categorical` and two log-softmaxes. Times both per call inside a `fori_loop` (dispatch not
counted), at a 32k vocabulary, batch 1 and 16, after checking they pick the same tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.topk_probe import per_call_us
from vas_jax.sampling import SamplerSpec, sample_scored


def main():
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    rng = np.random.RandomState(0)
    key = jax.random.key(0)
    for b in (1, 16):
        x = jnp.asarray(rng.randn(b, 32768).astype(np.float32) * 3)
        base = jnp.asarray(rng.randn(b, 32768).astype(np.float32) * 3)
        times = {}
        for name, spec in (("separate", SamplerSpec()), ("one pass", SamplerSpec(one_pass=True))):

            def fn(a, spec=spec, base=base):
                tok, lp, base_lp = sample_scored(key, a, base, spec, 1.0, 1.0)
                return (lp + base_lp + tok.astype(a.dtype))[:, None], None

            times[name] = per_call_us(fn, x)
        same = np.array_equal(
            np.asarray(sample_scored(key, x, base, SamplerSpec(), 1.0, 1.0)[0]),
            np.asarray(sample_scored(key, x, base, SamplerSpec(one_pass=True), 1.0, 1.0)[0]),
        )
        print(
            f"batch {b:>2}: separate {times['separate']:8.1f} us, one pass {times['one pass']:8.1f} us per call; "
            f"separate / one pass = {times['separate'] / times['one pass']:.2f} (same tokens: {same})",
            flush=True,
        )


if __name__ == "__main__":
    main()
