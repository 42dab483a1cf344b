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


def test_sharded_equals_single_device(hf_dir, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONUNBUFFERED="1")
    script = Path(__file__).with_name("sharded_check.py")
    p = subprocess.run([sys.executable, str(script), str(hf_dir("llama")[1]), str(hf_dir("llama", "score")[1]),
                        str(tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0 and "ALL OK" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
