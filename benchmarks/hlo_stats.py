"""Count the kernels one decode step launches: the compiled loop body of `generate` / `vas_decode`.

    python -m benchmarks.hlo_stats --preset gpu --dtype bfloat16          # on the machine that will run it

On a GPU a decode step at these sizes costs per kernel more than per FLOP, so the count of
fusions, library calls (matrix products) and copies in the innermost loop body is the number
to bring down. Counts are read from XLA's optimised HLO for the current backend.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

import vas_jax
from vas_jax import decode as dec
from vas_jax.config import DTYPE_NAMES, parse_dtype
from vas_jax.decode_attention import ATTENTION_IMPLS
from vas_jax.model import fuse_projections
from vas_jax.program_stats import copied_shapes, loop_body_ops


def compiled_decode_hlo(call) -> str:
    """The compiled (per-device) HLO text of the decode program of `call()`: a `generate` or
    `vas_decode` call with run=False, which returns its `DecodePlan` instead of decoding."""
    plan = call()
    if not isinstance(plan, dec.DecodePlan):
        raise TypeError("compiled_decode_hlo needs a call that returns a DecodePlan (pass run=False)")
    return plan.lower().compile().as_text()


def main(argv=None):
    from benchmarks.bench import PRESETS, make

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--attention", default="xla", choices=ATTENTION_IMPLS)
    a = ap.parse_args(argv)
    p = PRESETS[a.preset]
    dtype = parse_dtype(a.dtype)
    prompts = np.random.RandomState(0).randint(4, 100, size=(a.batch, p["prompt_len"])).astype(np.int32)
    print(f"backend {jax.default_backend()}, preset {a.preset}, batch {a.batch}, k {a.k}, attention {a.attention}")
    for fused in (False, True):
        base, value = make(p["base"], "lm", dtype), make(p["value"], "score", dtype)
        if fused:
            base, value = fuse_projections(base), fuse_projections(value)
        for name, vals in (("generate", []), (f"vas k={a.k}", [value])):
            if vals:
                hlo = compiled_decode_hlo(
                    lambda base=base, vals=vals: vas_jax.vas_decode(
                        base,
                        vals,
                        prompts,
                        beta=1.0,
                        top_k=a.k,
                        key=jax.random.key(0),
                        max_new_tokens=p["new_tokens"],
                        attention=a.attention,
                        run=False,
                    ),
                )
            else:
                hlo = compiled_decode_hlo(
                    lambda base=base: vas_jax.generate(
                        base,
                        prompts,
                        key=jax.random.key(0),
                        max_new_tokens=p["new_tokens"],
                        attention=a.attention,
                        run=False,
                    ),
                )
            ops = loop_body_ops(hlo)
            top = ", ".join(f"{k} {v}" for k, v in ops.most_common(6))
            print(
                f"{'fused' if fused else 'plain':<6} {name:<10} {sum(ops.values()):>5} ops per step ({top})", flush=True
            )
            big = [f"{n} x {s}" for s, n in copied_shapes(hlo).most_common() if "," in s]
            if big:
                print(f"{'':<17} copies: {'; '.join(big[:6])}", flush=True)


if __name__ == "__main__":
    main()
