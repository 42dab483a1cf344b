"""Device meshes and the one place where logical axes map to mesh axes.

Mesh axes are (data, fsdp, tensor). Every parameter has logical axes named by what its
dimensions are (embed, heads, kv, mlp, vocab); a rule set maps them to mesh axes:
- TRAIN_RULES: batch over (data, fsdp); parameters FSDP over `embed` and tensor-parallel over
  heads/mlp/vocab;
- DECODE_RULES: batch over data; parameters tensor-parallel only, so no all-gather of FSDP shards
  per decoded token.
`jax.jit` propagates these shardings through the model; no `pmap`.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .errors import VasError

AXES = ("data", "fsdp", "tensor")

TRAIN_RULES = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "heads": "tensor",
    "kv": "tensor",
    "mlp": "tensor",
    "vocab": "tensor",
    "labels": None,
}
DECODE_RULES = {
    "batch": "data",
    "embed": None,
    "heads": "tensor",
    "kv": "tensor",
    "mlp": "tensor",
    "vocab": "tensor",
    "labels": None,
}

# parameter name (last path entries) -> logical axes of its dimensions
_PARAM_AXES = {
    ("embed",): ("vocab", "embed"),
    ("pos_embed",): (None, "embed"),
    ("q_proj", "kernel"): ("embed", "heads"),
    ("k_proj", "kernel"): ("embed", "kv"),
    ("v_proj", "kernel"): ("embed", "kv"),
    ("o_proj", "kernel"): ("heads", "embed"),
    ("qkv_proj", "kernel"): ("embed", "kv"),  # fused (fuse_projections): grouped per kv head
    ("qkv_proj", "bias"): ("kv",),
    ("gate_up_proj", "kernel"): ("embed", "mlp"),  # fused: gate and up interleaved per unit
    ("gate_up_proj", "bias"): ("mlp",),
    ("q_proj", "bias"): ("heads",),
    ("k_proj", "bias"): ("kv",),
    ("v_proj", "bias"): ("kv",),
    ("o_proj", "bias"): (None,),
    ("gate_proj", "kernel"): ("embed", "mlp"),
    ("up_proj", "kernel"): ("embed", "mlp"),
    ("down_proj", "kernel"): ("mlp", "embed"),
    ("gate_proj", "bias"): ("mlp",),
    ("up_proj", "bias"): ("mlp",),
    ("down_proj", "bias"): (None,),
    ("score", "kernel"): ("embed", "labels"),
    ("lm_head", "kernel"): ("embed", "vocab"),
}


def parse_mesh(spec: str | None, n_devices: int | None = None) -> dict[str, int]:
    """'data=2,fsdp=2,tensor=2' -> sizes; unnamed axes are 1, and by default all devices go on data."""
    n = n_devices or jax.device_count()
    if not spec:
        return {"data": n, "fsdp": 1, "tensor": 1}
    sizes = {a: 1 for a in AXES}
    for part in spec.split(","):
        if "=" not in part:
            raise VasError(f"bad --mesh entry {part!r}; write e.g. data=2,fsdp=2,tensor=2")
        k, v = part.split("=", 1)
        k = k.strip()
        if k not in sizes:
            raise VasError(f"unknown mesh axis {k!r} in --mesh; the axes are {', '.join(AXES)}")
        try:
            sizes[k] = int(v)
        except ValueError:
            raise VasError(f"mesh axis {k} must be a whole number, got {v!r}") from None
    total = int(np.prod(list(sizes.values())))
    if total != n:
        raise VasError(f"--mesh {spec} uses {total} devices, but {n} are present")
    return sizes


def make_mesh(spec: str | dict | None = None, devices=None) -> Mesh:
    devices = devices if devices is not None else jax.devices()
    sizes = spec if isinstance(spec, dict) else parse_mesh(spec, len(devices))
    arr = np.asarray(devices).reshape(tuple(sizes[a] for a in AXES))
    return Mesh(arr, AXES)


def logical_spec(axes, rules: dict) -> P:
    return P(*(rules.get(a) if a is not None else None for a in axes))


def param_axes(path: tuple) -> tuple:
    names = tuple(str(p) for p in path)
    for n in (2, 1):
        if names[-n:] in _PARAM_AXES:
            return _PARAM_AXES[names[-n:]]
    return (None,) * 1  # norms and anything else: replicated


def _fit(spec: P, shape, mesh: Mesh) -> P:
    """Drop a mesh axis from a dimension it does not divide (small models stay correct)."""
    out = []
    for dim, ax in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if ax is None:
            out.append(None)
            continue
        names = ax if isinstance(ax, tuple) else (ax,)
        size = int(np.prod([mesh.shape[a] for a in names]))
        out.append(ax if dim % size == 0 else None)
    return P(*out)


def fitted_sharding(mesh: Mesh, rules: dict, axes: tuple, shape) -> NamedSharding:
    """An array's sharding from the logical axes of its dimensions (a mesh axis that does not
    divide its dimension is dropped)."""
    return NamedSharding(mesh, _fit(logical_spec(axes, rules), shape, mesh))


def state_shardings(state, mesh: Mesh, rules: dict):
    """A NamedSharding for every array of an nnx.State (or any pytree keyed by parameter paths)."""

    def one(path, x):
        keys = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
        keys = tuple(k for k in keys if k != "value")
        axes = param_axes(keys)
        if len(axes) != x.ndim:
            axes = (None,) * x.ndim
        return fitted_sharding(mesh, rules, axes, x.shape)

    return jax.tree_util.tree_map_with_path(one, state)


def shard_model(model, mesh: Mesh, rules: dict = DECODE_RULES):
    """The model with every parameter placed on the mesh by `rules`."""
    graphdef, state = nnx.split(model)
    shardings = state_shardings(state, mesh, rules)
    return nnx.merge(graphdef, jax.device_put(state, shardings))


def batch_sharding(mesh: Mesh, rules: dict, ndim: int = 2, axis: int = 0) -> NamedSharding:
    """Dimension `axis` of an ndim-array split as `rules` split the batch; the rest replicated."""
    spec = [None] * ndim
    spec[axis] = rules["batch"]
    return NamedSharding(mesh, P(*spec))


def train_hints(mesh: Mesh, embed_shape: tuple) -> dict:
    """Shardings a model pins inside a sharded train step (`Transformer.shard_hints`).

    residual: the [B, T, H] stream split like the batch at every layer; embed_table: the
    embedding table gathered over its FSDP (embed) dimension before the lookup, its vocabulary
    still split as the parameter's is (embed_shape: [vocab, hidden]), so the lookup and its
    gradient work on batch-split activations. Without these the partitioner may move activations
    onto the FSDP axis, which it can only do by replicating them.
    """
    return {
        "residual": batch_sharding(mesh, TRAIN_RULES, 3),
        "embed_table": fitted_sharding(mesh, TRAIN_RULES, ("vocab", None), embed_shape),
    }


def kv_cache_shardings(mesh, models, rows: int, size: int) -> tuple:
    """Per model, its KV cache's [rows, kv heads, size, head dim] sharding on `mesh` by DECODE_RULES
    (rows over data, kv heads over tensor, where they divide); () without a mesh."""
    if mesh is None:
        return ()
    return tuple(
        fitted_sharding(
            mesh, DECODE_RULES, ("batch", "kv", None, None), (rows, m.config.num_kv_heads, size, m.config.head_dim)
        )
        for m in models
    )
