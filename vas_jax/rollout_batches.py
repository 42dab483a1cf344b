"""Scored rollouts as padded arrays for TD training, whole or in per-host shards.

A `Batch` is rollouts (prompt + response, right-padded) with a response mask and the reward; a
`RolloutShards` holds them in the shards a pod's hosts read (each host its own, through
`datasets.distributed.split_dataset_by_node`), so one process given the same shard count trains
alike.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from .decode import bucket_length
from .errors import VasError


@dataclasses.dataclass
class Batch:
    ids: np.ndarray  # int32[N, L]: prompt + response, right-padded
    mask: np.ndarray  # bool[N, L]: real tokens
    resp: np.ndarray  # bool[N, L]: response tokens
    reward: np.ndarray  # float32[N]

    FIELDS = ("ids", "mask", "resp", "reward")

    def take(self, idx):
        return self.map(lambda x: x[idx])

    def map(self, fn) -> "Batch":
        """fn applied to every field array."""
        return Batch(*(fn(getattr(self, f)) for f in self.FIELDS))

    @staticmethod
    def concat(parts) -> "Batch":
        return Batch(*(np.concatenate([getattr(b, f) for b in parts]) for f in Batch.FIELDS))

    def __len__(self):
        return len(self.reward)


def normalize_rewards(ds, column: str = "reward", *, mean: float | None = None, scale: float | None = None):
    """(ds with a "reward" column of (r - mean) / scale from `column`, mean, scale): values learnt on
    it are in units of the reward's standard deviation, so a beta means the same for every reward.
    A constant reward keeps scale 1. Given mean and scale (a value model's, continued on new
    rollouts) are kept, so its values stay in the units its betas were chosen in."""
    if column not in ds.column_names:
        have = ", ".join(c for c in ds.column_names if c.startswith("reward")) or "none"
        raise VasError(f"the rollouts have no {column!r} column (reward columns: {have}); score them with `vas score`")
    r = np.asarray(ds[column], np.float64)
    if not np.isfinite(r).all():
        bad = np.flatnonzero(~np.isfinite(r))[:10]
        raise VasError(f"non-finite reward(s) at row(s) {', '.join(map(str, bad))}; rescore the rollouts")
    if mean is None or scale is None:
        mean, scale = float(r.mean()), float(r.std()) or 1.0
    new = ((r - mean) / scale).astype(np.float32)
    ds = ds.map(lambda _, idx: {"reward": new[idx].tolist()}, with_indices=True, batched=True, keep_in_memory=True)
    return ds, mean, scale


def _rollout_rows(ds) -> list[tuple]:
    for c in ("prompt_ids", "response_ids", "reward"):
        if c not in ds.column_names:
            hint = "score it with `vas score`" if c == "reward" else "make it with `vas sample`"
            raise VasError(f"the rollout dataset has no {c!r} column; {hint}")
    rows = [(p, r, float(w)) for p, r, w in zip(ds["prompt_ids"], ds["response_ids"], ds["reward"]) if len(r)]
    bad = [i for i, (_, _, w) in enumerate(rows) if not math.isfinite(w)]
    if bad:
        raise VasError(f"non-finite reward(s) at row(s) {', '.join(map(str, bad[:10]))}; rescore the rollouts")
    return rows


def _pad_rows(rows, pad_id: int, length: int) -> Batch:
    from .data import pad_rows

    ids, mask = pad_rows([list(p) + list(r) for p, r, _ in rows], length, pad_id)
    resp = mask & (np.arange(length)[None, :] >= np.array([len(p) for p, _, _ in rows])[:, None])
    return Batch(ids, mask, resp, np.array([w for _, _, w in rows], np.float32))


def _check_length(longest: int, max_length: int | None) -> int:
    length = bucket_length(longest) if max_length is None else max_length
    if longest > length:
        raise VasError(f"a rollout has {longest} tokens, more than --max-length {length}")
    return length


def rollout_arrays(ds, *, pad_id: int = 0, max_length: int | None = None) -> Batch:
    """Rollouts (prompt_ids, response_ids, reward) as right-padded arrays; empty responses are dropped."""
    rows = _rollout_rows(ds)
    if not rows:
        raise VasError("the rollout dataset has no non-empty responses to train on")
    return _pad_rows(rows, pad_id, _check_length(max(len(p) + len(r) for p, r, _ in rows), max_length))


@dataclasses.dataclass
class RolloutShards:
    """Rollouts in `count` shards. The schedule shuffles each shard on its own and builds every
    batch from equal parts of all shards, so a pod's hosts each read one shard (`local` holds this
    process's: all of them in one process) and one process given the same count trains alike."""

    local: dict  # shard id -> Batch
    count: int


def process_block(mesh) -> int:
    """Which block of the batch this process's devices hold (the shard it reads), on a pod."""
    from .sharding import TRAIN_RULES, batch_sharding

    n = mesh.shape["data"] * mesh.shape["fsdp"]
    nproc = jax.process_count()
    per = n // nproc if n % nproc == 0 else 0
    held = batch_sharding(mesh, TRAIN_RULES, 1).addressable_devices_indices_map((n,)).values()
    rows = sorted({i for (sl,) in held for i in range(*sl.indices(n))})
    if not per or rows != list(range(rows[0], rows[0] + per)):
        raise VasError(
            f"each host must hold its own block of the batch: the mesh's data x fsdp ({n}) must be a "
            f"multiple of the {nproc} hosts, with the hosts along those axes (e.g. data={nproc})"
        )
    return rows[0] // per


def load_rollouts(
    ds, *, pad_id: int = 0, max_length: int | None = None, shards: int | None = None, mesh=None
) -> RolloutShards:
    """Scored rollouts as `RolloutShards` for `train_value`.

    One process: `shards` (default 1) contiguous shards, all held. Several processes (a pod): one
    shard per process, and each reads only its own (`datasets.distributed.split_dataset_by_node`,
    the shard of the batch block its devices hold); rows are padded to one length on every host.
    """
    from datasets.distributed import split_dataset_by_node

    nproc = jax.process_count()
    if shards is not None and shards < 1:
        raise VasError(f"--data-shards must be at least 1, got {shards}")
    if nproc > 1:
        if mesh is None:
            raise VasError("training on several hosts needs a mesh (--mesh)")
        if shards not in (None, nproc):
            raise VasError(
                f"on {nproc} hosts the rollouts are read in {nproc} shards, one per host; "
                f"--data-shards {shards} does not fit"
            )
        count, mine = nproc, [process_block(mesh)]
    else:
        count = shards or 1
        mine = list(range(count))
    if len(ds) < count:
        raise VasError(f"{len(ds)} rollout(s) cannot fill {count} data shards; use fewer shards (--data-shards)")
    parts = {s: _rollout_rows(ds if count == 1 else split_dataset_by_node(ds, rank=s, world_size=count)) for s in mine}
    longest = max((len(p) + len(r) for rows in parts.values() for p, r, _ in rows), default=0)
    if nproc > 1:
        from jax.experimental import multihost_utils

        longest = int(np.max(multihost_utils.process_allgather(np.int32(longest))))
    if longest == 0:
        raise VasError("the rollout dataset has no non-empty responses to train on")
    length = _check_length(longest, max_length)
    return RolloutShards({s: _pad_rows(rows, pad_id, length) for s, rows in parts.items()}, count)
