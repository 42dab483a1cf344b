"""Rollouts from the frozen base model, written as a `datasets` dataset, resumably.

Prompts are cut into fixed shards (`prompts_per_shard` prompts, each sampled `n` times); every
shard is sampled with a key derived from its index and written atomically (temp file + rename)
under `OUT/.shards/`. A rerun after an interruption skips the finished shards, so it loses and
duplicates nothing and produces the same rows as an uninterrupted run. When every shard is done
they are joined into the dataset at OUT.

On several hosts (jax.distributed) every host samples its own shards (shard s on host
s mod hosts, each on its local devices) into the shared OUT, and host 0 joins them once all are
written; the rows are those of a one-host run, since a shard's key depends on its index alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import VasError

SETTINGS = "rollout_settings.json"
COLUMNS = (
    "prompt_index",
    "sample_index",
    "prompt",
    "prompt_ids",
    "response_ids",
    "response",
    "logprobs",
    "ended_with_eos",
)


def _has_data(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or any((path / ".shards").glob("shard-*.parquet"))


def _check_settings(path: Path, settings: dict) -> None:
    """Refuse to mix rollouts made with other settings. A settings file with no rollouts beside it
    (a run that failed before its first shard) binds nothing."""
    f = path / SETTINGS
    if f.exists() and _has_data(path):
        old = json.loads(f.read_text())
        diff = [k for k in settings if old.get(k) != settings[k]]
        if diff:
            raise VasError(
                f"{str(path)!r} holds rollouts made with other settings ({', '.join(diff)}); "
                "use another --out, or delete it to start over"
            )


def _write_settings(path: Path, settings: dict, host: int) -> None:
    # each host writes its own temporary file: every host writes the settings with its first shard,
    # and with one shared name one host's rename could take the file from under another's
    tmp = path / f".tmp-{host}-{SETTINGS}"
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))
    os.replace(tmp, path / SETTINGS)


def sample_rollouts(
    base,
    tok,
    prompts: list[str],
    out: str | Path,
    *,
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    prompts_per_shard: int = 8,
    chat_template: bool = False,
    base_path: str | None = None,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
    values: Sequence = (),
    beta=None,
    value_paths: Sequence[str] = (),
):
    """Sample `n` responses per prompt and write them to the dataset directory `out`.

    With `values`, the responses come from VAS itself (`vas_decode` at `beta`, `top_k` candidates,
    default 20): an on-policy round's rollouts, which continue a value model's training on the
    states its guidance visits. Returns the `datasets.Dataset`. `on_shard(i)` is called after
    shard i is written (tests use it to interrupt a run). `log(line)` hears whether the run starts,
    resumes or is already done.
    """
    import datasets
    import jax
    from tqdm import tqdm

    from .data import encode_prompts
    from .decode import generate, vas_decode
    from .tokenizer import default_pad_id, end_of_turn_ids

    if n < 1:
        raise VasError(f"--n must be at least 1, got {n}")
    if not prompts:
        raise VasError("no prompts to sample from")
    out = Path(out)
    ids = encode_prompts(tok, prompts, chat_template=chat_template)
    settings = dict(
        n=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        prompts_per_shard=prompts_per_shard,
        chat_template=chat_template,
        num_prompts=len(prompts),
        base=str(base_path) if base_path else None,
        prompts_digest=_digest(prompts),
    )
    if values:  # guided: what guided them is part of what the rollouts are
        top_k = top_k or 20
        beta = [float(b) for b in np.broadcast_to(np.asarray(beta, np.float64), (len(values),))]
        settings.update(top_k=top_k, values=[str(v) for v in value_paths] or None, beta=beta)
    nproc, pid = jax.process_count(), jax.process_index()
    say = log or (lambda _: None)
    if out.exists() and not out.is_dir():
        raise VasError(f"{str(out)!r} is an existing file; give a directory for the rollouts")
    if (out / "dataset_info.json").exists() and not (out / ".shards").exists():
        _check_settings(out, settings)
        say(f"{out} already holds these rollouts; nothing to sample")
        return datasets.load_from_disk(str(out))
    shard_dir = out / ".shards"
    _check_settings(out, settings)
    _barrier("vas-sample-start", nproc)
    eos = end_of_turn_ids(tok)
    pad = default_pad_id(tok)
    n_shards = (len(prompts) + prompts_per_shard - 1) // prompts_per_shard
    key = jax.random.key(seed)
    done = {int(p.stem.split("-")[1]) for p in shard_dir.glob("shard-*.parquet")} if shard_dir.exists() else set()
    mine = [s for s in range(n_shards) if s % nproc == pid]
    if done:
        say(f"resuming: {len(done)} of {n_shards} shards already in {out}")

    def size(s):
        return min(prompts_per_shard, len(prompts) - s * prompts_per_shard) * n

    bar = tqdm(
        total=sum(size(s) for s in mine),
        desc="sample" if nproc == 1 else f"sample (host {pid})",
        unit="resp",
        disable=not progress,
    )
    bar.update(sum(size(s) for s in mine if s in done))
    for s in mine:
        if s in done:
            continue
        idx = list(range(s * prompts_per_shard, min((s + 1) * prompts_per_shard, len(prompts))))
        rows = [(i, j) for i in idx for j in range(n)]
        common = dict(
            key=jax.random.fold_in(key, s),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            eos_token_id=eos,
            pad_id=pad,
        )
        batch = [ids[i] for i, _ in rows]
        r = vas_decode(base, list(values), batch, beta=beta, **common) if values else generate(base, batch, **common)
        toks = r.token_lists()
        lps = np.asarray(r.logprobs)
        cols = {c: [] for c in COLUMNS}
        for row, ((i, j), t) in enumerate(zip(rows, toks)):
            cols["prompt_index"].append(i)
            cols["sample_index"].append(j)
            cols["prompt"].append(prompts[i])
            cols["prompt_ids"].append(ids[i])
            cols["response_ids"].append(t)
            cols["response"].append(tok.decode(t, skip_special_tokens=True))
            cols["logprobs"].append(lps[row, : len(t)].tolist())
            cols["ended_with_eos"].append(bool(t) and t[-1] in eos)
        tmp = shard_dir / f".tmp-{s:05d}.parquet"
        shard_dir.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(cols).to_parquet(str(tmp))
        if not _has_data(out):  # with the first shard: a run that failed before it binds nothing
            _write_settings(out, settings, pid)
        os.replace(tmp, shard_dir / f"shard-{s:05d}.parquet")
        bar.update(len(rows))
        if on_shard is not None:
            on_shard(s)
    bar.close()
    _barrier("vas-sample-shards", nproc)  # every host's shards are written
    if pid == 0:
        _join(shard_dir, out, n_shards)
    _barrier("vas-sample-joined", nproc)
    return datasets.load_from_disk(str(out))


def _barrier(name: str, nproc: int) -> None:
    if nproc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _join(shard_dir: Path, out: Path, n_shards: int) -> None:
    """The shards, in order, saved as the dataset at `out` (atomically); the shard folder removed."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [str(shard_dir / f"shard-{s:05d}.parquet") for s in range(n_shards)]
    # read in memory (not through datasets' builder, which writes a cache under ~/.cache)
    ds = datasets.Dataset(pa.concat_tables([pq.read_table(f) for f in files]))
    tmp_out = out.with_name(out.name + ".tmp-final")
    if tmp_out.exists():
        shutil.rmtree(tmp_out)
    ds.save_to_disk(str(tmp_out))
    for f in tmp_out.iterdir():
        os.replace(f, out / f.name)
    tmp_out.rmdir()
    shutil.rmtree(shard_dir)


def _digest(prompts: list[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in prompts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
