"""The pipeline, stage by stage, from paths on disk: convert → sample → score → train (and export
the value model with its metadata) → bench. Each `vas` subcommand parses its flags and calls one
of these; the demos call them too, so a stage's checks and glue are written once.

Every stage checks its output before any work, and resumes or replaces what an interrupted run
left (as its command's `--help` says).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import VasError
from .outputs import check_out_dir, check_writable

Log = Callable[[str], None]
LOW_CORRELATION = 0.5  # below it, the value model guides little (train/default_sweep.py, BENCHMARKS.md)


def convert(src: str | Path, out: str | Path, *, dtype: str = "float32", log: Log = print) -> Path:
    """A checkpoint (a GGUF file, or a Hugging Face directory) written as a Hugging Face safetensors
    directory, atomically (a new directory that must not exist yet)."""
    import vas_jax

    from .tokenizer import end_of_turn_ids

    out = Path(out)
    if out.exists():
        raise VasError(f"{str(out)!r} already exists; give a new directory")
    if not out.absolute().parent.is_dir():
        raise VasError(f"the directory {str(out.absolute().parent)!r} does not exist; create it first")
    tok = vas_jax.load_tokenizer(src)
    model = vas_jax.load_model(src, dtype=dtype)
    tmp = out.with_name(out.name + ".tmp-convert")
    if tmp.exists():
        shutil.rmtree(tmp)
    vas_jax.save_model(model, tmp, tokenizer=tok)
    gen = {"eos_token_id": end_of_turn_ids(tok)}  # every end-of-turn token, as transformers' generate reads it
    for k in ("bos_token_id", "pad_token_id"):
        if getattr(tok, k, None) is not None:
            gen[k] = getattr(tok, k)
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
    os.replace(tmp, out)
    c = model.config
    log(f"{src} -> {out}: {c.model_type}, {c.num_layers} layers, hidden {c.hidden_size}, vocab {c.vocab_size}, {dtype}")
    return out


def sample(
    base: str | Path,
    prompts: str | Path,
    out: str | Path,
    *,
    n: int = 8,
    prompt_field: str = "prompt",
    chat_template: bool = False,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    values: Sequence[str | Path] = (),
    beta: Sequence[float] | None = None,
    dtype: str = "float32",
    log: Log = print,
):
    """`n` responses per prompt of the file `prompts` from the base (or, with `values` and `beta`,
    from VAS: an on-policy round), written to the dataset directory `out`; a rerun resumes."""
    import vas_jax

    from .data import read_prompts
    from .rollouts import sample_rollouts
    from .values import check_prompting, load_value, value_meta

    check_out_dir(out)
    values = [str(v) for v in values]
    if beta is not None and not values:
        raise VasError("--beta guides samples with a value model: add --value DIR")
    if values and (beta is None or len(beta) not in (1, len(values))):
        raise VasError(f"give --beta once, or once per --value ({len(values)})")
    texts = read_prompts(prompts, prompt_field)
    tok = vas_jax.load_tokenizer(base)
    for d in values:
        check_prompting(value_meta(d), chat_template, d)
    base_model = vas_jax.load_model(base, dtype=dtype)
    models = [load_value(d, tok, dtype=dtype) for d in values]
    ds = sample_rollouts(
        base_model,
        tok,
        texts,
        out,
        n=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        prompts_per_shard=max(1, batch_size // n),
        chat_template=chat_template,
        base_path=str(base),
        log=log,
        values=models,
        beta=None if beta is None else list(beta),
        value_paths=values,
    )
    log(f"{len(ds)} responses to {len(texts)} prompts in {out} ({sum(ds['ended_with_eos'])} ended with EOS)")
    return ds


def score(
    data: str | Path,
    reward,
    *,
    name: str,
    column: str = "reward",
    out: str | Path | None = None,
    batch_size: int = 64,
    log: Log = print,
):
    """Add the column `column` of `reward` (a callable, or a reward model: `rewards.load_reward`)
    to the rollouts `data`, written to `out` (default: `data` itself, swapped in whole, never a
    moment without the rollouts in place). `name` is recorded as the column's reward."""
    from .data import NEW_SUFFIX, load_table, replace_dir
    from .rewards import score_dataset

    if out is not None:
        check_out_dir(out)
        o = Path(out)
        if o.exists() and any(o.iterdir()) and o.resolve() != Path(data).resolve():
            raise VasError(f"--out {str(out)!r} exists and is not empty; name a new directory (or none: add to --data)")
    else:  # the scored copy is written beside data, then swapped in
        check_writable(Path(data).absolute().parent, "--data")
    ds = load_table(data)
    ds = score_dataset(ds, reward, batch_size=batch_size, column=column)
    dest = Path(out or data)
    tmp = dest.with_name(dest.name + NEW_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    ds.save_to_disk(str(tmp))
    # the rollouts' settings go along, with this column's reward named (`vas train` stores the name)
    settings_file = Path(data) / "rollout_settings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    settings["rewards"] = {**settings.get("rewards", {}), column: name}
    (tmp / settings_file.name).write_text(json.dumps(settings, indent=2))
    replace_dir(tmp, dest)
    r = ds[column]
    log(f"scored {len(r)} responses: mean {sum(r) / len(r):.4f}, min {min(r):.4f}, max {max(r):.4f} -> {dest}")
    return ds


@dataclasses.dataclass(frozen=True)
class TrainedValue:
    path: Path | None  # the exported value model (None on hosts other than process 0)
    metrics: dict


def train(
    data: str | Path | Sequence[str | Path],
    out: str | Path,
    config,
    *,
    init: str | Path | None = None,
    init_value: str | Path | None = None,
    init_layers: int | None = None,
    head: str = "scalar",
    atoms: int = 21,
    reward_column: str = "reward",
    base: str | Path | None = None,
    mesh: str | None = None,
    data_shards: int | None = None,
    resume: bool = False,
    log: Log = print,
    warn: Log = print,
) -> TrainedValue:
    """A value model trained by TD(λ) (`config`, a `train.TrainConfig`) on the rollouts `data` (one
    directory or several, prompted alike), from a causal LM (`init`, cut to `init_layers`) or a
    value model (`init_value`), into the run directory `out`, then exported to `out/value` with
    its metadata (`export_value`)."""
    import jax

    import vas_jax

    from .guidance import value_atoms
    from .rollout_batches import normalize_rewards
    from .td import make_atoms
    from .tokenizer import default_pad_id
    from .train import clipped_share, init_value_model, load_rollouts, train_value
    from .values import load_value, value_meta

    config.validate()
    check_out_dir(out)
    if (init is None) == (init_value is None):
        raise VasError("give the value model's start: --init LM (a new one) or --init-value DIR (continue one)")
    if init_value and init_layers:
        raise VasError("--init-layers cuts a new value model from --init; --init-value continues one as it is")
    if head == "distributional" and config.gamma != 1:
        raise VasError(f"--head distributional trains with --gamma 1 (no discount), got --gamma {config.gamma}")
    stats = {}
    if init_value:
        meta = value_meta(init_value)
        if meta.get("reward_scale") is None:
            raise VasError(f"{init_value} stores no reward mean and scale; continue it with `vas train --resume`")
        stats = dict(mean=meta["reward_mean"], scale=meta["reward_scale"])
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    ds, settings = load_training_data(paths, reward_column)
    ds, reward_mean, reward_scale = normalize_rewards(ds, reward_column, **stats)
    tok = vas_jax.load_tokenizer(init or init_value)
    _check_base(base, settings, tok)
    mesh_ = None
    if mesh or len(jax.devices()) > 1:
        from .sharding import make_mesh

        mesh_ = make_mesh(mesh)
    rollouts = load_rollouts(ds, pad_id=default_pad_id(tok), shards=data_shards, mesh=mesh_)
    if init_value:
        vm = load_value(init_value, tok, head=head)
    else:
        lm = vas_jax.load_model(init)
        if lm.config.head != "lm":
            raise VasError(f"--init {init} is not a causal LM checkpoint")
        new_atoms = make_atoms(ds["reward"], atoms) if head == "distributional" else None
        vm = init_value_model(lm, head=head, layers=init_layers, atoms=new_atoms)
    grid = value_atoms(vm.config)
    if grid:
        log(
            f"distributional head: {len(grid)} atoms on [{grid[0]:.2f}, {grid[-1]:.2f}] (normalised reward); "
            f"{clipped_share(ds['reward'], grid):.1%} of the rewards lie outside them and are clipped to the end atoms"
        )
    run_info = dict(reward_column=reward_column, init=str(init or init_value), init_layers=init_layers, head=head)
    trained, metrics = train_value(vm, rollouts, out, config, resume=resume, mesh=mesh_, run_info=run_info)
    if jax.process_index() != 0:  # multi-host: process 0 exports
        return TrainedValue(None, metrics)
    path = export_value(
        trained,
        Path(out) / "value",
        tok,
        reward=(settings.get("rewards") or {}).get(reward_column, reward_column),
        reward_mean=reward_mean,
        reward_scale=reward_scale,
        chat_template=settings.get("chat_template"),
    )
    _report_training(path, metrics, config.eval_fraction, log, warn)
    return TrainedValue(path, metrics)


def export_value(vm, out: str | Path, tok, *, reward: str, reward_mean, reward_scale, chat_template) -> Path:
    """The value model saved as a checkpoint directory, with what decoding needs to know of it: the
    reward it predicts (and the mean and scale its values are in units of), the base tokenizer it
    reads, and how its prompts were wrapped (`values.value_meta`)."""
    import vas_jax

    from .tokenizer import tokenizer_hash
    from .values import write_value_meta

    path = vas_jax.save_model(vm, out, tokenizer=tok)
    write_value_meta(
        path,
        reward=reward,
        reward_mean=reward_mean,
        reward_scale=reward_scale,
        base_tokenizer=tokenizer_hash(tok),
        chat_template=chat_template,
    )
    return path


def _check_base(base, settings: dict, tok) -> None:
    """The base the rollouts came from (named, or recorded by `vas sample`) must share the value
    model's tokenizer."""
    import vas_jax

    from .hub import resolve_model

    where = base if base is not None else settings.get("base")
    if not where:
        return
    if base is None and not resolve_model(where).exists():
        raise VasError(f"base model directory {where!r} (named by the rollouts) does not exist; pass --base")
    vas_jax.check_same_tokenizer(vas_jax.load_tokenizer(where), tok, names=("base", "value (--init)"))


def _report_training(path: Path, metrics: dict, eval_fraction: float, log: Log, warn: Log) -> None:
    loss = metrics.get("loss")
    log(
        f"value model saved to {path}; final loss {'-' if loss is None else f'{loss:.4f}'}, "
        f"{metrics.get('tokens_per_s', 0):.0f} tokens/s"
    )
    corr = metrics.get("eval_corr")
    if corr is None:
        why = "--eval-fraction 0" if eval_fraction == 0 else "too few rollouts to hold any out and fill a minibatch"
        log(f"no held-out rollouts ({why}): the value model's quality is unmeasured")
        return
    log(f"held-out correlation of V with the returns: {corr:.3f} (RMSE {metrics['eval_rmse']:.3f})")
    if "eval_nll" in metrics:
        log(f"held-out NLL of the final reward under the predicted distribution: {metrics['eval_nll']:.3f} nats")
        gaps = {k.removeprefix("eval_tail_gap_beta"): v for k, v in metrics.items() if k.startswith("eval_tail_gap")}
        log(
            "tail calibration, predicted minus observed log E[exp(beta r)] at the first token (0 is exact, > 0 "
            "a tail too heavy for the soft rule): " + ", ".join(f"beta {b}: {v:+.2f}" for b, v in gaps.items())
        )
    if corr < LOW_CORRELATION:
        warn(
            f"vas train: warning: a held-out correlation of {corr:.2f} is low: this value model will guide little; "
            "try more rollouts (vas sample --n), more --passes or a larger --lr"
        )


def load_training_data(paths: Sequence[str | Path], column: str):
    """The rollouts of every path as one dataset (the columns training reads), and their settings
    (`vas sample`'s and `vas score`'s record), which must agree on the prompting."""
    import datasets

    from .data import load_table

    parts, settings = [], []
    for p in paths:
        ds = load_table(p)
        if column not in ds.column_names:
            have = ", ".join(c for c in ds.column_names if c.startswith("reward")) or "none"
            raise VasError(f"{p} has no {column!r} column (reward columns: {have}); score it with `vas score`")
        parts.append(ds)
        f = Path(p) / "rollout_settings.json"
        settings.append(json.loads(f.read_text()) if f.exists() else {})
    for p, s in zip(paths[1:], settings[1:], strict=True):
        if s.get("chat_template") != settings[0].get("chat_template"):
            raise VasError(f"{paths[0]} and {p} differ in --chat-template: train on rollouts prompted alike")
    if len(parts) == 1:
        return parts[0], settings[0]
    keep = ["prompt_ids", "response_ids", column]
    for p, ds in zip(paths, parts, strict=True):
        missing = [c for c in keep if c not in ds.column_names]
        if missing:
            raise VasError(f"{p} has no {', '.join(missing)} column: make it with `vas sample`")
    return datasets.concatenate_datasets([ds.select_columns(keep) for ds in parts]), settings[0]


def bench(
    base: str | Path,
    prompts: str | Path,
    out: str | Path,
    *,
    values: Sequence[str | Path],
    reward_fns: Sequence[str] = (),
    reward_models: Sequence[str | Path] = (),
    betas: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0),
    composed: Sequence[tuple[float, float]] = ((0.0, 0.0), (4.0, 0.0), (0.0, 4.0), (4.0, 4.0)),
    blockwise: Sequence = (),
    samples: int = 8,
    bon_max: int = 128,
    max_new_tokens: int = 64,
    top_k: int = 20,
    rule: str = "mean",
    seed: int = 0,
    prompt_field: str = "prompt",
    chat_template: bool = False,
    max_prompts: int | None = 64,
    value_head: str | None = None,
    dtype: str = "float32",
    attention: str = "xla",
    log: Log = print,
) -> dict:
    """Base, VAS over `betas` (and `composed` pairs), blockwise searches (`blockwise.BlockSetting`s)
    and Best-of-N on held-out prompts, scored by one reward per value model (the functions
    "MODULE:FUNCTION" of `reward_fns`, then the reward model directories of `reward_models`),
    written to `out` (report.json, the plots, examples.md). Returns the report."""
    import vas_jax

    from .data import encode_prompts, read_prompts
    from .decode_attention import check_attention
    from .flops import sequence_flops
    from .harness import format_table, run_comparison, write_report
    from .values import check_prompting, load_value, value_meta

    check_out_dir(out)  # before any work: a bad --out must not cost the whole run
    rewards, configs = _bench_rewards(reward_fns, reward_models)
    if len(rewards) != len(values):
        raise VasError(f"{len(values)} --value models but {len(rewards)} rewards; give one reward per value model")
    check_attention(attention)  # before any model is loaded
    for v in values:
        check_prompting(value_meta(v), chat_template, v)
    tok = vas_jax.load_tokenizer(base)
    base_model = vas_jax.load_model(base, dtype=dtype, fuse=True)
    models = [load_value(v, tok, head=value_head, dtype=dtype, fuse=True) for v in values]
    texts = read_prompts(prompts, prompt_field)[:max_prompts]
    ids = encode_prompts(tok, texts, chat_template=chat_template)

    def reward_flops(n_tokens):  # every reward model scores every response once
        return sum(sequence_flops(c, n_tokens, 0) for c in configs)

    report = run_comparison(
        base_model,
        tok,
        ids,
        models,
        rewards,
        betas=betas,
        composed=composed,
        samples=samples,
        bon_max=bon_max,
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        seed=seed,
        reward_flops=reward_flops,
        attention=attention,
        prompt_texts=texts,
        rule=rule,
        blockwise=blockwise,
    )
    write_report(report, out)
    log(format_table(report))
    log(f"\nreport: {out}/report.json")
    return report


