"""How the train step and decoding scale over 1, 2, 4, 8 fake CPU devices (a sanity figure).

    python -m benchmarks.scale_bench

Fake devices share this machine's cores, so the numbers show the sharded programs run and what
their overhead is, not a speed-up. The model is the CPU decode benchmark's base (6 layers, 256 wide).
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import tempfile  # noqa: E402
import time  # noqa: E402

import datasets  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import vas_jax  # noqa: E402
from vas_jax import ModelConfig, Transformer  # noqa: E402
from vas_jax.sharding import DECODE_RULES, make_mesh, shard_model  # noqa: E402
from vas_jax.train import TrainConfig, init_value_model, rollout_arrays, train_value  # noqa: E402

SPEC = dict(
    model_type="llama",
    vocab_size=4096,
    hidden_size=256,
    intermediate_size=768,
    num_layers=6,
    num_heads=8,
    num_kv_heads=4,
    head_dim=32,
    max_position_embeddings=512,
    norm_eps=1e-5,
)


def main():
    rng = np.random.RandomState(0)
    lm = Transformer(ModelConfig(**SPEC), rngs=nnx.Rngs(0))
    ds = datasets.Dataset.from_dict(
        {
            "prompt_ids": [rng.randint(4, 4096, 16).tolist() for _ in range(128)],
            "response_ids": [rng.randint(4, 4096, 48).tolist() for _ in range(128)],
            "reward": rng.randn(128).tolist(),
        }
    )
    data = rollout_arrays(ds)
    prompts = rng.randint(4, 4096, size=(16, 32)).astype(np.int32)
    print(f"{'devices':>7} {'mesh':<24} {'train tok/s':>12} {'decode tok/s':>13}")
    for n, spec in ((1, None), (2, "data=2"), (4, "data=2,tensor=2"), (8, "data=2,fsdp=2,tensor=2"), (8, "data=8")):
        mesh = make_mesh(spec, devices=jax.devices()[:n]) if spec else None
        cfg = TrainConfig(batch_size=32, minibatch_size=16, epochs=1, passes=2, eval_fraction=0.0, save_every=10**9)
        with tempfile.TemporaryDirectory() as d:
            _, m = train_value(init_value_model(lm), data, d, cfg, progress=False, mesh=mesh)
        base = shard_model(lm, mesh, DECODE_RULES) if mesh is not None else lm
        key = jax.random.key(0)
        jax.block_until_ready(vas_jax.generate(base, prompts, key=key, max_new_tokens=32, mesh=mesh).tokens)
        t = time.perf_counter()
        jax.block_until_ready(vas_jax.generate(base, prompts, key=key, max_new_tokens=32, mesh=mesh).tokens)
        dec = 16 * 32 / (time.perf_counter() - t)
        print(f"{n:>7} {spec or 'one device':<24} {m['tokens_per_s']:>12.0f} {dec:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
