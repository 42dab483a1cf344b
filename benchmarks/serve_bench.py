"""`vas serve` under load against static batching, measured side by side in one run.

    python -m benchmarks.serve_bench                    # the shipped tiny model, 200 requests
    python -m benchmarks.serve_bench --model smollm2 --requests 64

The load: `--requests` streamed completions, `--concurrency` at a time (closed loop), mixed prompt
lengths and max_tokens, half with a value model at a random beta and half plain; sampled at
temperature 1 with a seed each. The server runs in this process (uvicorn thread, openai client
threads) with as many slots as the concurrency.

1. Throughput (completion tokens per second), time to first token and end-to-end latency
   (p50/p99), against the same requests through `vas_decode` in static batches of the concurrency's
   size (each batch runs to the longest max_tokens: that is what static batching costs).
2. Half load (concurrency / 2, same slots; the clients ramp up over one full-load median latency
   rather than all sending at once at the start): time to first token p99 / p50.
3. No value model in use: the same load with every beta 0 on a server with value models loaded,
   against a server without them; and against `generate` in static batches.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import time
from pathlib import Path

import jax
import numpy as np
import openai

import vas_jax
from vas_jax.engine import Engine
from vas_jax.scheduler import Scheduler
from vas_jax.server import ServerConfig, ServerThread, create_app
from vas_jax.tokenizer import default_pad_id, end_of_turn_ids
from vas_jax.train import init_value_model

ROOT = Path(__file__).resolve().parent.parent


def setup(model: str):
    if model == "tiny":
        from vas_jax.demo import BASE_DIR, SMALL_DIR

        tok, base = vas_jax.load_tokenizer(BASE_DIR), vas_jax.load_model(BASE_DIR, fuse=True)
        vm = init_value_model(vas_jax.load_model(SMALL_DIR))
        scale = 0.5
        texts = [json.loads(x)["prompt"] for x in (ROOT / "examples/review-prompts.jsonl").read_text().splitlines()]
        prompts = [tok(t)["input_ids"] for t in texts]
        lengths = (4, 48)
    else:
        from benchmarks.real_model import TOPICS, gguf_path

        g = gguf_path()
        tok, base = vas_jax.load_tokenizer(g), vas_jax.load_model(g)
        vm = init_value_model(base, layers=4)
        scale = 0.05
        asks = ["Write two sentences about {}.", "Describe {} in one short paragraph for a child.", "Name {}."]
        prompts = [
            list(tok.apply_chat_template([{"role": "user", "content": a.format(t)}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"])
            for t in TOPICS for a in asks
        ]  # fmt: skip
        lengths = (8, 48)
    vm.score.kernel.value = jax.random.normal(jax.random.key(1), vm.score.kernel.value.shape) * scale
    return tok, base, vm, prompts, lengths


def workload(prompts, n: int, lengths, seed: int = 0, values: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        beta = float(rng.uniform(0.5, 3.0)) if values and i % 2 else 0.0
        out.append(dict(prompt=prompts[int(rng.integers(len(prompts)))], max_tokens=int(rng.integers(*lengths)),
                        beta=beta, seed=i))  # fmt: skip
    return out


def run_server(url: str, jobs: list[dict], concurrency: int, value_name: str | None, ramp: float = 0.0) -> dict:
    """Closed loop: `concurrency` clients, each sending its next request when the last one ends. The
    clients start `ramp` seconds apart in all (a ramp-up), so their requests do not all arrive at
    the same instant, once, at the start."""
    c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    t_start = time.perf_counter()

    def one(i_job):
        i, job = i_job
        if i < concurrency:
            time.sleep(max(0.0, t_start + i * ramp / concurrency - time.perf_counter()))
        t0 = time.perf_counter()
        extra = {"vas": {"values": {value_name: job["beta"]}}} if value_name and job["beta"] else {}
        stream = c.completions.create(
            model="m",
            prompt=job["prompt"],
            max_tokens=job["max_tokens"],
            seed=job["seed"],
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra,
        )
        first, tokens = None, 0
        for chunk in stream:
            if first is None and chunk.choices:
                first = time.perf_counter() - t0
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return first, time.perf_counter() - t0, tokens

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        res = list(pool.map(one, enumerate(jobs)))
    wall = time.perf_counter() - t
    ttft, e2e, toks = (np.array(x, float) for x in zip(*res))
    return dict(tokens=int(toks.sum()), wall=wall, tok_s=float(toks.sum() / wall), **_pcts("ttft", ttft),
                **_pcts("e2e", e2e))  # fmt: skip


def _pcts(name, x) -> dict:
    return {f"{name}_p50": float(np.percentile(x, 50)), f"{name}_p99": float(np.percentile(x, 99))}


def run_static(base, values, jobs, batch: int, eos, pad, hi: int) -> dict:
    """Static batches in arrival order; each runs to the workload's longest max_tokens (one
    program); a request's useful tokens stop at its own max_tokens or end token."""

    def batches():
        for s in range(0, len(jobs), batch):
            yield jobs[s : s + batch]

    def call(b, key):
        ids = [j["prompt"] for j in b]
        common = dict(key=key, max_new_tokens=hi, temperature=1.0, eos_token_id=eos, pad_id=pad)
        if values:
            beta = np.array([[j["beta"]] for j in b], np.float32)
            return vas_jax.vas_decode(base, values, ids, beta=beta, top_k=20, **common)
        return vas_jax.generate(base, ids, **common)

    for b in batches():  # compile every prompt bucket first
        call(b, jax.random.key(0)).tokens.block_until_ready()
    t, toks, e2e = time.perf_counter(), 0, []
    for i, b in enumerate(batches()):
        r = call(b, jax.random.key(i))
        lists = r.token_lists()
        done = time.perf_counter() - t
        toks += sum(min(len(x), j["max_tokens"]) for x, j in zip(lists, b))
        e2e += [done] * len(b)  # every request in the line arrived at the start (closed loop, no streaming)
    wall = time.perf_counter() - t
    return dict(tokens=toks, wall=wall, tok_s=toks / wall, **_pcts("e2e", np.array(e2e)))


