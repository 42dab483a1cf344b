"""Value-training throughput: tokens per second of the jitted TD(lambda) train step.

    python -m benchmarks.train_bench                      # small config, float32 and bfloat16 compute
    python -m benchmarks.train_bench --steps 50 --json out.json

Random rollouts (prompt 32 + response 96 tokens) and a random Llama-architecture value model; the
targets are computed once per TD batch, as in `vas train`; checkpoints are off. Tokens are all real tokens of each
update's sequences (prompt + response).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import datasets
import jax
import numpy as np
from flax import nnx

from vas_jax import ModelConfig, Transformer
from vas_jax.train import TrainConfig, init_value_model, rollout_arrays, train_value

SMALL = dict(
    model_type="llama",
    vocab_size=4096,
    hidden_size=128,
    intermediate_size=384,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
    max_position_embeddings=512,
    norm_eps=1e-5,
)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rollouts", type=int, default=256)
    ap.add_argument("--minibatch", type=int, default=16)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    rng = np.random.RandomState(0)
    ds = datasets.Dataset.from_dict(
        {
            "prompt_ids": [rng.randint(4, 4096, 32).tolist() for _ in range(a.rollouts)],
            "response_ids": [rng.randint(4, 4096, 96).tolist() for _ in range(a.rollouts)],
            "reward": rng.randn(a.rollouts).tolist(),
        }
    )
    data = rollout_arrays(ds)
    lm = Transformer(ModelConfig(**SMALL), rngs=nnx.Rngs(0))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(lm, nnx.Param)))
    print(
        f"device: {jax.devices()[0].device_kind} ({platform.machine()}), jax {jax.__version__}; value model "
        f"{SMALL['num_layers']}L/{SMALL['hidden_size']}d ({n_params / 1e6:.1f}M parameters), "
        f"{len(data)} rollouts of {data.mask.sum(1).mean():.0f} tokens, minibatch {a.minibatch}"
    )
    rows = []
    for dtype in ("float32", "bfloat16"):
        cfg = TrainConfig(
            batch_size=64,
            minibatch_size=a.minibatch,
            epochs=2,
            passes=a.passes,
            compute_dtype=dtype,
            eval_fraction=0.0,
            save_every=10**9,
        )
        with tempfile.TemporaryDirectory() as d:
            # tokens_per_s is measured by the loop itself, from the end of the first (compiling) update
            t = time.perf_counter()
            _, m = train_value(init_value_model(lm), data, f"{d}/run", cfg, progress=False)
            wall = time.perf_counter() - t
        rows.append(dict(compute_dtype=dtype, steps=m["step"], tokens_per_s=m["tokens_per_s"], wall_s=wall))
        print(
            f"  compute {dtype:<9} {m['step']:>4} updates  {m['tokens_per_s']:>9.0f} tokens/s  "
            f"({wall:.1f} s wall, compilation and the final checkpoint included)"
        )
    print(f"  bfloat16 / float32: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}")
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
