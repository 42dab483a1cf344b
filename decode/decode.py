"""`vas decode`: value-guided decoding (or plain sampling) from checkpoint directories to JSONL.

    vas decode --base BASE_DIR --value VALUE_DIR --beta 2.0 --prompt "Once upon a time"
    vas decode --base BASE_DIR --value A --value B --beta 1.0 --beta 0.5 --prompts prompts.jsonl --out out.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vas_jax.errors import VasError


def add_arguments(p):
    p.add_argument("--base", required=True, help="base model directory (a *ForCausalLM checkpoint with its tokenizer)")
    p.add_argument("--value", action="append", default=[], metavar="DIR",
                   help="value model directory; repeat to compose several (none: plain sampling)")
    p.add_argument("--beta", action="append", type=float, default=None, metavar="B",
                   help="guidance strength; one per --value, or one for all (default 1.0)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt; repeat for several")
    src.add_argument("--prompts", metavar="FILE",
                     help="a .txt file (one prompt a line), .jsonl, .csv, .parquet or a saved datasets directory")
    p.add_argument("--prompt-field", default="prompt", help="the field holding the prompt in a .jsonl file")
    p.add_argument("--chat-template", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    p.add_argument("--top-k", type=int, default=20, help="candidates re-ranked by the value models per step")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--restrict-to-topk", action="store_true", help="sample only among the top-k candidates")
    p.add_argument("--samples", type=int, default=1, help="completions per prompt")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--mesh", help="device mesh, e.g. data=4,tensor=2 (parameters tensor-parallel, batch over data)")
    p.add_argument("--attention", default="xla", choices=["xla", "pallas"],
                   help="decode-step attention: XLA's, or one fused GPU kernel per layer (see README)")
    p.add_argument("--out", default="-", help="output JSONL file ('-' for standard output)")


def read_prompts(args) -> list[str]:
    if args.prompt:
        return list(args.prompt)
    path = Path(args.prompts)
    if not path.exists():
        raise VasError(f"prompt file {str(path)!r} does not exist")
    if path.is_dir() or path.suffix.lower() in (".csv", ".parquet", ".json"):
        from vas_jax.data import read_prompts as read_table_prompts

        return read_table_prompts(path, args.prompt_field)
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if path.suffix == ".jsonl":
        out = []
        for i, ln in enumerate(lines):
            try:
                row = json.loads(ln)
            except json.JSONDecodeError:
                raise VasError(f"{path}:{i + 1} is not valid JSON") from None
            if args.prompt_field not in row:
                raise VasError(f"{path}:{i + 1} has no field {args.prompt_field!r}; set --prompt-field")
            out.append(str(row[args.prompt_field]))
        lines = out
    if not lines:
        raise VasError(f"prompt file {str(path)!r} holds no prompts")
    return lines


def run(args):
    import jax
    import numpy as np
    from tqdm import tqdm

    import vas_jax
    from vas_jax.data import encode_prompts

    if args.beta is None:
        betas = [1.0] * len(args.value)
    elif len(args.beta) == 1:
        betas = args.beta * len(args.value)
    elif len(args.beta) != len(args.value):
        raise VasError(f"{len(args.beta)} --beta values for {len(args.value)} --value models; give one per model or one")
    else:
        betas = args.beta
    if args.batch_size < 1 or args.samples < 1:
        raise VasError("--batch-size and --samples must be at least 1")
    tok = vas_jax.load_tokenizer(args.base)
    mesh = None
    if args.mesh:
        from vas_jax.sharding import make_mesh

        mesh = make_mesh(args.mesh)
    from vas_jax.decode_attention import check_attention

    check_attention(args.attention)  # before any model is loaded
    base = vas_jax.load_model(args.base, dtype=args.dtype, mesh=mesh, fuse=True)
    values = []
    for d in args.value:
        if any((Path(d) / n).exists() for n in ("tokenizer.json", "tokenizer_config.json")):
            vas_jax.check_same_tokenizer(tok, vas_jax.load_tokenizer(d), names=("base", f"value ({d})"))
        values.append(vas_jax.load_model(d, dtype=args.dtype, mesh=mesh, fuse=True))
    texts = read_prompts(args)
    ids = encode_prompts(tok, texts, chat_template=args.chat_template)
    jobs = [(i, s) for i in range(len(texts)) for s in range(args.samples)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    key = jax.random.key(args.seed)
    try:
        for start in tqdm(range(0, len(jobs), args.batch_size), desc="decode", unit="batch", disable=len(jobs) <= args.batch_size):
            batch = jobs[start:start + args.batch_size]
            prompts = [ids[i] for i, _ in batch]
            k = jax.random.fold_in(key, start)
            common = dict(key=k, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_p=args.top_p, eos_token_id=tok.eos_token_id, pad_id=pad, mesh=mesh,
                          attention=args.attention)
            if values:
                r = vas_jax.vas_decode(base, values, prompts, beta=np.asarray(betas, np.float32), top_k=args.top_k,
                                       restrict_to_topk=args.restrict_to_topk, **common)
            else:
                r = vas_jax.generate(base, prompts, **common)
            kl = np.asarray(r.kl())
            lp = np.asarray(r.logprobs).sum(-1)
            for row, ((i, s), toks) in enumerate(zip(batch, r.token_lists())):
                rec = {"prompt": texts[i], "sample": s, "completion": tok.decode(toks, skip_special_tokens=True),
                       "tokens": toks, "beta": betas, "base_logprob": float(lp[row]), "log_ratio": float(kl[row])}
                out.write(json.dumps(rec) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
