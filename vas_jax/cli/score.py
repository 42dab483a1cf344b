"""`vas score`: add a reward column to rollouts.

vas score --data runs/rollouts --reward-fn my_rewards:positivity
vas score --data runs/rollouts --reward-model RM_DIR --out runs/scored
"""

from __future__ import annotations


def add_arguments(p):
    from vas_jax.cli.args import positive_int

    p.add_argument("--data", required=True, help="rollout dataset directory (from `vas sample`)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--reward-fn",
        metavar="MODULE:FUNCTION",
        help="a Python function (prompts, responses) -> list of floats, importable from here",
    )
    src.add_argument("--reward-model", metavar="DIR", help="a *ForSequenceClassification directory (Flax, ours)")
    src.add_argument("--reward-torch", metavar="DIR", help="a reward model run with transformers' PyTorch")
    p.add_argument("--label", type=int, default=0, help="which output of a multi-label reward model")
    p.add_argument(
        "--separator",
        default=None,
        help="reward models: the text between prompt and response (default: the chat template when the "
        "reward model's tokenizer has one, else one space unless the prompt ends with whitespace)",
    )
    p.add_argument("--column", default="reward", help="name of the new column")
    p.add_argument("--batch-size", type=positive_int, default=64, help="responses per reward call")
    p.add_argument("--out", help="output directory (default: replace --data)")


def run(args):
    import json
    import shutil
    from pathlib import Path

    from vas_jax.data import NEW_SUFFIX, load_table, replace_dir
    from vas_jax.rewards import RewardModel, TorchRewardModel, load_reward_function, score_dataset

    if args.out:
        from vas_jax.cli.args import check_out_dir

        check_out_dir(args.out)
        o = Path(args.out)
        if o.exists() and any(o.iterdir()) and o.resolve() != Path(args.data).resolve():
            from vas_jax.errors import VasError

            raise VasError(f"--out {args.out!r} exists and is not empty; name a new directory (or none: add to --data)")
    if not args.out:  # the scored copy is written beside --data, then swapped in
        from vas_jax.cli.args import check_writable

        check_writable(Path(args.data).absolute().parent, "--data")
    ds = load_table(args.data)
    if args.reward_fn:
        reward = load_reward_function(args.reward_fn)
    elif args.reward_model:
        reward = RewardModel(args.reward_model, batch_size=args.batch_size, label=args.label, separator=args.separator)
    else:
        reward = TorchRewardModel(
            args.reward_torch, batch_size=args.batch_size, label=args.label, separator=args.separator
        )
    ds = score_dataset(ds, reward, batch_size=args.batch_size, column=args.column)
    out = Path(args.out or args.data)
    tmp = out.with_name(out.name + NEW_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    ds.save_to_disk(str(tmp))
    # the rollouts' settings go along, with this column's reward named (`vas train` stores the name)
    settings_file = Path(args.data) / "rollout_settings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    name = args.reward_fn or args.reward_model or args.reward_torch
    settings["rewards"] = {**settings.get("rewards", {}), args.column: name}
    (tmp / settings_file.name).write_text(json.dumps(settings, indent=2))
    replace_dir(tmp, out)  # never a moment without the rollouts in place
    r = ds[args.column]
    print(f"scored {len(r)} responses: mean {sum(r) / len(r):.4f}, min {min(r):.4f}, max {max(r):.4f} -> {out}")
