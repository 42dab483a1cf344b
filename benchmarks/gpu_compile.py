"""Compile the GPU decode programs on a machine with no GPU (deviceless, ahead of time).

    pip install "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"   # the CUDA plugin only
    python -m benchmarks.gpu_compile --target h100 --preset gpu-shallow --batch 16 --attention xla pallas

XLA compiles for a described GPU (compute capability, SM count, memory sizes) without one attached, so
what a GPU session would find out first can be found out here: whether the fused decode-attention
kernel builds (Pallas -> Triton -> PTX for that card), how many kernels one decode step launches, what
it copies. Models are abstract (shapes only): no weights are made and nothing runs. Counts, not
timings: throughput needs the card. Without a device XLA cannot autotune, so its matrix-product
configurations (split-K, library or Triton) and its sort for `lax.top_k` are its untuned defaults and
may differ from a compile on the card; the fused attention kernel and the loop's structure do not.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before jax is imported: no CUDA device is wanted here, only its compiler
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # (the plugin's version checks look for a driver and
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")  # a device)

import argparse  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import vas_jax  # noqa: E402
from benchmarks.kernel_check import SHAPES as KERNEL_SHAPES  # noqa: E402
from vas_jax.config import DTYPE_NAMES, parse_dtype  # noqa: E402
from vas_jax.model import fuse_projections  # noqa: E402
from vas_jax.program_stats import as_gpu, lower_for, step_stats  # noqa: E402
from vas_jax.sampling import TOPK_METHODS  # noqa: E402

# The GPUs this project benchmarks on, as XLA's GpuTargetConfig describes one (device-info fields as
# the CUDA driver reports them; the runtime and cuDNN versions the compiler may assume).
_CARDS = {
    "h100": dict(name="NVIDIA H100 80GB HBM3", bandwidth=3352320000000, memory=84929347584, clock=1.98),
    "h200": dict(name="NVIDIA H200", bandwidth=4800000000000, memory=150754820096, clock=1.98),
}


def target_config(card: str) -> str:
    c = _CARDS[card]
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {c["bandwidth"]}
  l2_cache_size: 52428800
  clock_rate_ghz: {c["clock"]}
  device_memory_size: {c["memory"]}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 }}
runtime_version {{ major: 12 minor: 8 }}
device_description_str: "{c["name"]}"
"""


def gpu_device(card: str):
    """A compile-only device of that card, or exit with one line saying what to install."""
    from jax.experimental import topologies

    try:
        topo = topologies.get_topology_desc(platform="cuda", target_config=target_config(card), topology="1x1x1")
    except Exception as e:  # noqa: BLE001 -- no plugin, or one too old for deviceless topologies
        sys.exit(
            f"cannot describe a CUDA device here ({type(e).__name__}: {str(e).splitlines()[0]}); install the "
            f"CUDA plugin that matches jax {jax.__version__}: pip install 'jax[cuda12]=={jax.__version__}'"
        )
    return topo.devices[0]


def kernel_builds(device, dtype) -> bool:
    """Compile the fused attention kernel alone for `device` at benchmarks/kernel_check.py's shapes,
    reading the cache only and writing the step's new token into it; print one line per shape."""
    from vas_jax.decode_attention import decode_attention

    sharding = jax.sharding.SingleDeviceSharding(device)
    ok = True
    for b, t, nh, kvh, d, size in KERNEL_SHAPES:

        def arr(*shape, dt=dtype):
            return jax.ShapeDtypeStruct(shape, dt, sharding=sharding)

        args = (
            arr(b, t, nh, d),
            arr(b, kvh, size, d),
            arr(b, kvh, size, d),
            arr(b, dt=jnp.int32),
            arr(b, dt=jnp.int32),
            arr(b, kvh, t, d),
            arr(b, kvh, t, d),
        )
        for write in (False, True):

            def f(q, k, v, lo, hi, ks, vs, write=write):
                return decode_attention(q, k, v, lo, hi, 0.125, own=(ks, vs, 1), write=write)

            try:
                with as_gpu():
                    jax.jit(f).lower(*args).compile()
                msg = "builds"
            except Exception as e:  # noqa: BLE001 -- report it, check the other shapes
                ok, msg = False, f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(
                f"kernel b={b:>2} t={t:>2} heads {nh}/{kvh} d={d} slots {size:>4} "
                f"{'writing the new token' if write else 'reading only':<21} {msg}",
                flush=True,
            )
    return ok


