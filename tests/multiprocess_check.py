"""One of two processes (4 fake CPU devices each) training on a (2, 2, 2) mesh of all 8 devices.

Run by test_sharding.py; process 0 writes the trained parameters to OUT/params.npz.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vas_jax import distributed  # noqa: E402


def main(base_dir, out):
    assert distributed.initialize()
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    from flax import nnx
    from multiprocess_data import CFG, PROMPTS, dataset

    import vas_jax
    from vas_jax.sharding import make_mesh
    from vas_jax.train import TrainConfig, init_value_model, load_rollouts, train_value

    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    data = load_rollouts(dataset(), mesh=mesh)  # this host's shard only
    assert data.count == 2 and len(data.local) == 1
    np.save(f"{out}/rows{jax.process_index()}.npy", next(iter(data.local.values())).ids)
    vm, m = train_value(
        init_value_model(vas_jax.load_model(base_dir)),
        data,
        f"{out}/run",
        TrainConfig(**CFG),
        progress=False,
        mesh=mesh,
        max_steps=6,
    )
    if jax.process_index() == 0:
        flat = {"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(vm, nnx.Param))}
        np.savez(f"{out}/params.npz", loss=m["loss"], eval_rmse=m["eval_rmse"], **flat)
    # sampling: each host samples its own shards of the prompts; host 0 joins them
    from vas_jax.rollouts import sample_rollouts

    ds = sample_rollouts(
        vas_jax.load_model(base_dir),
        vas_jax.load_tokenizer(base_dir),
        PROMPTS,
        f"{out}/rollouts",
        n=2,
        max_new_tokens=5,
        prompts_per_shard=2,
        progress=False,
    )
    assert len(ds) == 2 * len(PROMPTS)
    print("process", jax.process_index(), "done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
