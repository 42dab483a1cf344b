"""`vas decode`: value-guided decoding (or plain sampling) from checkpoint directories to JSONL.

vas decode --base BASE_DIR --value VALUE_DIR --beta 2.0 --prompt "Once upon a time"
vas decode --base BASE_DIR --value A --value B --beta 1.0 --beta 0.5 --prompts prompts.jsonl --out out.jsonl
vas decode --base BASE_DIR --value VALUE_DIR --block 8 --block-samples 4 --prompt "Once upon a time"
"""

from __future__ import annotations

import json
import sys

from vas_jax.errors import VasError

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


def _done_jobs(path: str, resume: bool) -> set:
    """(prompt index, sample) pairs already in --out: those a resumed run skips."""
    from pathlib import Path

    f = Path(path)
    if path == "-" or not f.exists() or f.stat().st_size == 0:
        return set()
    if not resume:
        raise VasError(f"--out {path} exists; pass --resume to continue it, or name another file")
    import sys

    from vas_jax.data import drop_torn_tail

    drop_torn_tail(f, log=lambda m: print(f"vas decode: {m}", file=sys.stderr))
    done = set()
    for n, line in enumerate(f.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
            done.add((int(rec["index"]), int(rec["sample"])))
        except (ValueError, KeyError, TypeError):
            raise VasError(f"--out {path} line {n} is not a record of `vas decode`; it cannot be resumed") from None
    return done


def run(args):
    import jax
    from tqdm import tqdm

    import vas_jax
    from vas_jax.data import encode_prompts, read_prompts
    from vas_jax.tokenizer import default_pad_id
    from vas_jax.values import check_prompting, load_value, value_meta

    if (args.base is None) == (args.base_url is None):
        raise VasError("give the base as --base DIR (local) or --base-url URL --base-model NAME (remote), one of them")
    remote = args.base_url is not None
    if remote and not args.base_model:
        raise VasError("--base-url needs --base-model: the name the API serves the base under")
    if remote and not args.value:
        raise VasError("a remote base needs --value: only the value models run here")
    if args.beta is None:
        betas = [1.0] * len(args.value)
    elif len(args.beta) == 1:
        betas = args.beta * len(args.value)
    elif len(args.beta) != len(args.value):
        raise VasError(
            f"{len(args.beta)} --beta values for {len(args.value)} --value models; give one per model or one"
        )
    else:
        betas = args.beta
    if args.out != "-":
        from vas_jax.outputs import check_out_file

        check_out_file(args.out)
    finished = _done_jobs(args.out, args.resume)
    texts = list(args.prompt) if args.prompt else read_prompts(args.prompts, args.prompt_field)
    tok = vas_jax.load_tokenizer(args.tokenizer or args.value[0] if remote else args.base)
    mesh = None
    if args.mesh:
        from vas_jax.sharding import make_mesh

        mesh = make_mesh(args.mesh)
    from vas_jax.decode_attention import check_attention

    check_attention(args.attention)  # before any model is loaded
    for d in args.value:
        check_prompting(value_meta(d), args.chat_template, d)
    if remote and args.remote_mode != "exact" and not args.chat_template:
        raise VasError(
            f"--remote-mode {args.remote_mode} talks to a chat endpoint: add --chat-template (the value models' prompt)"
        )
    if args.tokenizer and args.remote_mode == "retokenize":
        raise VasError("--remote-mode retokenize reads the value models' own tokenizer: drop --tokenizer")
    if args.end_text and not (remote and args.remote_mode == "retokenize"):
        raise VasError("--end-text is for --remote-mode retokenize (the other modes know the end token's id)")
    if remote and args.rule != "mean":
        raise VasError("--rule soft needs distributional value heads, which remote VAS does not take: use --rule mean")
    if args.block is not None:
        if remote or not args.value:
            raise VasError("--block searches with a local --base and at least one --value")
        for flag, bad in (("--mesh", args.mesh), ("--restrict-to-topk", args.restrict_to_topk),
                          ("--attention pallas", args.attention != "xla")):  # fmt: skip
            if bad:
                raise VasError(f"{flag} is for tokenwise decoding; drop it with --block")
    if remote and args.top_p < 1:
        raise VasError("--top-p is not supported with a remote base: VAS samples among the top-k candidates")
    base = None if remote else vas_jax.load_model(args.base, dtype=args.dtype, mesh=mesh, fuse=True)
    values = [load_value(d, tok, head=args.value_head, dtype=args.dtype, mesh=mesh, fuse=True) for d in args.value]
    ids = encode_prompts(tok, texts, chat_template=args.chat_template)
    # batches are fixed slices of every job, each keyed by its position: a resumed run decodes the
    # batches left exactly as an uninterrupted run would (same rows, same key), so nothing repeats
    every = [(i, s) for i in range(len(texts)) for s in range(args.samples)]
    batches = [
        (start, every[start : start + args.batch_size])
        for start in range(0, len(every), args.batch_size)
        if any(j not in finished for j in every[start : start + args.batch_size])
    ]
    pad = default_pad_id(tok)
    out = sys.stdout if args.out == "-" else open(args.out, "a")
    key = jax.random.key(args.seed)
    endpoint = None
    if remote:
        import os

        from vas_jax.remote import Endpoint

        endpoint = Endpoint(
            args.base_url,
            args.base_model,
            api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
            concurrency=args.concurrency,
            max_retries=args.max_retries,
        )
    try:
        for start, batch in tqdm(batches, desc="decode", unit="batch", disable=len(batches) <= 1):
            prompts = [ids[i] for i, _ in batch]
            if remote:
                msgs = [[{"role": "user", "content": texts[i]}] for i, _ in batch]
                records = _remote_batch(args, endpoint, values, prompts, msgs, batch, betas, tok, pad)
            else:
                records = _local_batch(
                    args, base, values, prompts, betas, tok, pad, mesh, jax.random.fold_in(key, start)
                )
            for (i, s), rec in zip(batch, records):
                if (i, s) in finished:  # a batch cut short by a torn write: only its missing records
                    continue
                rec = {"index": i, "prompt": texts[i], "sample": s, **rec, "beta": betas}
                if values:
                    rec["rule"] = args.rule
                if args.block is not None:
                    rec["blockwise"] = {"block": args.block, "block_samples": args.block_samples, "keep": args.keep}
                out.write(json.dumps(rec, allow_nan=False) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    if endpoint is not None:
        print(f"vas decode: {endpoint.stats}", file=sys.stderr)


def _local_batch(args, base, values, prompts, betas, tok, pad, mesh, key) -> list[dict]:
    import numpy as np

    import vas_jax
    from vas_jax.tokenizer import end_of_turn_ids

    common = dict(
        key=key,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        eos_token_id=end_of_turn_ids(tok),
        pad_id=pad,
        mesh=mesh,
        attention=args.attention,
    )
    if args.block is not None:
        from vas_jax.blockwise import blockwise_decode

        common.pop("mesh"), common.pop("attention")
        r = blockwise_decode(
            base, values, prompts, beta=np.asarray(betas, np.float32), block=args.block,
            block_samples=args.block_samples, keep=args.keep, rule=args.rule, **common,
        )  # fmt: skip
    elif values:
        r = vas_jax.vas_decode(
            base,
            values,
            prompts,
            beta=np.asarray(betas, np.float32),
            top_k=args.top_k,
            restrict_to_topk=args.restrict_to_topk,
            rule=args.rule,
            **common,
        )
    else:
        r = vas_jax.generate(base, prompts, **common)
    if args.block is None:  # a sampled policy's log-ratio to the base
        about = [{"log_ratio": float(x)} for x in np.asarray(r.kl())]
    else:  # a search samples no log-ratio: blocks x the per-block bound
        about = [{"kl_bound": float(b), "blocks": int(n)} for b, n in zip(np.asarray(r.kl_bound), np.asarray(r.blocks))]
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


def _remote_batch(args, endpoint, values, prompts, messages, jobs, betas, tok, pad) -> list[dict]:
    from vas_jax.remote import remote_vas
    from vas_jax.tokenizer import end_of_turn_ids

    res = remote_vas(
        endpoint,
        values,
        prompts,
        beta=betas,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        eos_token_id=end_of_turn_ids(tok),
        pad_id=pad,
        seed=args.seed,
        row_seeds=jobs,  # (prompt, sample): a completion's draws depend on nothing else
        speculative=args.speculative,
        messages=messages if args.remote_mode != "exact" else None,
        tokenizer=tok,
        retokenize=args.remote_mode == "retokenize",
        end_texts=args.end_text,
    )
    return [
        {
            "completion": r.text if r.text is not None else tok.decode(r.tokens, skip_special_tokens=True),
            "tokens": r.tokens,
            "finish_reason": r.finished,
            # text mode: whether the endpoint's re-tokenisation of the answer matched these tokens
            "remote": {"mode": args.remote_mode, "speculative": args.speculative, "round_trip": r.round_trip},
        }
        for r in res
    ]
