"""The levers on the real demo (SmolLM2-135M-Instruct, sentiment), one at a time, against the
Best-of-N of a finished `vas demo --real` run.

    vas demo --real --out runs/demo-real                    # once: rollouts, values, Best-of-N
    python -m benchmarks.real_levers --demo runs/demo-real  # every variant
    python -m benchmarks.real_levers --demo runs/demo-real --only k=40 rounds=1

Best-of-N and the base do not change between variants, so they are read from the demo's report
(`bench/report.json`) rather than decoded again; each variant decodes only its VAS rows, on the
same held-out prompts, seed and sizes. Variants that need other value models make them through the
CLI in the demo directory (kept, so a rerun reuses them): more rollouts, a deeper value model, λ,
epochs, an on-policy round (rollouts from VAS at `ROUND_BETA`, scored, training continued on both),
and a distributional head (`+dist`) read by the mean or the soft rule.
Printed per variant as `benchmarks/levers.py` prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from benchmarks.levers import summarize, summary_line
from vas_jax.cli import main as vas
from vas_jax.real_demo import REWARDS, RealSize, on_policy_round

ROUND_BETA = RealSize().round_beta
BETAS = (1.0, 2.0, 4.0, 6.0)

# variant -> (value model, VAS settings); the value model is a key of `value_recipes`
VARIANTS = {
    "default": ("default", {}),
    "k=40": ("default", {"top_k": 40}),
    "k=10": ("default", {"top_k": 10}),
    "T=0.7": ("default", {"temperature": 0.7}),
    "rounds=1": ("rounds=1", {}),
    "rollouts=8": ("rollouts=8", {}),
    "rollouts=16": ("rollouts=16", {}),
    "rollouts=32": ("rollouts=32", {}),
    "rollouts=32+round": ("rollouts=32+round", {}),
    "layers=4": ("layers=4", {}),
    "lam=0.5": ("lam=0.5", {}),
    "epochs=4": ("epochs=4", {}),
    "lr=1e-4": ("lr=1e-4", {}),
    "lr=3e-5": ("lr=3e-5", {}),
    # the soft-values issue: a distributional head on the same rollouts, each rule
    "dist+mean": ("dist", {"rule": "mean"}),
    "dist+soft": ("dist", {"rule": "soft"}),
    "rollouts=32+dist+mean": ("rollouts=32+dist", {"rule": "mean"}),
    "rollouts=32+dist+soft": ("rollouts=32+dist", {"rule": "soft"}),
}


# rollouts per training prompt -> the sets (directory in the demo, samples per prompt, seed) they are the union of
ROLLOUT_SETS = {
    "rollouts=8": [("lever-rollouts=8/rollouts", 8, 0)],
    "rollouts=16": [("lever-rollouts=8/rollouts", 8, 0), ("lever-rollouts=16/rollouts", 8, 1)],
    "rollouts=32": [("lever-rollouts=8/rollouts", 8, 0), ("lever-rollouts=16/rollouts", 8, 1)]
    + [("lever-rollouts=32/rollouts", 16, 2)],
}


def run(*argv) -> None:
    argv = [str(a) for a in argv]
    print("$ vas " + " ".join(argv), flush=True)
    if vas(argv) != 0:
        raise SystemExit(f"`vas {argv[0]}` failed")


def value_for(name: str, demo: Path, settings: dict) -> Path:
    """The sentiment value model of a recipe, trained in the demo directory if not there yet."""
    column, fn = "reward_sentiment", REWARDS["sentiment"]
    base, roll = demo / "base", demo / "rollouts"
    if name == "default":
        return demo / "train-sentiment" / "value"
    if name in ("rounds=1", "rollouts=32+round"):
        # rounds=1 is the demo's own round (`vas demo --real --rounds 1` reuses it); the other is the
        # round at scale: from the 32-rollout value, written in its own directory
        size = dataclasses.replace(RealSize(**settings), round_beta=ROUND_BETA)
        if name == "rounds=1":
            first, into = demo / "train-sentiment" / "value", None
        else:
            first, into = value_for("rollouts=32", demo, settings), demo / f"lever-{name}"
            into.mkdir(exist_ok=True)
        return on_policy_round(demo, base, "sentiment", first, 1, size, into=into)
    out = demo / f"lever-{name}"
    value = out / "train" / "value"
    if (value / "config.json").exists():
        return value
    out.mkdir(exist_ok=True)
    sample = ["sample", "--base", base, "--prompts", demo / "prompts-train.jsonl", "--chat-template"]
    sample += ["--max-new-tokens", settings["max_new_tokens"], "--batch-size", 256]
    train = ["train", "--reward-column", column, "--out", out / "train"]
    if name.endswith("dist"):  # the same recipe with a distributional head
        train += ["--head", "distributional"]
        name = name.removesuffix("+dist")
    if name == "dist":
        run(*train, "--data", roll, "--init", base, "--init-layers", settings["value_layers"])
    elif name.startswith("rollouts="):
        data = []
        for where, n, seed in ROLLOUT_SETS[name]:  # each set sampled and scored once, shared by the larger ones
            d = demo / where
            if not _scored(d, column):
                run(*sample, "--n", n, "--seed", seed, "--out", d)
                run("score", "--data", d, "--reward-fn", fn, "--column", column)
            data += ["--data", d]
        run(*train, *data, "--init", base, "--init-layers", settings["value_layers"])
    elif name == "layers=4":
        run(*train, "--data", roll, "--init", base, "--init-layers", 4)
    elif name == "lam=0.5":
        run(*train, "--data", roll, "--init", base, "--init-layers", settings["value_layers"], "--lam", 0.5)
    elif name.startswith("lr="):  # `vas train`'s default is 3e-3 x 64 / width (3.3e-4 for SmolLM2's 576)
        run(*train, "--data", roll, "--init", base, "--init-layers", settings["value_layers"], "--lr", name[3:])
    elif name == "epochs=4":
        run(*train, "--data", roll, "--init", base, "--init-layers", settings["value_layers"], "--epochs", 4)
    else:
        raise SystemExit(f"unknown value recipe {name!r}")
    return value


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="runs/demo-real", help="a finished `vas demo --real` directory")
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = ap.parse_args()
    import vas_jax
    from vas_jax.data import encode_prompts, read_prompts
    from vas_jax.harness import compute_ratios, run_comparison
    from vas_jax.rewards import load_reward_function
    from vas_jax.values import load_value

    demo = Path(args.demo)
    report = json.loads((demo / "bench" / "report.json").read_text())
    settings = report["demo"]  # the demo's sizes
    fixed = [r for r in report["rows"] if r["method"] in ("base", "bon")]
    tok = vas_jax.load_tokenizer(demo / "base")
    base = vas_jax.load_model(demo / "base", fuse=True)
    texts = read_prompts(demo / "prompts-heldout.jsonl", "prompt")[: settings["eval_prompts"]]
    prompts = encode_prompts(tok, texts, chat_template=True)
    lines = []
    for name in args.only or list(VARIANTS):
        recipe, kw = VARIANTS[name]
        path = value_for(recipe, demo, settings)
        rep = run_comparison(
            base,
            tok,
            prompts,
            [load_value(path, tok, fuse=True)],
            {"sentiment": load_reward_function(REWARDS["sentiment"])},
            betas=BETAS,
            samples=settings["samples"],
            bon_max=1,  # Best-of-N comes from the demo's report
            max_new_tokens=settings["max_new_tokens"],
            prompt_texts=texts,
            progress=False,
            soft_taus=(),
            **{"top_k": settings["top_k"], **kw},
        )
        vas_rows = [r for r in rep["rows"] if r["method"] == "vas"]
        rows = fixed + vas_rows
        corr = _held_out_corr(path.parent)
        line = summary_line(name, [summarize(rows, compute_ratios(rows))]) + f" | V corr {corr}"
        print(line, flush=True)
        lines.append(line)
    print("\nvariant        per beta: reward/KL | best admissible setting | VAS vs Best-of-N reward at equal KL")
    print("\n".join(lines))


def _scored(rollouts: Path, column: str) -> bool:
    info = rollouts / "dataset_info.json"
    return info.exists() and column in json.loads(info.read_text())["features"]


def _held_out_corr(run: Path) -> str:
    """The last held-out correlation `vas train` logged for this run."""
    corr = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        corr = json.loads(line).get("eval_corr", corr)
    return "-" if corr is None else f"{corr:.2f}"


if __name__ == "__main__":
    main()
