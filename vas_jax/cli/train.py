"""`vas train`: train a value model by TD(lambda) on scored rollouts; export it for `vas decode`.

vas train --data runs/scored --init SMALL_LM_DIR --base BASE_DIR --out runs/value
vas train ... --resume        # continue an interrupted run from its last checkpoint
"""

from __future__ import annotations


def add_arguments(p):
    from vas_jax.cli.args import (
        held_out_fraction,
        nonnegative_float,
        nonnegative_int,
        positive_float,
        positive_int,
        probability,
    )
    from vas_jax.config import DTYPE_NAMES

    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="scored rollouts (from `vas sample` + `vas score`); repeat to train on several together, e.g. "
        "the base's rollouts and an on-policy round's",
    )
    p.add_argument(
        "--reward-column",
        default="reward",
        help="the column of rewards to learn (`vas score --column`); it is normalised to mean 0 and "
        "standard deviation 1 for training, and the mean and scale are stored with the value model",
    )
    p.add_argument(
        "--init",
        help="LM the value model starts from: a small LM (its tokenizer must be the base's) or, with "
        "--init-layers, the base itself; a Hugging Face directory or a GGUF file",
    )
    p.add_argument(
        "--init-value",
        metavar="DIR",
        help="instead of --init: continue training this value model (an on-policy round), on rewards "
        "normalised with its stored mean and scale so that a beta keeps its meaning",
    )
    p.add_argument(
        "--init-layers",
        type=positive_int,
        default=None,
        metavar="N",
        help="keep only the first N layers of --init: a small value model made from the base itself "
        "(default: all layers)",
    )
    p.add_argument(
        "--base", help="the base model directory, to check the tokenizers match (default: the one the rollouts name)"
    )
    p.add_argument("--out", required=True, help="run directory: checkpoints/, metrics.jsonl, and the exported value/")
    p.add_argument(
        "--head",
        default="scalar",
        choices=["scalar", "vocab", "distributional"],
        help="scalar: V(prefix) head, saved as *ForSequenceClassification; vocab: Q(s, .) head; distributional: "
        "the final reward's distribution over --atoms atoms (needed by the soft guidance rule), saved as "
        "*ForSequenceClassification with one label per atom",
    )
    p.add_argument(
        "--atoms",
        type=positive_int,
        default=21,
        help="--head distributional: the number of atoms, evenly spaced over the normalised rewards' span "
        "widened by a quarter of it on each side (--init-value keeps its stored atoms; 51 trained far worse "
        "than 11-31 on the toy demo: BENCHMARKS.md)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    g = p.add_argument_group("TD(lambda)")
    g.add_argument("--gamma", type=probability, default=1.0, help="discount per token (1: no discount)")
    g.add_argument(
        "--lam",
        "--lambda",
        dest="lam",
        type=nonnegative_float,
        default=0.95,
        help="TD(lambda) trace: 0 bootstraps from the next value, 1 regresses on the final reward",
    )
    g.add_argument("--epochs", type=positive_int, default=2, help="epochs over each batch with its targets frozen")
    g.add_argument(
        "--mean-loss",
        type=nonnegative_float,
        default=1.0,
        help="--head distributional: weight of the mean's squared error beside the cross-entropy (0: none)",
    )
    g.add_argument(
        "--passes",
        type=positive_int,
        default=None,
        help="passes over all rollouts (default: enough for 400 updates, at most 20)",
    )
    g.add_argument(
        "--ema", type=nonnegative_float, default=0.0, help="> 0: bootstrap from an EMA target network with this decay"
    )
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="peak learning rate of AdamW (default: 3e-3 x 64 / the model's hidden size)",
    )
    o.add_argument("--warmup-steps", type=nonnegative_int, default=10, help="updates of linear warm-up")
    o.add_argument("--weight-decay", type=nonnegative_float, default=0.0, help="AdamW's decoupled weight decay")
    o.add_argument("--clip-norm", type=positive_float, default=1.0, help="clip gradients to this global norm")
    o.add_argument("--batch-size", type=positive_int, default=64, help="rollouts per TD batch")
    o.add_argument("--minibatch-size", type=positive_int, default=16, help="rollouts per optimizer update")
    o.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per update")
    o.add_argument(
        "--lora-rank", type=nonnegative_int, default=0, help="> 0: train LoRA adapters of this rank and the head only"
    )
    o.add_argument("--lora-alpha", type=nonnegative_float, default=0.0, help="LoRA scale numerator (0: the rank)")
    o.add_argument(
        "--compute-dtype",
        default="float32",
        choices=DTYPE_NAMES,
        help="activation dtype (parameters and optimizer state stay float32)",
    )
    o.add_argument("--seed", type=int, default=0, help="random seed of the shuffles and the held-out split")
    o.add_argument("--mesh", help="device mesh, e.g. data=2,fsdp=2,tensor=2 (default: all devices on data)")
    o.add_argument(
        "--data-shards",
        type=positive_int,
        help="shards of the rollouts, each shuffled on its own, every batch drawn equally from all "
        "(default: one per host; on a pod each host reads only its own). Set it to a pod's host "
        "count to reproduce that pod's run in one process",
    )
    c = p.add_argument_group("checkpoints and evaluation")
    c.add_argument("--save-every", type=positive_int, default=50, help="updates between checkpoints")
    c.add_argument("--keep", type=positive_int, default=3, help="checkpoints kept")
    c.add_argument(
        "--eval-fraction", type=held_out_fraction, default=0.1, help="fraction of rollouts held out to evaluate V"
    )
    c.add_argument(
        "--eval-every", type=nonnegative_int, default=0, help="also evaluate every N updates (0: at the end)"
    )
    c.add_argument(
        "--log-every",
        type=positive_int,
        default=10,
        help="fetch metrics from the device every N updates (one wait per fetch; a line per update is logged)",
    )


