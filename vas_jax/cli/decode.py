"""`vas decode`: value-guided decoding (or plain sampling) from checkpoint directories to JSONL.

vas decode --base BASE_DIR --value VALUE_DIR --beta 2.0 --prompt "Once upon a time"
vas decode --base BASE_DIR --value A --value B --beta 1.0 --beta 0.5 --prompts prompts.jsonl --out out.jsonl
"""

from __future__ import annotations

import json
import sys

from vas_jax.errors import VasError


def add_arguments(p):
    from vas_jax.cli.args import finite_float, nonnegative_float, positive_int, probability
    from vas_jax.config import DTYPE_NAMES

    p.add_argument("--base", required=True, help="base model directory (a *ForCausalLM checkpoint with its tokenizer)")
    p.add_argument(
        "--value",
        action="append",
        default=[],
        metavar="DIR",
        help="value model directory; repeat to compose several (none: plain sampling)",
    )
    p.add_argument(
        "--value-head",
        choices=["scalar", "vocab"],
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
    p.add_argument("--top-k", type=positive_int, default=20, help="candidates re-ranked by the value models per step")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest completion, in tokens")
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
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="parameter and compute dtype")
    p.add_argument("--mesh", help="device mesh, e.g. data=4,tensor=2 (parameters tensor-parallel, batch over data)")
    p.add_argument(
        "--attention",
        default="xla",
        choices=["xla", "pallas"],
        help="decode-step attention: XLA's, or one fused GPU kernel per layer (see README)",
    )
    p.add_argument("--out", default="-", help="output JSONL file ('-' for standard output)")


def run(args):
    import jax
    import numpy as np
    from tqdm import tqdm

    import vas_jax
    from vas_jax.data import encode_prompts, read_prompts
    from vas_jax.tokenizer import default_pad_id, end_of_turn_ids
    from vas_jax.values import check_prompting, load_value, value_meta

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
        from vas_jax.cli.args import check_out_file

        check_out_file(args.out)
    texts = list(args.prompt) if args.prompt else read_prompts(args.prompts, args.prompt_field)
    tok = vas_jax.load_tokenizer(args.base)
    mesh = None
    if args.mesh:
        from vas_jax.sharding import make_mesh

        mesh = make_mesh(args.mesh)
    from vas_jax.decode_attention import check_attention

    check_attention(args.attention)  # before any model is loaded
    for d in args.value:
        check_prompting(value_meta(d), args.chat_template, d)
    base = vas_jax.load_model(args.base, dtype=args.dtype, mesh=mesh, fuse=True)
    values = [load_value(d, tok, head=args.value_head, dtype=args.dtype, mesh=mesh, fuse=True) for d in args.value]
    ids = encode_prompts(tok, texts, chat_template=args.chat_template)
    jobs = [(i, s) for i in range(len(texts)) for s in range(args.samples)]
    pad = default_pad_id(tok)
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    key = jax.random.key(args.seed)
    try:
        for start in tqdm(
            range(0, len(jobs), args.batch_size), desc="decode", unit="batch", disable=len(jobs) <= args.batch_size
        ):
            batch = jobs[start : start + args.batch_size]
            prompts = [ids[i] for i, _ in batch]
            k = jax.random.fold_in(key, start)
            common = dict(
                key=k,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                top_p=args.top_p,
                eos_token_id=end_of_turn_ids(tok),
                pad_id=pad,
                mesh=mesh,
                attention=args.attention,
            )
            if values:
                r = vas_jax.vas_decode(
                    base,
                    values,
                    prompts,
                    beta=np.asarray(betas, np.float32),
                    top_k=args.top_k,
                    restrict_to_topk=args.restrict_to_topk,
                    **common,
                )
            else:
                r = vas_jax.generate(base, prompts, **common)
            kl = np.asarray(r.kl())
            lp = np.asarray(r.logprobs).sum(-1)
            for row, ((i, s), toks) in enumerate(zip(batch, r.token_lists())):
                rec = {
                    "prompt": texts[i],
                    "sample": s,
                    "completion": tok.decode(toks, skip_special_tokens=True),
                    "tokens": toks,
                    "beta": betas,
                    "base_logprob": float(lp[row]),
                    "log_ratio": float(kl[row]),
                }
                out.write(json.dumps(rec, allow_nan=False) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