def _bench_rewards(functions: Sequence[str], models: Sequence[str | Path]) -> tuple[dict, list]:
    """The rewards by name (a function's own name where it is unique, else its spec; a reward
    model's directory), and the reward models' configs (their FLOPs count in every method's)."""
    from .rewards import RewardModel, load_reward_function

    rewards, configs = {}, []
    short = [spec.rsplit(":", 1)[-1] for spec in functions]
    for spec, name in zip(functions, short, strict=True):
        rewards[name if short.count(name) == 1 else spec] = load_reward_function(spec)
    for d in models:
        rewards[str(d)] = RewardModel(d)
        configs.append(rewards[str(d)].model.config)
    return rewards, configs


# ---------------------------------------------------------------------- decode to JSONL


@dataclasses.dataclass(frozen=True)
class RemoteBase:
    """A base reached through an OpenAI-compatible API (`vas_jax.remote`): its URL and model name,
    the mode it is guided in, and the client's settings."""

    url: str
    model: str
    api_key: str | None = None
    mode: str = "exact"  # "exact", "text" or "retokenize"
    speculative: int = 1
    end_texts: Sequence[str] | None = None
    concurrency: int = 8
    max_retries: int = 4


def betas_for(beta: Sequence[float] | None, n_values: int) -> list[float]:
    """One β per value model from what was given: none (1.0 each), one for all, or one each."""
    if beta is None:
        return [1.0] * n_values
    if len(beta) == 1:
        return list(beta) * n_values
    if len(beta) != n_values:
        raise VasError(f"{len(beta)} --beta values for {n_values} --value models; give one per model or one")
    return list(beta)


