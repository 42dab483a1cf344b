"""`vas bench`: the demo's comparison on your own models.

    vas bench --base BASE --value V_POS --reward-fn my_rewards:positivity --prompts heldout.jsonl --out runs/bench
    vas bench --base BASE --value V1 --value V2 --reward-model RM1 --reward-model RM2 --prompts p.jsonl
    vas bench --base BASE --value V_POS --reward-fn my_rewards:positivity --prompts p.jsonl --blockwise 4:8 2:8

The first value model goes with the first reward (the beta grid and Best-of-N); with two of each, a
composed grid of (beta_1, beta_2) is run too. Rewards are Python functions or reward-model directories.
"""

from __future__ import annotations

PARENTS = ("dtype", "max_new_tokens", "vas_top_k", "rule")  # shared flags (vas_jax.cli.args)


def add_arguments(p):
    from vas_jax.cli.args import block_setting, finite_float, positive_int, power_of_two

    p.add_argument("--base", required=True, help="base model directory")
    p.add_argument("--value", action="append", required=True, metavar="DIR", help="value model directory (repeat)")
    p.add_argument(
        "--value-head",
        choices=["scalar", "vocab", "distributional"],
        help="accept a *ForCausalLM --value as a vocabulary-wide Q head (vocab)",
    )
    p.add_argument(
        "--reward-fn",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="a reward function per value model, in order (repeat)",
    )
    p.add_argument(
        "--reward-model",
        action="append",
        default=[],
        metavar="DIR",
        help="a reward model directory per value model, in order (repeat; after any --reward-fn)",
    )
    p.add_argument("--prompts", required=True, help="held-out prompts (.txt/.jsonl/.csv/.parquet/datasets dir)")
    p.add_argument("--prompt-field", default="prompt", help="the column that holds the prompt text")
    p.add_argument("--chat-template", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    p.add_argument("--max-prompts", type=positive_int, default=64, help="use at most this many prompts")
    p.add_argument(
        "--betas",
        type=finite_float,
        nargs="+",
        default=[0.5, 1, 2, 4, 8],
        help="the VAS beta grid for the first value model",
    )
    p.add_argument(
        "--composed",
        type=finite_float,
        nargs="*",
        default=[0, 0, 4, 0, 0, 4, 4, 4],
        help="flattened (beta_1, beta_2) pairs for the composed grid of the first two value models",
    )
    p.add_argument(
        "--blockwise",
        type=block_setting,
        nargs="+",
        default=[],
        metavar="K:L[:KEEP[:BETA[:RULE]]]",
        help="blockwise searches to compare, guided by the first value model: K continuations of L tokens, "
        "one kept by argmax (default) or sample, at BETA (default 1) under the mean (default) or soft rule; "
        "e.g. 4:8 4:16:sample:4",
    )
    p.add_argument("--samples", type=positive_int, default=8, help="samples per prompt for base and VAS")
    p.add_argument(
        "--bon-max", type=power_of_two, default=128, help="largest N of Best-of-N (N = 1, 2, 4, ...: a power of two)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--attention",
        default="xla",
        choices=["xla", "pallas"],
        help="decode-step attention for every run: XLA's, or one fused GPU kernel per layer (README)",
    )
    p.add_argument("--out", default="runs/bench", help="directory for report.json and the plots")


def run(args):
    import vas_jax
    from vas_jax.cli.args import check_out_dir
    from vas_jax.data import encode_prompts, read_prompts
    from vas_jax.decode_attention import check_attention
    from vas_jax.errors import VasError
    from vas_jax.flops import sequence_flops
    from vas_jax.harness import format_table, run_comparison, write_report
    from vas_jax.rewards import RewardModel, load_reward_function
    from vas_jax.values import check_prompting, load_value, value_meta

    check_out_dir(args.out)  # before any work: a bad --out must not cost the whole run
    rewards, rm_flops = {}, []
    short = [spec.rsplit(":", 1)[-1] for spec in args.reward_fn]  # a function's name, where unique
    for spec, name in zip(args.reward_fn, short):
        rewards[name if short.count(name) == 1 else spec] = load_reward_function(spec)
    for d in args.reward_model:
        rm = RewardModel(d)
        rewards[d] = rm
        rm_flops.append(rm.model.config)
    if len(rewards) != len(args.value):
        raise VasError(f"{len(args.value)} --value models but {len(rewards)} rewards; give one reward per value model")
    if len(args.composed) % 2:
        raise VasError("--composed takes pairs of betas")
    check_attention(args.attention)  # before any model is loaded
    for v in args.value:
        check_prompting(value_meta(v), args.chat_template, v)
    tok = vas_jax.load_tokenizer(args.base)
    base = vas_jax.load_model(args.base, dtype=args.dtype, fuse=True)
    values = [load_value(v, tok, head=args.value_head, dtype=args.dtype, fuse=True) for v in args.value]
    texts = read_prompts(args.prompts, args.prompt_field)[: args.max_prompts]
    prompts = encode_prompts(tok, texts, chat_template=args.chat_template)

    def reward_flops(n_tokens):  # every reward model scores every response once
        return sum(sequence_flops(c, n_tokens, 0) for c in rm_flops)

    pairs = list(zip(args.composed[::2], args.composed[1::2]))
    report = run_comparison(
        base,
        tok,
        prompts,
        values,
        rewards,
        betas=args.betas,
        composed=pairs,
        samples=args.samples,
        bon_max=args.bon_max,
        max_new_tokens=args.max_new_tokens,
        top_k=args.top_k,
        seed=args.seed,
        reward_flops=reward_flops,
        attention=args.attention,
        prompt_texts=texts,
        rule=args.rule,
        blockwise=args.blockwise,
    )
    write_report(report, args.out)
    print(format_table(report))
    print(f"\nreport: {args.out}/report.json")