def _dump(folder, name, lowered, stats) -> None:
    import json
    import pathlib
    import re

    d = pathlib.Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    hist = {"kernels": sum(stats["ops"].values()), "triton": stats["triton"], "ops": dict(sorted(stats["ops"].items()))}
    (d / f"{name}.ops.json").write_text(json.dumps(hist, indent=1) + "\n")
    text = re.sub(r"\s*loc\([^()]*(\([^()]*\)[^()]*)*\)", "", lowered.as_text())
    (d / f"{name}.stablehlo.txt").write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("#loc")))


def main(argv=None):
    from benchmarks.bench import PRESETS, make

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=sorted(_CARDS), default="h100", help="the GPU to compile for")
    ap.add_argument("--preset", choices=[p for p in sorted(PRESETS) if p.startswith("gpu")], default="gpu-shallow")
    ap.add_argument("--dtype", default="bfloat16", choices=DTYPE_NAMES)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--attention", nargs="+", default=["xla", "pallas"], choices=["xla", "pallas"])
    ap.add_argument("--topk-method", nargs="+", default=["lax"], choices=TOPK_METHODS)
    ap.add_argument("--no-fuse", action="store_true", help="keep q/k/v and gate/up projections separate")
    ap.add_argument(
        "--dump",
        metavar="DIR",
        help="write each program's per-step op histogram (JSON) and its StableHLO without source locations, "
        "to compare two versions of the code (diff -r)",
    )
    a = ap.parse_args(argv)
    device = gpu_device(a.target)
    p = PRESETS[a.preset]
    dtype = parse_dtype(a.dtype)

    def abstract(spec, head):
        return nnx.eval_shape(lambda: (lambda m: m if a.no_fuse else fuse_projections(m))(make(spec, head, dtype)))

    base, value = abstract(p["base"], "lm"), abstract(p["value"], "score")
    print(
        f"compiling for {device.device_kind} (no device attached), jax {jax.__version__}, preset {a.preset}, "
        f"{a.dtype}, prompt {p['prompt_len']}, {p['new_tokens']} new tokens, fused {not a.no_fuse}"
    )
    failed = not kernel_builds(device, dtype) if "pallas" in a.attention else False
    print(f"{'batch':>5} {'program':<22} {'attention':<9} {'kernels/step':>12} {'triton':>6}  largest groups")
    for b in a.batch:
        prompts = np.random.RandomState(0).randint(4, 100, size=(b, p["prompt_len"])).astype(np.int32)
        runs = [
            (
                "generate",
                lambda att, prompts=prompts: vas_jax.generate(
                    base, prompts, key=jax.random.key(0), max_new_tokens=p["new_tokens"], attention=att, run=False
                ),
            )
        ]
        runs += [
            (
                f"vas k={a.k} {m}",
                lambda att, m=m, prompts=prompts: vas_jax.vas_decode(
                    base,
                    [value],
                    prompts,
                    beta=1.0,
                    top_k=a.k,
                    key=jax.random.key(0),
                    max_new_tokens=p["new_tokens"],
                    attention=att,
                    topk_method=m,
                    run=False,
                ),
            )
            for m in a.topk_method
        ]
        for name, call in runs:
            for att in a.attention:
                try:
                    lowered = lower_for(device, lambda call=call, att=att: call(att))
                    with as_gpu():
                        s = step_stats(lowered.compile())
                    if a.dump:
                        _dump(a.dump, f"b{b}_{name.replace(' ', '_').replace('=', '')}_{att}", lowered, s)
                except Exception as e:  # noqa: BLE001 -- report the failing build, go on with the others
                    failed = True
                    print(
                        f"{b:>5} {name:<22} {att:<9} FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                        flush=True,
                    )
                    continue
                top = ", ".join(f"{k} {v}" for k, v in s["ops"].most_common(4))
                print(f"{b:>5} {name:<22} {att:<9} {sum(s['ops'].values()):>12} {s['triton']:>6}  {top}", flush=True)
                big = [f"{n} x {shape}" for shape, n in s["copies"].most_common() if "," in shape]
                if big:
                    print(f"{'':>6}copies per step: {'; '.join(big[:4])}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