def decode(
    texts: Sequence[str],
    out: str | Path,
    params,
    *,
    base: str | Path | None = None,
    remote: RemoteBase | None = None,
    values: Sequence[str | Path] = (),
    samples: int = 1,
    batch_size: int = 16,
    chat_template: bool = False,
    resume: bool = False,
    tokenizer: str | Path | None = None,
    value_head: str | None = None,
    dtype: str = "float32",
    mesh: str | None = None,
    attention: str = "xla",
    restrict_to_topk: bool = False,
    block: int | None = None,
    block_samples: int = 4,
    keep: str = "argmax",
    warn: Log = print,
) -> None:
    """`samples` completions of each prompt text, one JSON record each, appended to `out` (a file, or
    "-" for standard output): from a local `base` (plain sampling without `values`, VAS with them,
    blockwise search with `block`) or a `remote` base guided by local `values`. `params` (a
    `SamplingParams`) holds β (one per value model), temperature, top-p, VAS's top-k, the seed, the
    token limit and the rule. A resumed run writes exactly what an uninterrupted one would."""
    import jax
    from tqdm import tqdm

    import vas_jax

    from .data import encode_prompts
    from .outputs import check_out_file
    from .tokenizer import default_pad_id
    from .values import check_prompting, load_value, value_meta

    values = [str(v) for v in values]
    _check_decode(params, base, remote, values, chat_template, tokenizer, mesh, restrict_to_topk, attention, block)
    if out != "-":
        check_out_file(out)
    finished = _done_jobs(out, resume, warn)
    tok = vas_jax.load_tokenizer(tokenizer or values[0] if remote else base)
    mesh_ = None
    if mesh:
        from .sharding import make_mesh

        mesh_ = make_mesh(mesh)
    for d in values:
        check_prompting(value_meta(d), chat_template, d)
    base_model = None if remote else vas_jax.load_model(base, dtype=dtype, mesh=mesh_, fuse=True)
    models = [load_value(d, tok, head=value_head, dtype=dtype, mesh=mesh_, fuse=True) for d in values]
    ids = encode_prompts(tok, texts, chat_template=chat_template)
    # batches are fixed slices of every job, each keyed by its position: a resumed run decodes the
    # batches left exactly as an uninterrupted run would (same rows, same key), so nothing repeats
    every = [(i, s) for i in range(len(texts)) for s in range(samples)]
    batches = [
        (start, every[start : start + batch_size])
        for start in range(0, len(every), batch_size)
        if any(j not in finished for j in every[start : start + batch_size])
    ]
    pad = default_pad_id(tok)
    endpoint = None
    if remote:
        from .remote import Endpoint

        endpoint = Endpoint(
            remote.url,
            remote.model,
            api_key=remote.api_key or os.environ.get("OPENAI_API_KEY"),
            concurrency=remote.concurrency,
            max_retries=remote.max_retries,
        )
    search = None if block is None else {"block": block, "block_samples": block_samples, "keep": keep}
    key = jax.random.key(params.seed)
    sink = sys.stdout if out == "-" else open(out, "a")
    try:
        for start, batch in tqdm(batches, desc="decode", unit="batch", disable=len(batches) <= 1):
            prompts = [ids[i] for i, _ in batch]
            if remote:
                msgs = [[{"role": "user", "content": texts[i]}] for i, _ in batch]
                records = _remote_batch(endpoint, remote, params, models, prompts, msgs, batch, tok, pad)
            else:
                batch_key = jax.random.fold_in(key, start)
                records = _local_batch(base_model, models, prompts, params, tok, pad, batch_key, search,
                                       mesh=mesh_, attention=attention, restrict_to_topk=restrict_to_topk)  # fmt: skip
            for (i, s), rec in zip(batch, records, strict=True):
                if (i, s) in finished:  # a batch cut short by a torn write: only its missing records
                    continue
                rec = {"index": i, "prompt": texts[i], "sample": s, **rec, "beta": list(params.beta)}
                if values:
                    rec["rule"] = params.rule
                if search is not None:
                    rec["blockwise"] = search
                sink.write(json.dumps(rec, allow_nan=False) + "\n")
            sink.flush()
    finally:
        if sink is not sys.stdout:
            sink.close()
    if endpoint is not None:
        warn(f"vas decode: {endpoint.stats}")


