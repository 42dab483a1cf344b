"""Decode throughput: `generate` vs `vas_decode`, measured in one run, next to what FLOPs allow.

    python -m benchmarks.bench                 # CPU preset (small models), writes nothing
    python -m benchmarks.bench --preset gpu --dtype bfloat16 --json out.json
    python -m benchmarks.bench --preset gpu --dtype bfloat16 --attention xla pallas   # + the fused kernel

For each batch size and each VAS setting (k candidates through a scalar value head, or one
vocabulary-wide value head) it prints tokens/s, the measured ratio to `generate`, and the
ratio that arithmetic alone would allow:
    base FLOPs per token / (base FLOPs per token + value FLOPs per step)
where a scalar head's value FLOPs per step are k candidate tokens through the value model
(the loop runs k + 1: the previous step's chosen token rides along in the same call, so the
ratio/FLOPs column is, if anything, strict).
Models have random weights (throughput does not depend on them) and no EOS, so every row
decodes max_new_tokens tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np
from flax import nnx

import vas_jax
from vas_jax import ModelConfig, Transformer
from vas_jax.config import DTYPE_NAMES, parse_dtype
from vas_jax.decode_attention import ATTENTION_IMPLS
from vas_jax.flops import flops_per_token
from vas_jax.model import fuse_projections
from vas_jax.sampling import TOPK_METHODS

# a Llama-3.2-1B-like base (~1.2B parameters) for the GPU presets
GPU_BASE = dict(
    vocab_size=32768, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64
)

PRESETS = {
    # base 6.8M parameters; value 1.3M (scalar head) / 1.8M (vocabulary-wide head): about a quarter
    "cpu": dict(
        base=dict(
            vocab_size=4096,
            hidden_size=256,
            intermediate_size=768,
            num_layers=6,
            num_heads=8,
            num_kv_heads=4,
            head_dim=32,
        ),
        value=dict(
            vocab_size=4096,
            hidden_size=128,
            intermediate_size=384,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            head_dim=32,
        ),
        prompt_len=32,
        new_tokens=64,
        batches=(1, 16),
        ks=(1, 5, 20),
        repeats=5,
    ),
    # base ~1.2B (Llama-3.2-1B-like); value ~0.2B (scalar) / ~0.25B (vocabulary-wide): about a quarter
    "gpu": dict(
        base=GPU_BASE,
        value=dict(
            vocab_size=32768,
            hidden_size=1024,
            intermediate_size=2816,
            num_layers=12,
            num_heads=16,
            num_kv_heads=4,
            head_dim=64,
        ),
        prompt_len=128,
        new_tokens=256,
        batches=(1, 16),
        ks=(1, 5, 20),
        repeats=3,
    ),
    # the same base; a value model of a quarter of its size made shallow (4 of 16 layers) rather
    # than narrow: on a GPU at these sizes a decode step costs per layer, not per FLOP
    "gpu-shallow": dict(
        base=GPU_BASE,
        value=dict(GPU_BASE, num_layers=4),
        prompt_len=128,
        new_tokens=256,
        batches=(1, 16),
        ks=(1, 5, 20),
        repeats=3,
    ),
}


def make(spec: dict, head: str, dtype) -> Transformer:
    cfg = ModelConfig(model_type="llama", max_position_embeddings=4096, norm_eps=1e-5, head=head, num_labels=1, **spec)
    return Transformer(cfg, dtype=dtype, rngs=nnx.Rngs(0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    ap.add_argument("--batches", type=int, nargs="*", help="override the preset's batch sizes")
    ap.add_argument("--ks", type=int, nargs="*", help="override the preset's candidate counts")
    ap.add_argument("--new-tokens", type=int, help="override the preset's tokens per row")
    ap.add_argument("--repeats", type=int, help="timed repetitions (best is kept)")
    ap.add_argument("--check-every", type=int, default=8, help="decode steps between early-exit tests")
    ap.add_argument("--fuse", action="store_true", help="fuse q/k/v and gate/up projections (fuse_projections)")
    ap.add_argument("--no-vocab", action="store_true", help="skip the vocabulary-wide value head")
    ap.add_argument(
        "--attention",
        nargs="+",
        default=["xla"],
        choices=ATTENTION_IMPLS,
        help="decode attention implementations to time side by side (each VAS ratio is to the "
        "generate of the same implementation)",
    )
    ap.add_argument(
        "--topk-method",
        nargs="+",
        default=["lax"],
        choices=TOPK_METHODS,
        help="how VAS picks its candidates (vas_decode's topk_method; all exact): each is timed",
    )
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args(argv)
    p = dict(PRESETS[a.preset])
    batches = a.batches or p["batches"]
    ks = a.ks or p["ks"]
    n = a.new_tokens or p["new_tokens"]
    repeats = a.repeats or p["repeats"]
    dtype = parse_dtype(a.dtype)
    base = make(p["base"], "lm", dtype)
    value = make(p["value"], "score", dtype)
    qvalue = make(p["value"], "lm", dtype)
    if a.fuse:
        base, value, qvalue = (fuse_projections(m) for m in (base, value, qvalue))
    ctx = p["prompt_len"] + n / 2
    fb = flops_per_token(base.config, ctx, True)
    fv = flops_per_token(value.config, ctx, False)
    fq = flops_per_token(qvalue.config, ctx, True)
    dev = jax.devices()[0]
    print(
        f"device: {dev.device_kind} ({platform.machine()}), dtype {a.dtype}, prompt {p['prompt_len']}, "
        f"{n} new tokens, jax {jax.__version__}, check_every {a.check_every}, fused {a.fuse}, "
        f"attention {'/'.join(a.attention)}, topk_method {'/'.join(a.topk_method)}"
    )
    print(
        f"base {base.config.num_layers}L/{base.config.hidden_size}d: {fb / 1e6:.1f} MFLOP/token; "
        f"value {value.config.num_layers}L/{value.config.hidden_size}d: {fv / 1e6:.1f} MFLOP/candidate, "
        f"vocab-wide {fq / 1e6:.1f} MFLOP/step"
    )
    rows = []
    header = f"{'batch':>5} {'method':<36} {'tok/s':>10} {'ratio':>7} {'FLOPs ratio':>11} {'ratio/FLOPs':>11}"
    print(header)
    print("-" * len(header), flush=True)
    rng = np.random.RandomState(0)
    for b in batches:
        prompts = rng.randint(4, base.config.vocab_size, size=(b, p["prompt_len"])).astype(np.int32)
        key = jax.random.key(0)
        methods = []
        for impl in a.attention:
            ce = dict(check_every=a.check_every, attention=impl)
            tag = "" if impl == "xla" else f" [{impl}]"
            group = [
                (
                    "generate" + tag,
                    lambda ce=ce, prompts=prompts, key=key: (
                        vas_jax.generate(base, prompts, key=key, max_new_tokens=n, **ce).tokens
                    ),
                    1.0,
                )
            ]
            for tm in a.topk_method:
                pick = dict(ce, topk_method=tm)
                tm_tag = "" if tm == "lax" else f" ({tm})"
                for k in ks:
                    group.append(
                        (
                            f"vas scalar k={k}{tm_tag}{tag}",
                            lambda k=k, pick=pick, prompts=prompts, key=key: (
                                vas_jax.vas_decode(
                                    base, value, prompts, beta=1.0, top_k=k, key=key, max_new_tokens=n, **pick
                                ).tokens
                            ),
                            fb / (fb + k * fv),
                        )
                    )
                if not a.no_vocab:
                    group.append(
                        (
                            f"vas vocab k=20{tm_tag}{tag}",
                            lambda pick=pick, prompts=prompts, key=key: (
                                vas_jax.vas_decode(
                                    base, qvalue, prompts, beta=1.0, top_k=20, key=key, max_new_tokens=n, **pick
                                ).tokens
                            ),
                            fb / (fb + fq),
                        )
                    )
            try:  # compile and warm; an implementation that fails here is reported and skipped
                for _, fn, _ in group:
                    jax.block_until_ready(fn())
            except Exception as e:  # noqa: BLE001 -- a kernel that does not build on this machine
                print(f"attention {impl}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:200]})", flush=True)
                continue
            methods += [(name, fn, fr, tag) for name, fn, fr in group]
        # time in interleaved rounds so that drift in the machine's speed hits every method alike;
        # the best round of each is kept
        best = {name: float("inf") for name, _, _, _ in methods}
        for _ in range(repeats):
            for name, fn, _, _ in methods:
                t = time.perf_counter()
                jax.block_until_ready(fn())
                best[name] = min(best[name], time.perf_counter() - t)
        for name, _, fr, tag in methods:
            tps = b * n / best[name]
            r = tps / (b * n / best["generate" + tag])
            rows.append(dict(batch=b, method=name, tokens_per_s=tps, ratio=r, flops_ratio=fr))
            rf = f"{r / fr:>11.2f}" if not name.startswith("generate") else f"{'':>11}"
            print(f"{b:>5} {name:<36} {tps:>10.1f} {r:>7.3f} {fr:>11.3f} {rf}", flush=True)
        gens = [name for name, *_ in methods if name.startswith("generate")]
        for name in gens[1:]:
            print(f"{b:>5} {name} / generate: {best['generate'] / best[name]:.3f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                dict(
                    device=dev.device_kind,
                    dtype=a.dtype,
                    preset=a.preset,
                    check_every=a.check_every,
                    fused=a.fuse,
                    attention=a.attention,
                    topk_method=a.topk_method,
                    rows=rows,
                ),
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
