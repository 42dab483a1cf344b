"""`vas sample`: N responses per prompt from the frozen base model, as a resumable `datasets` dataset.

vas sample --base BASE_DIR --prompts prompts.jsonl --n 8 --out runs/rollouts
"""

from __future__ import annotations


def add_arguments(p):
    from vas_jax.cli.args import nonnegative_float, nonnegative_int, positive_int, probability
    from vas_jax.config import DTYPE_NAMES

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
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest response, in tokens")
    p.add_argument(
        "--temperature",
        type=nonnegative_float,
        default=1.0,
        help="sampling temperature (0 is greedy; 1 samples the base's own distribution)",
    )
    p.add_argument("--top-p", type=probability, default=1.0, help="nucleus filter: keep this much probability mass")
    p.add_argument("--top-k", type=nonnegative_int, default=0, help="keep only the k likeliest tokens (0 = off)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="responses per sampling call; a shard holds max(1, batch-size / n) prompts",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same rollouts")
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="parameter and compute dtype")


def run(args):
    import vas_jax
    from vas_jax.cli.args import check_out_dir
    from vas_jax.data import read_prompts
    from vas_jax.rollouts import sample_rollouts

    check_out_dir(args.out)
    texts = read_prompts(args.prompts, args.prompt_field)
    tok = vas_jax.load_tokenizer(args.base)
    base = vas_jax.load_model(args.base, dtype=args.dtype)
    ds = sample_rollouts(
        base,
        tok,
        texts,
        args.out,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        prompts_per_shard=max(1, args.batch_size // args.n),
        chat_template=args.chat_template,
        base_path=str(args.base),
        log=print,
    )
    eos = sum(ds["ended_with_eos"])
    print(f"{len(ds)} responses to {len(texts)} prompts in {args.out} ({eos} ended with EOS)")