def _check_decode(params, base, remote, values, chat_template, tokenizer, mesh, restrict_to_topk, attention, block):
    """What a decode run is asked for must hang together; said before any model is loaded."""
    from .decode_attention import check_attention

    if (base is None) == (remote is None):
        raise VasError("give the base as --base DIR (local) or --base-url URL --base-model NAME (remote), one of them")
    if remote and not remote.model:
        raise VasError("--base-url needs --base-model: the name the API serves the base under")
    if remote and not values:
        raise VasError("a remote base needs --value: only the value models run here")
    check_attention(attention)
    mode = remote.mode if remote else None
    if remote and mode != "exact" and not chat_template:
        raise VasError(f"--remote-mode {mode} talks to a chat endpoint: add --chat-template (the value models' prompt)")
    if tokenizer and mode == "retokenize":
        raise VasError("--remote-mode retokenize reads the value models' own tokenizer: drop --tokenizer")
    if remote and remote.end_texts and mode != "retokenize":
        raise VasError("--end-text is for --remote-mode retokenize (the other modes know the end token's id)")
    if remote and params.rule != "mean":
        raise VasError("--rule soft needs distributional value heads, which remote VAS does not take: use --rule mean")
    if block is not None:
        if remote or not values:
            raise VasError("--block searches with a local --base and at least one --value")
        for flag, bad in (("--mesh", mesh), ("--restrict-to-topk", restrict_to_topk),
                          ("--attention pallas", attention != "xla")):  # fmt: skip
            if bad:
                raise VasError(f"{flag} is for tokenwise decoding; drop it with --block")
    if remote and params.top_p < 1:
        raise VasError("--top-p is not supported with a remote base: VAS samples among the top-k candidates")


