"""Sharded forward, decoding and training on 8 fake CPU devices equal the single-device results."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vas_jax import VasError
from vas_jax.sharding import param_axes, parse_mesh


def test_parse_mesh():
    assert parse_mesh(None, 8) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert parse_mesh("data=2,fsdp=2,tensor=2", 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert parse_mesh("tensor=4", 4) == {"data": 1, "fsdp": 1, "tensor": 4}
    with pytest.raises(VasError, match="uses 4 devices, but 8 are present"):
        parse_mesh("data=2,tensor=2", 8)
    with pytest.raises(VasError, match="unknown mesh axis 'model'"):
        parse_mesh("model=8", 8)
    assert param_axes(("layers", 0, "attn", "q_proj", "kernel")) == ("embed", "heads")
    assert param_axes(("embed",)) == ("vocab", "embed")


@pytest.mark.slow
def test_sharded_equals_single_device(hf_dir, tmp_path):
    root = str(Path(__file__).resolve().parents[1])  # the checkout's vas_jax, as in this process
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    )
    script = Path(__file__).with_name("sharded_check.py")
    p = subprocess.run(
        [sys.executable, str(script), str(hf_dir("llama")[1]), str(hf_dir("llama", "score")[1]), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0 and "ALL OK" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    # the partitioner never had to replicate a tensor to reshard it (activations pinned to the batch)
    assert "Involuntary full rematerialization" not in p.stderr, p.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_train_like_one(tiny_dirs, tmp_path):
    """Two processes with 4 fake CPU devices each, joined by jax.distributed on localhost, each reading
    only its own half of the rollouts, train on one (2, 2, 2) mesh and end with the parameters of a
    single-process run over the same two shards; then they sample rollouts, each host its own
    shards of the prompts, into the dataset that one process writes."""
    import socket

    import numpy as np
    from flax import nnx
    from multiprocess_data import CFG, PROMPTS, dataset

    import vas_jax
    from vas_jax.train import TrainConfig, init_value_model, load_rollouts, train_value

    base = tiny_dirs["base"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).with_name("multiprocess_check.py")
    procs = []
    for pid in range(2):
        env = dict(
            os.environ,
            VAS_COORDINATOR=f"127.0.0.1:{port}",
            VAS_NUM_PROCESSES="2",
            VAS_PROCESS_ID=str(pid),
            JAX_PLATFORMS="cpu",
            PYTHONPATH=str(Path(__file__).parent),
        )
        env.pop("XLA_FLAGS", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(base), str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-4000:]
    got = np.load(tmp_path / "params.npz")
    data = load_rollouts(dataset(), shards=2)
    for s in (0, 1):  # each process read exactly its shard
        np.testing.assert_array_equal(np.load(tmp_path / f"rows{s}.npy"), data.local[s].ids)
    ref, m = train_value(
        init_value_model(vas_jax.load_model(base)),
        data,
        tmp_path / "single",
        TrainConfig(**CFG),
        progress=False,
        max_steps=6,
    )
    assert abs(float(got["loss"]) - m["loss"]) < 1e-5
    assert abs(float(got["eval_rmse"]) - m["eval_rmse"]) < 1e-5  # held-out rollouts of both hosts
    for k, v in nnx.to_flat_state(nnx.state(ref, nnx.Param)):
        np.testing.assert_allclose(got["/".join(map(str, k))], np.asarray(v[...]), atol=2e-5, err_msg=str(k))
    import datasets

    from vas_jax.rollouts import sample_rollouts

    one = sample_rollouts(
        vas_jax.load_model(base),
        vas_jax.load_tokenizer(base),
        PROMPTS,
        tmp_path / "rollouts1",
        n=2,
        max_new_tokens=5,
        prompts_per_shard=2,
        progress=False,
    )
    two = datasets.load_from_disk(str(tmp_path / "rollouts"))
    assert not (tmp_path / "rollouts" / ".shards").exists()
    for c in ("prompt_index", "sample_index", "response_ids", "logprobs"):
        assert two[c] == one[c], c
