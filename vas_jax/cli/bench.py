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
    from vas_jax import pipeline
    from vas_jax.errors import VasError

    if len(args.composed) % 2:
        raise VasError("--composed takes pairs of betas")
    pipeline.bench(
        args.base,
        args.prompts,
        args.out,
        values=args.value,
        reward_fns=args.reward_fn,
        reward_models=args.reward_model,
        betas=args.betas,
        composed=list(zip(args.composed[::2], args.composed[1::2], strict=True)),
        blockwise=args.blockwise,
        samples=args.samples,
        bon_max=args.bon_max,
        max_new_tokens=args.max_new_tokens,
        top_k=args.top_k,
        rule=args.rule,
        seed=args.seed,
        prompt_field=args.prompt_field,
        chat_template=args.chat_template,
        max_prompts=args.max_prompts,
        value_head=args.value_head,
        dtype=args.dtype,
        attention=args.attention,
    )