def _done_jobs(path: str | Path, resume: bool, warn: Log) -> set:
    """(prompt index, sample) pairs already in `path`: those a resumed run skips. A torn last
    record (an interrupted append) is cut off first."""
    from .data import drop_torn_tail

    f = Path(path)
    if str(path) == "-" or not f.exists() or f.stat().st_size == 0:
        return set()
    if not resume:
        raise VasError(f"--out {path} exists; pass --resume to continue it, or name another file")
    drop_torn_tail(f, log=lambda m: warn(f"vas decode: {m}"))
    done = set()
    for n, line in enumerate(f.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
            done.add((int(rec["index"]), int(rec["sample"])))
        except (ValueError, KeyError, TypeError):
            raise VasError(f"--out {path} line {n} is not a record of `vas decode`; it cannot be resumed") from None
    return done


def _local_batch(base, values, prompts, params, tok, pad, key, search, *, mesh, attention, restrict_to_topk) -> list:
    """One batch decoded here: plain sampling, VAS, or a blockwise search; a record per row."""
    import numpy as np

    import vas_jax

    from .tokenizer import end_of_turn_ids

    common = dict(
        key=key,
        max_new_tokens=params.max_new_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        eos_token_id=end_of_turn_ids(tok),
        pad_id=pad,
    )
    beta = np.asarray(params.beta, np.float32)
    if search is not None:
        from .blockwise import blockwise_decode

        r = blockwise_decode(base, values, prompts, beta=beta, rule=params.rule, **search, **common)
    elif values:
        r = vas_jax.vas_decode(
            base, values, prompts, beta=beta, top_k=params.top_k, restrict_to_topk=restrict_to_topk, rule=params.rule,
            mesh=mesh, attention=attention, **common,
        )  # fmt: skip
    else:
        r = vas_jax.generate(base, prompts, mesh=mesh, attention=attention, **common)
    if search is None:  # a sampled policy's log-ratio to the base
        about = [{"log_ratio": float(x)} for x in np.asarray(r.kl())]
    else:  # a search samples no log-ratio: blocks x the per-block bound
        bounds, blocks = np.asarray(r.kl_bound), np.asarray(r.blocks)
        about = [{"kl_bound": float(b), "blocks": int(n)} for b, n in zip(bounds, blocks, strict=True)]
    lp = np.asarray(r.logprobs).sum(-1)
    return [
        {
            "completion": tok.decode(toks, skip_special_tokens=True),
            "tokens": toks,
            "base_logprob": float(lp[row]),
            **about[row],
        }
        for row, toks in enumerate(r.token_lists())
    ]


def _remote_batch(endpoint, remote: RemoteBase, params, values, prompts, messages, jobs, tok, pad) -> list:
    """One batch decoded through the remote base; a record per row."""
    from .remote import remote_vas
    from .tokenizer import end_of_turn_ids

    res = remote_vas(
        endpoint,
        values,
        prompts,
        beta=list(params.beta),
        top_k=params.top_k,
        max_new_tokens=params.max_new_tokens,
        temperature=params.temperature,
        eos_token_id=end_of_turn_ids(tok),
        pad_id=pad,
        seed=params.seed,
        row_seeds=jobs,  # (prompt, sample): a completion's draws depend on nothing else
        speculative=remote.speculative,
        messages=messages if remote.mode != "exact" else None,
        tokenizer=tok,
        retokenize=remote.mode == "retokenize",
        end_texts=remote.end_texts,
    )
    return [
        {
            "completion": r.text if r.text is not None else tok.decode(r.tokens, skip_special_tokens=True),
            "tokens": r.tokens,
            "finish_reason": r.finished,
            # text mode: whether the endpoint's re-tokenisation of the answer matched these tokens
            "remote": {"mode": remote.mode, "speculative": remote.speculative, "round_trip": r.round_trip},
        }
        for r in res
    ]