def clients(url: str, jobs: list[dict], concurrency: int, value_name: str | None, ramp: float = 0.0) -> dict:
    """`run_server` in a process of its own: the clients' Python does not share the server's GIL."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_server, (url, jobs, concurrency, value_name, ramp))


def server(base, values, tok, slots: int, max_len: int, tokens_per_step: int):
    eng = Engine(base, values, slots=slots, max_len=max_len, eos_token_id=end_of_turn_ids(tok),
                 pad_id=default_pad_id(tok), top_logprobs=20, tokens_per_step=tokens_per_step)  # fmt: skip
    eng.warmup()
    sched = Scheduler(eng).start()
    names = ("v",) if values else ()
    return ServerThread(create_app(sched, tok, ServerConfig(model_name="m", value_names=names))), sched


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny", help="which base to serve")
    p.add_argument("--requests", type=int, default=200, help="requests in the load")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (and the server's slots)")
    p.add_argument("--tokens-per-step", type=int, default=1, help="the engine's tokens per step (vas serve's flag)")
    p.add_argument("--out", help="also write the figures to this JSON file")
    a = p.parse_args()
    tok, base, vm, prompts, lengths = setup(a.model)
    max_len = min(base.config.max_position_embeddings, max(map(len, prompts)) + lengths[1])
    eos, pad = end_of_turn_ids(tok), default_pad_id(tok)
    jobs = workload(prompts, a.requests, lengths)
    plain = workload(prompts, a.requests, lengths, values=False)
    rows = {}
    srv, sched = server(base, [vm], tok, a.concurrency, max_len, a.tokens_per_step)
    try:
        clients(srv.url, jobs[: a.concurrency], a.concurrency, "v")  # first requests: threads, sockets
        rows["serve"] = clients(srv.url, jobs, a.concurrency, "v")
        # half load, its clients ramped up over one typical request's time at full load
        rows["serve, half load"] = clients(srv.url, jobs, a.concurrency // 2, "v", ramp=rows["serve"]["e2e_p50"])
        rows["serve, all beta 0"] = clients(srv.url, plain, a.concurrency, "v")
    finally:
        srv.stop()
        sched.stop()
    srv, sched = server(base, [], tok, a.concurrency, max_len, a.tokens_per_step)
    try:
        clients(srv.url, plain[: a.concurrency], a.concurrency, None)
        rows["serve, no value models"] = clients(srv.url, plain, a.concurrency, None)
    finally:
        srv.stop()
        sched.stop()
    rows["static vas_decode"] = run_static(base, [vm], jobs, a.concurrency, eos, pad, lengths[1])
    rows["static generate"] = run_static(base, [], plain, a.concurrency, eos, pad, lengths[1])

    print(f"\n{a.model}: {a.requests} requests, {a.concurrency} concurrent, max_tokens in [{lengths[0]}, "
          f"{lengths[1]}), half guided (beta in [0.5, 3)); {a.tokens_per_step} token(s) per step; "
          f"device {jax.devices()[0].platform}")  # fmt: skip
    print(f"{'':26} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} {'e2e p50':>8} {'e2e p99':>8}")
    for k, r in rows.items():
        t50, t99 = r.get("ttft_p50", float("nan")), r.get("ttft_p99", float("nan"))
        print(f"{k:26} {r['tok_s']:8.1f} {t50:9.3f} {t99:9.3f} {r['e2e_p50']:8.3f} {r['e2e_p99']:8.3f}")
    s = rows["serve"]
    print(f"\nthroughput, serve / static vas_decode:          {s['tok_s'] / rows['static vas_decode']['tok_s']:.2f}"
          " (goal >= 0.8)")  # fmt: skip
    h = rows["serve, half load"]
    print(f"TTFT p99 / p50 at half load:                    {h['ttft_p99'] / h['ttft_p50']:.2f} (goal < 3)")
    z, n = rows["serve, all beta 0"], rows["serve, no value models"]
    print(f"all beta 0 with values loaded / without values: {z['tok_s'] / n['tok_s']:.2f} (goal ~1)")
    print(f"serve without values / static generate:         {n['tok_s'] / rows['static generate']['tok_s']:.2f}")
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
