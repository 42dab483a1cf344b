"""`vas decode`: value-guided decoding (or plain sampling) from checkpoint directories to JSONL.

vas decode --base BASE_DIR --value VALUE_DIR --beta 2.0 --prompt "Once upon a time"
vas decode --base BASE_DIR --value A --value B --beta 1.0 --beta 0.5 --prompts prompts.jsonl --out out.jsonl
vas decode --base BASE_DIR --value VALUE_DIR --block 8 --block-samples 4 --prompt "Once upon a time"
"""

from __future__ import annotations

import sys

PARENTS = ("dtype", "max_new_tokens", "vas_top_k", "rule")  # shared flags (vas_jax.cli.args)


def add_arguments(p):
    from vas_jax.cli.args import finite_float, nonnegative_float, nonnegative_int, positive_int, probability

    p.add_argument("--base", help="base model directory (a *ForCausalLM checkpoint with its tokenizer)")
    p.add_argument(
        "--value",
        action="append",
        default=[],
        metavar="DIR",
        help="value model directory; repeat to compose several (none: plain sampling)",
    )
    p.add_argument(
        "--value-head",
        choices=["scalar", "vocab", "distributional"],
        help="accept a *ForCausalLM --value as a vocabulary-wide Q head (vocab); by default only "
        "value models trained by `vas train` are accepted",
    )
    p.add_argument(
        "--beta",
        action="append",
        type=finite_float,
        default=None,
        metavar="B",
        help="guidance strength, in logits per unit of centred value; one per --value, or one for all (default: 1.0)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt; repeat for several")
    src.add_argument(
        "--prompts",
        metavar="FILE",
        help="a .txt file (one prompt a line), .jsonl, .csv, .parquet or a saved datasets directory",
    )
    p.add_argument("--prompt-field", default="prompt", help="the field holding the prompt in a table file")
    p.add_argument("--chat-template", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    p.add_argument(
        "--temperature",
        type=nonnegative_float,
        default=1.0,
        help="temperature of the guided distribution (0 is greedy)",
    )
    p.add_argument("--top-p", type=probability, default=1.0, help="nucleus filter on the guided distribution")
    p.add_argument("--restrict-to-topk", action="store_true", help="sample only among the top-k candidates")
    p.add_argument("--samples", type=positive_int, default=1, help="completions per prompt")
    p.add_argument("--batch-size", type=positive_int, default=16, help="completions decoded together")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--mesh", help="device mesh, e.g. data=4,tensor=2 (parameters tensor-parallel, batch over data)")
    p.add_argument(
        "--attention",
        default="xla",
        choices=["xla", "pallas"],
        help="decode-step attention: XLA's, or one fused GPU kernel per layer (see README)",
    )
    p.add_argument("--out", default="-", help="output JSONL file ('-' for standard output)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: keep --out's finished prompts and decode only the rest",
    )
    b = p.add_argument_group("blockwise search (instead of tokenwise VAS; vas_jax.blockwise)")
    b.add_argument(
        "--block",
        type=positive_int,
        metavar="L",
        help="search by blocks of L tokens: the base samples --block-samples continuations of each block and "
        "the value models keep one (--temperature and --top-p are then the base's)",
    )
    b.add_argument(
        "--block-samples", type=positive_int, default=4, metavar="K", help="continuations per block (default: 4)"
    )
    b.add_argument(
        "--keep",
        choices=["argmax", "sample"],
        default="argmax",
        help="which continuation is kept: the best by beta x value, or one drawn from softmax(beta x value) "
        "(with --rule soft: from the soft values); KL to the base is at most log K - (K-1)/K per block for "
        "argmax, log K for a draw",
    )
    r = p.add_argument_group("a remote base (instead of --base): VAS through an OpenAI-compatible API")
    r.add_argument("--base-url", metavar="URL", help="the API's base URL, e.g. http://127.0.0.1:8000/v1")
    r.add_argument("--base-model", metavar="NAME", help="the model name the API serves the base under")
    r.add_argument("--api-key", help="the API's key (default: $OPENAI_API_KEY)")
    r.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="the base's tokenizer (default: the first --value's, which must be the base's)",
    )
    r.add_argument(
        "--speculative",
        type=positive_int,
        default=1,
        metavar="M",
        help="tokens asked per request; the endpoint's own continuation is a draft that VAS accepts or cuts",
    )
    r.add_argument(
        "--remote-mode",
        choices=["exact", "text", "retokenize"],
        default="exact",
        help="exact: token-id completions (return_tokens_as_token_ids); text: chat with top_logprobs, the "
        "answer re-tokenised by the endpoint (needs --chat-template); retokenize: text mode for a base whose "
        "tokenizer differs from the value models' (each candidate's text re-encoded with theirs; slower)",
    )
    r.add_argument(
        "--end-text",
        action="append",
        metavar="TEXT",
        help="retokenize mode: a candidate text that ends the answer, the base's end-of-turn token "
        "(repeatable; default: the value models' end-of-turn tokens)",
    )
    r.add_argument("--concurrency", type=positive_int, default=8, help="requests in flight at once")
    r.add_argument(
        "--max-retries", type=nonnegative_int, default=4, help="retries of a 429 or 5xx answer, with backoff"
    )


def run(args):

    from vas_jax import pipeline
    from vas_jax.data import read_prompts
    from vas_jax.params import SamplingParams

    remote = None
    if args.base_url is not None:
        remote = pipeline.RemoteBase(
            args.base_url,
            args.base_model,
            api_key=args.api_key,
            mode=args.remote_mode,
            speculative=args.speculative,
            end_texts=args.end_text,
            concurrency=args.concurrency,
            max_retries=args.max_retries,
        )
    params = SamplingParams(
        beta=tuple(pipeline.betas_for(args.beta, len(args.value))),
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        rule=args.rule,
    )
    pipeline.decode(
        list(args.prompt) if args.prompt else read_prompts(args.prompts, args.prompt_field),
        args.out,
        params,
        base=args.base,
        remote=remote,
        values=args.value,
        samples=args.samples,
        batch_size=args.batch_size,
        chat_template=args.chat_template,
        resume=args.resume,
        tokenizer=args.tokenizer,
        value_head=args.value_head,
        dtype=args.dtype,
        mesh=args.mesh,
        attention=args.attention,
        restrict_to_topk=args.restrict_to_topk,
        block=args.block,
        block_samples=args.block_samples,
        keep=args.keep,
        warn=lambda line: print(line, file=sys.stderr),
    )
