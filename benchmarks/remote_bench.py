"""Remote VAS (a base behind an OpenAI-compatible API) against local `vas_decode`, in one run.

    python -m benchmarks.remote_bench                                   # the shipped tiny model
    python -m benchmarks.remote_bench --model smollm2 --value runs/demo-real/train-sentiment/value

The base is served by `vas serve` in this process (uvicorn thread, base only), on 127.0.0.1.

1. Traffic: tokens per second and requests per token of remote VAS, one-token mode and
   speculative mode (M tokens per request), greedy, as beta varies; the mean accepted draft length;
   local `vas_decode` (restrict_to_topk, the same k) on the same prompts, for tokens per second.
   Greedy tokens must equal across all of them; the run stops if they don't.
2. The price of seeing only the top k (SmolLM2 with the real demo's value model): reward and KL of
   sampled remote VAS (the guided distribution over the endpoint's top 20) against local VAS at the
   same beta (over the whole vocabulary), on the real demo's held-out prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

import vas_jax
from vas_jax.data import encode_prompts
from vas_jax.engine import Engine
from vas_jax.remote import Endpoint, remote_vas
from vas_jax.scheduler import Scheduler
from vas_jax.server import ServerConfig, ServerThread, create_app
from vas_jax.tokenizer import default_pad_id, end_of_turn_ids
from vas_jax.train import init_value_model

ROOT = Path(__file__).resolve().parent.parent


def setup(args):
    if args.model == "tiny":
        from vas_jax.demo import BASE_DIR, SMALL_DIR

        tok, base = vas_jax.load_tokenizer(BASE_DIR), vas_jax.load_model(BASE_DIR)
        vm = init_value_model(vas_jax.load_model(SMALL_DIR))
        vm.score.kernel.value = jax.random.normal(jax.random.key(1), vm.score.kernel.value.shape) * 0.5
        texts = [json.loads(x)["prompt"] for x in (ROOT / "examples/review-heldout.jsonl").read_text().splitlines()]
        prompts = [tok(t)["input_ids"] for t in texts[: args.prompts]]
        return tok, base, vm, prompts, None
    from benchmarks.real_model import gguf_path

    g = gguf_path()
    tok, base = vas_jax.load_tokenizer(g), vas_jax.load_model(g)
    if args.value:
        vm = vas_jax.load_model(args.value)
    else:
        vm = init_value_model(base, layers=2)
        vm.score.kernel.value = jax.random.normal(jax.random.key(1), vm.score.kernel.value.shape) * 0.05
    heldout = ROOT / "vas_jax/assets/real-prompts/heldout.jsonl"
    texts = [json.loads(x)["prompt"] for x in heldout.read_text().splitlines()][: args.prompts]
    return tok, base, vm, encode_prompts(tok, texts, chat_template=True), texts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--value", help="SmolLM2: a trained value model directory (default: random head, 2 layers)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--betas", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    ap.add_argument("--speculative", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--samples", type=int, default=2, help="part 2: samples per prompt")
    args = ap.parse_args()
    tok, base, vm, prompts, texts = setup(args)
    ends, pad = end_of_turn_ids(tok), default_pad_id(tok)
    ctx = min(256, base.config.max_position_embeddings)
    eng = Engine(base, [], slots=min(16, len(prompts)), max_len=ctx, eos_token_id=ends, pad_id=pad, top_logprobs=20)
    eng.warmup()
    sched = Scheduler(eng, max_queue=1024).start()
    srv = ServerThread(create_app(sched, tok, ServerConfig(model_name="base")))
    common = dict(top_k=args.top_k, max_new_tokens=args.new_tokens, eos_token_id=ends, pad_id=pad)
    print(f"{args.model}: {len(prompts)} prompts, {args.new_tokens} new tokens, k = {args.top_k}, greedy\n")
    print(f"{'beta':>5} {'mode':>14} {'tok/s':>8} {'req/tok':>8} {'accepted/req':>12}")
    try:
        for beta in args.betas:
            kw = dict(beta=beta, temperature=0.0, **common)
            remote_vas(Endpoint(srv.url + "/v1", "base"), [vm], prompts[:2], **{**kw, "max_new_tokens": 2})  # warm
            local = lambda beta=beta: vas_jax.vas_decode(  # noqa: E731
                base, vm, prompts, restrict_to_topk=True, key=jax.random.key(0), beta=beta, temperature=0.0,
                **{k: v for k, v in common.items()},
            )  # fmt: skip
            jax.block_until_ready(local().tokens)
            t = time.perf_counter()
            want = local()
            jax.block_until_ready(want.tokens)
            dt = time.perf_counter() - t
            want = want.token_lists()
            n_tok = sum(map(len, want))
            print(f"{beta:>5g} {'local':>14} {n_tok / dt:>8.1f} {'':>8} {'':>12}")
            for m in [1, *args.speculative]:
                ep = Endpoint(srv.url + "/v1", "base", concurrency=16)
                got = remote_vas(ep, [vm], prompts, speculative=m, **kw)
                if [r.tokens for r in got] != want:
                    bad = next(i for i, r in enumerate(got) if r.tokens != want[i])
                    raise SystemExit(f"beta {beta}, mode {m}: remote tokens differ from local at prompt {bad}")
                s = ep.stats
                name = "one-token" if m == 1 else f"speculative {m}"
                print(
                    f"{beta:>5g} {name:>14} {s.tokens / s.seconds:>8.1f} {s.requests / s.tokens:>8.3f} "
                    f"{s.tokens / s.requests:>12.2f}"
                )
        if texts is not None and args.value:
            price(args, tok, base, vm, prompts, texts, srv, ends, pad)
    finally:
        srv.stop()
        sched.stop()


def price(args, tok, base, vm, prompts, texts, srv, ends, pad):
    """Part 2: sampled remote VAS (top 20 only) against local VAS (the whole vocabulary)."""
    from vas_jax.text_rewards import sentiment

    n = args.samples
    rows = [p for p in prompts for _ in range(n)]
    seeds = [(i, s) for i in range(len(prompts)) for s in range(n)]
    print(f"\nsampled, temperature 1, {len(prompts)} held-out prompts x {n}: sentiment reward and KL to the base")
    print(f"{'beta':>5} {'where':>14} {'reward':>14} {'KL (nats)':>14}")
    for beta in args.betas:
        local = vas_jax.vas_decode(base, vm, rows, beta=beta, top_k=args.top_k, key=jax.random.key(1),
                                   max_new_tokens=args.new_tokens, eos_token_id=ends, pad_id=pad)  # fmt: skip
        ep = Endpoint(srv.url + "/v1", "base", concurrency=16)
        rem = remote_vas(ep, [vm], rows, beta=beta, top_k=args.top_k, max_new_tokens=args.new_tokens,
                         eos_token_id=ends, pad_id=pad, temperature=1.0, seed=1, row_seeds=seeds)  # fmt: skip
        for where, toks, kl in (
            ("local", local.token_lists(), np.asarray(local.kl())),
            ("remote top-20", [r.tokens for r in rem], np.array([r.log_ratio() for r in rem])),
        ):
            r = np.array(sentiment([], [tok.decode(t, skip_special_tokens=True) for t in toks]))
            per_p = r.reshape(len(prompts), n).mean(1)
            kl_p = kl.reshape(len(prompts), n).mean(1)
            se = per_p.std(ddof=1) / np.sqrt(len(per_p))
            kse = kl_p.std(ddof=1) / np.sqrt(len(kl_p))
            print(f"{beta:>5g} {where:>14} {per_p.mean():>8.3f}±{se:.3f} {kl_p.mean():>8.2f}±{kse:.2f}")


if __name__ == "__main__":
    main()