LOW_CORRELATION = 0.5  # below it, the value model guides little (train/default_sweep.py, BENCHMARKS.md)


def run(args):
    import sys
    from pathlib import Path

    import vas_jax
    from vas_jax.errors import VasError
    from vas_jax.guidance import value_atoms
    from vas_jax.rollout_batches import normalize_rewards
    from vas_jax.td import make_atoms
    from vas_jax.tokenizer import default_pad_id, tokenizer_hash
    from vas_jax.train import TrainConfig, clipped_share, init_value_model, load_rollouts, train_value
    from vas_jax.values import load_value, value_meta, write_value_meta

    cfg = TrainConfig(
        gamma=args.gamma,
        lam=args.lam,
        learning_rate=args.lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        clip_norm=args.clip_norm,
        batch_size=args.batch_size,
        minibatch_size=args.minibatch_size,
        grad_accum=args.grad_accum,
        epochs=args.epochs,
        passes=args.passes,
        ema=args.ema,
        mean_loss=args.mean_loss,
        compute_dtype=args.compute_dtype,
        seed=args.seed,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        save_every=args.save_every,
        keep=args.keep,
        eval_fraction=args.eval_fraction,
        eval_every=args.eval_every,
        log_every=args.log_every,
    )
    cfg.validate()
    from vas_jax.cli.args import check_out_dir

    check_out_dir(args.out)
    if (args.init is None) == (args.init_value is None):
        raise VasError("give the value model's start: --init LM (a new one) or --init-value DIR (continue one)")
    if args.init_value and args.init_layers:
        raise VasError("--init-layers cuts a new value model from --init; --init-value continues one as it is")
    stats = {}
    if args.init_value:
        meta = value_meta(args.init_value)
        if meta.get("reward_scale") is None:
            raise VasError(f"{args.init_value} stores no reward mean and scale; continue it with `vas train --resume`")
        stats = dict(mean=meta["reward_mean"], scale=meta["reward_scale"])
    ds, settings = _load_data(args.data, args.reward_column)
    ds, reward_mean, reward_scale = normalize_rewards(ds, args.reward_column, **stats)
    base_dir = args.base
    if base_dir is None:
        base_dir = settings.get("base")
    tok = vas_jax.load_tokenizer(args.init or args.init_value)
    if base_dir:
        from vas_jax.hub import resolve_model

        if args.base is None and not resolve_model(base_dir).exists():
            raise VasError(f"base model directory {base_dir!r} (named by the rollouts) does not exist; pass --base")
        vas_jax.check_same_tokenizer(vas_jax.load_tokenizer(base_dir), tok, names=("base", "value (--init)"))
    mesh = None
    if args.mesh or len(__import__("jax").devices()) > 1:
        from vas_jax.sharding import make_mesh

        mesh = make_mesh(args.mesh)
    data = load_rollouts(ds, pad_id=default_pad_id(tok), shards=args.data_shards, mesh=mesh)
    if args.head == "distributional" and args.gamma != 1:
        raise VasError(f"--head distributional trains with --gamma 1 (no discount), got --gamma {args.gamma}")
    if args.init_value:
        vm = load_value(args.init_value, tok, head=args.head)
    else:
        lm = vas_jax.load_model(args.init)
        if lm.config.head != "lm":
            raise VasError(f"--init {args.init} is not a causal LM checkpoint")
        atoms = make_atoms(ds["reward"], args.atoms) if args.head == "distributional" else None
        vm = init_value_model(lm, head=args.head, layers=args.init_layers, atoms=atoms)
    atoms = value_atoms(vm.config)
    clipped = clipped_share(ds["reward"], atoms) if atoms else 0.0
    if atoms:
        print(
            f"distributional head: {len(atoms)} atoms on [{atoms[0]:.2f}, {atoms[-1]:.2f}] (normalised reward); "
            f"{clipped:.1%} of the rewards lie outside them and are clipped to the end atoms"
        )
    trained, metrics = train_value(
        vm,
        data,
        args.out,
        cfg,
        resume=args.resume,
        mesh=mesh,
        run_info={
            "reward_column": args.reward_column,
            "init": str(args.init or args.init_value),
            "init_layers": args.init_layers,
            "head": args.head,
        },
    )
    import jax

    if jax.process_index() != 0:  # multi-host: process 0 exports
        return
    out = vas_jax.save_model(trained, Path(args.out) / "value", tokenizer=tok)
    write_value_meta(
        out,
        reward=(settings.get("rewards") or {}).get(args.reward_column, args.reward_column),
        reward_mean=reward_mean,
        reward_scale=reward_scale,
        base_tokenizer=tokenizer_hash(tok),
        chat_template=settings.get("chat_template"),
    )
    loss = metrics.get("loss")
    print(
        f"value model saved to {out}; final loss {'-' if loss is None else f'{loss:.4f}'}, "
        f"{metrics.get('tokens_per_s', 0):.0f} tokens/s"
    )
    corr = metrics.get("eval_corr")
    if corr is None:
        why = (
            "--eval-fraction 0" if args.eval_fraction == 0 else "too few rollouts to hold any out and fill a minibatch"
        )
        print(f"no held-out rollouts ({why}): the value model's quality is unmeasured")
        return
    print(f"held-out correlation of V with the returns: {corr:.3f} (RMSE {metrics['eval_rmse']:.3f})")
    if "eval_nll" in metrics:
        print(f"held-out NLL of the final reward under the predicted distribution: {metrics['eval_nll']:.3f} nats")
        gaps = {k.removeprefix("eval_tail_gap_beta"): v for k, v in metrics.items() if k.startswith("eval_tail_gap")}
        print(
            "tail calibration, predicted minus observed log E[exp(beta r)] at the first token (0 is exact, > 0 "
            "a tail too heavy for the soft rule): " + ", ".join(f"beta {b}: {v:+.2f}" for b, v in gaps.items())
        )
    if corr < LOW_CORRELATION:
        print(
            f"vas train: warning: a held-out correlation of {corr:.2f} is low: this value model will guide little; "
            "try more rollouts (vas sample --n), more --passes or a larger --lr",
            file=sys.stderr,
        )


