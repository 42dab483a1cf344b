"""`vas sample`: N responses per prompt from the frozen base model, as a resumable `datasets` dataset.

vas sample --base BASE_DIR --prompts prompts.jsonl --n 8 --out runs/rollouts
vas sample ... --value runs/v/value --beta 2 --out runs/rollouts-r1   # from VAS: an on-policy round
"""

from __future__ import annotations

PARENTS = ("dtype", "max_new_tokens")  # shared flags (vas_jax.cli.args)


def add_arguments(p):
    from vas_jax.cli.args import finite_float, nonnegative_float, nonnegative_int, positive_int, probability

    p.add_argument("--base", required=True, help="base model directory (*ForCausalLM with its tokenizer)")
    p.add_argument(
        "--prompts",
        required=True,
        help="prompts: .txt (one a line), .jsonl, .csv, .parquet or a saved datasets directory",
    )
    p.add_argument("--prompt-field", default="prompt", help="the column that holds the prompt text")
    p.add_argument("--chat-template", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    p.add_argument("--out", required=True, help="output dataset directory; rerun the same command to resume")
    p.add_argument("--n", type=positive_int, default=8, help="responses per prompt")
    p.add_argument(
        "--temperature",
        type=nonnegative_float,
        default=1.0,
        help="sampling temperature (0 is greedy; 1 samples the base's own distribution)",
    )
    p.add_argument("--top-p", type=probability, default=1.0, help="nucleus filter: keep this much probability mass")
    p.add_argument(
        "--top-k",
        type=nonnegative_int,
        default=0,
        help="keep only the k likeliest tokens (0 = off); with --value, the candidates VAS scores (0: 20)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="responses per sampling call; a shard holds max(1, batch-size / n) prompts",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same rollouts")
    g = p.add_argument_group("on-policy rounds: sample from VAS instead of the base")
    g.add_argument(
        "--value",
        action="append",
        default=[],
        metavar="DIR",
        help="a value model guiding the samples (repeat); score them and continue its training with "
        "`vas train --data BASE_ROLLOUTS --data THESE --init-value DIR`",
    )
    g.add_argument("--beta", type=finite_float, nargs="+", help="guidance strength, one or one per --value")


def run(args):
    from vas_jax import pipeline

    pipeline.sample(
        args.base,
        args.prompts,
        args.out,
        n=args.n,
        prompt_field=args.prompt_field,
        chat_template=args.chat_template,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        batch_size=args.batch_size,
        seed=args.seed,
        values=args.value,
        beta=args.beta,
        dtype=args.dtype,
    )
