"""The measurement behind `vas train`'s defaults: the README recipe's data, several settings.

    python -m benchmarks.default_sweep --out runs/sweep

Samples the recipe's rollouts from the shipped base (examples/review-prompts.jsonl, the CLI's
sampling defaults), scores them with the built-in positivity reward, then for each setting trains a
value model from tiny-review-small and prints the held-out correlation of V with returns and the
positivity of VAS (beta 2 and 4) against the base on examples/review-heldout.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import jax
import numpy as np

import vas_jax
from vas_jax.corpus import positivity
from vas_jax.data import read_prompts
from vas_jax.demo import BASE_DIR, SMALL_DIR
from vas_jax.rewards import score_dataset
from vas_jax.rollouts import sample_rollouts
from vas_jax.train import TrainConfig, init_value_model, rollout_arrays, train_value

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/sweep", help="where rollouts and runs go")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2], help="learning rates")
    ap.add_argument("--passes", type=int, nargs="+", default=[1, 3], help="passes over the rollouts")
    ap.add_argument("--batches", nargs="+", default=["64/16", "128/32"], help="TD batch / minibatch sizes")
    a = ap.parse_args(argv)
    out = Path(a.out)
    tok = vas_jax.load_tokenizer(BASE_DIR)
    base = vas_jax.load_model(BASE_DIR)
    small = vas_jax.load_model(SMALL_DIR)
    ds = sample_rollouts(
        base,
        tok,
        read_prompts(EXAMPLES / "review-prompts.jsonl"),
        out / "rollouts",
        n=8,
        max_new_tokens=64,
        prompts_per_shard=8,
        progress=False,
    )
    ds = score_dataset(ds, positivity, progress=False)
    data = rollout_arrays(ds, pad_id=tok.pad_token_id)
    held = [tok(p)["input_ids"] for p in read_prompts(EXAMPLES / "review-heldout.jsonl")]
    key = jax.random.key(0)
    common = dict(key=key, max_new_tokens=64, eos_token_id=tok.eos_token_id, pad_id=tok.pad_token_id, num_samples=4)

    def reward(res):
        resp = [tok.decode(t, skip_special_tokens=True) for t in res.token_lists()]
        return float(np.mean(positivity([""] * len(resp), resp)))

    print(
        f"{len(ds)} rollouts; base positivity on held-out prompts {reward(vas_jax.generate(base, held, **common)):.3f}"
    )
    print(f"{'lr':>8} {'passes':>6} {'batch':>7} {'updates':>7} {'corr':>6} {'VAS b=2':>8} {'VAS b=4':>8}")
    for lr, passes, bs in itertools.product(a.lrs, a.passes, a.batches):
        b, mb = map(int, bs.split("/"))
        cfg = TrainConfig(learning_rate=lr, passes=passes, batch_size=b, minibatch_size=mb, save_every=10**6)
        run = out / f"lr{lr:g}-p{passes}-b{b}"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        steps = []
        vm, m = train_value(
            init_value_model(small), data, run, cfg, progress=False, on_step=lambda s, _, steps=steps: steps.append(s)
        )
        r2 = reward(vas_jax.vas_decode(base, vm, held, beta=2.0, top_k=20, **common))
        r4 = reward(vas_jax.vas_decode(base, vm, held, beta=4.0, top_k=20, **common))
        print(f"{lr:>8g} {passes:>6} {bs:>7} {len(steps):>7} {m['eval_corr']:>6.3f} {r2:>8.3f} {r4:>8.3f}", flush=True)
        (run / "sweep.json").write_text(
            json.dumps(dict(lr=lr, passes=passes, batch=bs, corr=m["eval_corr"], vas2=r2, vas4=r4))
        )


if __name__ == "__main__":
    main()