def _load_data(paths: list, column: str):
    """The rollouts of every --data as one dataset (the columns training reads), and their
    settings (`vas sample`'s and `vas score`'s record), which must agree on the prompting."""
    import json
    from pathlib import Path

    import datasets

    from vas_jax.data import load_table
    from vas_jax.errors import VasError

    parts, settings = [], []
    for p in paths:
        ds = load_table(p)
        if column not in ds.column_names:
            have = ", ".join(c for c in ds.column_names if c.startswith("reward")) or "none"
            raise VasError(f"{p} has no {column!r} column (reward columns: {have}); score it with `vas score`")
        parts.append(ds)
        f = Path(p) / "rollout_settings.json"
        settings.append(json.loads(f.read_text()) if f.exists() else {})
    for p, s in zip(paths[1:], settings[1:]):
        if s.get("chat_template") != settings[0].get("chat_template"):
            raise VasError(f"{paths[0]} and {p} differ in --chat-template: train on rollouts prompted alike")
    if len(parts) == 1:
        return parts[0], settings[0]
    keep = ["prompt_ids", "response_ids", column]
    for p, ds in zip(paths, parts):
        missing = [c for c in keep if c not in ds.column_names]
        if missing:
            raise VasError(f"{p} has no {', '.join(missing)} column: make it with `vas sample`")
    return datasets.concatenate_datasets([ds.select_columns(keep) for ds in parts]), settings[0]
