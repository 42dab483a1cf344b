"""Blockwise value-guided search against tokenwise VAS and Best-of-N, on the same value models.

    python -m benchmarks.blockwise --toy --seeds 0 1 2          # the toy demo (`make demo`'s size), per seed
    python -m benchmarks.blockwise --real runs/demo-real         # a finished `vas demo --real` run
    python -m benchmarks.blockwise --toy --settings 4:8 8:14    # other searches (K:L[:keep[:beta[:rule]]])
    python -m benchmarks.blockwise --toy --head distributional --settings 4:8:argmax:2:soft 4:20:sample:2:soft
    python -m benchmarks.blockwise --real runs/demo-real --value DIR --settings 4:8:argmax:2:soft

Toy: the whole demo per seed (rollouts, value training with its on-policy round, comparison; the
composed grid left out), with the searches beside VAS's beta grid. Real: the demo's value model for
sentiment and its report's base, Best-of-N and VAS rows are kept; only the searches are decoded, on
the same held-out prompts, samples and seed.

Printed per setting: reward, its KL bound, Best-of-N's reward at that KL (interpolated along its
bound), the gap in standard errors, and the compute ratio (the smallest Best-of-N reaching its
reward, that Best-of-N's FLOPs over its). Then per family (K, keep, rule, beta; L varies) and for
VAS (beta varies): reward at KL 1 and 2 against Best-of-N's, and the issue's two targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.levers import at_kl
from vas_jax.blockwise import BlockSetting, beta_matters

TOY = ("2:4", "2:8", "4:8", "4:10", "4:14", "4:20", "8:14", "8:20", "4:20:sample:8")
REAL = ("2:4", "2:8", "4:6", "4:8", "4:16", "8:11", "8:16", "4:16:sample:8")
TARGET_N, TARGET_RATIO = 32, 6.0  # reach Best-of-N with N >= 32 at <= 1/6 of its FLOPs


def settings_of(texts) -> tuple:
    return tuple(BlockSetting.parse(t) for t in texts)


def family(r: dict) -> str:
    if r["method"] == "vas":
        return f"VAS ({r.get('rule', 'mean')})"
    beta = f" β={r['beta'][0]:g}" if beta_matters(r["keep"], r["rule"], r["beta"][0]) else ""
    return f"K={r['block_samples']} {r['keep']}{beta}{' soft' if r['rule'] == 'soft' else ''}"


def analyse(rows: list) -> dict:
    """Per guided row: its gap to Best-of-N at its KL and its compute ratio; per family: rewards at KL 1, 2."""
    from vas_jax.harness import compute_ratios

    bon = [r for r in rows if r["method"] == "bon"]
    base = next(r for r in rows if r["method"] == "base")
    guided = [r for r in rows if r["method"] in ("vas", "block") and not r.get("composed")]
    out = {"rows": [], "families": {}}
    for r, c in zip(guided, compute_ratios(rows)):  # the same rows, in the same order
        b, label = at_kl(bon, r["kl"]), c["label"]
        hit = (
            r["method"] == "block"
            and c["admissible"]
            and c["bon_n"] is not None
            and c["bon_n"] >= TARGET_N
            and c["flops_ratio"] >= TARGET_RATIO
        )
        out["rows"].append(dict(label=label, reward=r["reward_mean"], se=r["reward_se"], kl=r["kl"], bon=b,
                                bon_n=c["bon_n"], flops_ratio=c["flops_ratio"], compute_target=hit))  # fmt: skip
    for name in dict.fromkeys(family(r) for r in guided):
        own = [r for r in guided if family(r) == name]
        # VAS at beta 0 is the base; a search's family ends at L >= max_new_tokens, Best-of-K by value, not the base
        pts = ([base] if own[0]["method"] == "vas" else []) + own
        se = float(np.mean([r["reward_se"] for r in own]))
        out["families"][name] = {kl: (at_kl(pts, kl), at_kl(bon, kl), se) for kl in (1.0, 2.0)}
    return out


def print_analysis(a: dict, title: str) -> None:
    print(f"\n## {title}")
    print(f"{'setting':<34} {'reward':>13} {'KL':>6} {'BoN@KL':>7} {'gap/se':>7}  compute")
    for r in a["rows"]:
        gap = "-" if r["bon"] is None else f"{(r['reward'] - r['bon']) / max(r['se'], 1e-9):+.1f}"
        bon = "-" if r["bon"] is None else f"{r['bon']:.2f}"
        comp = f"BoN-{r['bon_n']} at {r['flops_ratio']:.1f}x" if r["bon_n"] else "-"
        mark = "  <- compute target" if r["compute_target"] else ""
        print(f"{r['label']:<34} {r['reward']:>6.2f} ± {r['se']:<4.2f} {r['kl']:>6.2f} {bon:>7} {gap:>7}  {comp}{mark}")
    for name, cells in a["families"].items():
        parts = []
        for kl, (v, b, se) in cells.items():
            if v is None or b is None:
                parts.append(f"KL{kl:g}: -")
            else:
                parts.append(f"KL{kl:g}: {v:.2f} vs BoN {b:.2f} ({(v - b) / se:+.1f} se)")
        print(f"  {name:<24} " + "; ".join(parts))


def run_toy(seeds, settings, head: str) -> None:
    from vas_jax.demo import FULL, run_demo

    per_seed = []
    texts = tuple(b.text for b in settings)
    for seed in seeds:
        size = dataclasses.replace(FULL, composed=(), betas=(1.0, 2.0, 4.0, 8.0), blockwise=texts, seed=seed, head=head)
        with tempfile.TemporaryDirectory() as out:
            rep = run_demo(out, size, progress=False, log=lambda *_: None)
        a = analyse(rep["rows"])
        per_seed.append(a)
        print_analysis(a, f"toy demo, seed {seed}")
    if len(seeds) > 1:
        print(f"\n## toy demo, {len(seeds)} seeds: method minus Best-of-N at equal KL (mean ± se over seeds)")
        for name in per_seed[0]["families"]:
            parts = []
            for kl in (1.0, 2.0):
                gaps = [a["families"][name][kl][0] - a["families"][name][kl][1] for a in per_seed
                        if None not in a["families"][name][kl][:2]]  # fmt: skip
                if len(gaps) == len(seeds):
                    parts.append(f"KL{kl:g}: {np.mean(gaps):+.2f} ± {np.std(gaps, ddof=1) / len(gaps) ** 0.5:.2f}")
            print(f"  {name:<24} " + "; ".join(parts))
        hits = [any(r["compute_target"] for r in a["rows"]) for a in per_seed]
        print(f"  blockwise compute target (BoN-{TARGET_N}+ at >= {TARGET_RATIO:g}x) met per seed: {hits}")


def run_real(demo: Path, settings, value: Path | None) -> None:
    import vas_jax
    from vas_jax.data import encode_prompts, read_prompts
    from vas_jax.harness import run_comparison
    from vas_jax.real_demo import REWARDS
    from vas_jax.rewards import load_reward_function
    from vas_jax.values import load_value

    report = json.loads((demo / "bench" / "report.json").read_text())
    s = report["demo"]
    kept = [r for r in report["rows"] if r["method"] in ("base", "bon", "vas") and not r.get("composed")]
    tok = vas_jax.load_tokenizer(demo / "base")
    base = vas_jax.load_model(demo / "base", fuse=True)
    texts = read_prompts(demo / "prompts-heldout.jsonl", "prompt")[: s["eval_prompts"]]
    rep = run_comparison(
        base,
        tok,
        encode_prompts(tok, texts, chat_template=True),
        [load_value(value or demo / "train-sentiment" / "value", tok, fuse=True)],
        {"sentiment": load_reward_function(REWARDS["sentiment"])},
        betas=(),
        samples=s["samples"],
        bon_max=1,  # Best-of-N, the base and VAS come from the demo's report
        max_new_tokens=s["max_new_tokens"],
        prompt_texts=texts,
        soft_taus=(),
        blockwise=settings,
        progress=True,
    )
    rows = kept + [r for r in rep["rows"] if r["method"] == "block"]
    (demo / "bench" / f"blockwise-{(value or demo).name}.json").write_text(json.dumps(rows, indent=2))
    print_analysis(analyse(rows), f"real demo ({demo}), searches guided by {value or 'its sentiment value model'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--toy", action="store_true", help="run the toy demo per seed")
    where.add_argument("--real", type=Path, metavar="DIR", help="a finished `vas demo --real` directory")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="toy: seeds (DemoSize.seed)")
    ap.add_argument("--settings", nargs="+", help="searches, K:L[:keep[:beta[:rule]]] (default: per demo)")
    ap.add_argument("--head", default="scalar", choices=["scalar", "distributional"], help="toy: the value head")
    ap.add_argument("--value", type=Path, help="real: the value model guiding the searches (default: the demo's)")
    args = ap.parse_args()
    if args.toy:
        run_toy(args.seeds, settings_of(args.settings or TOY), args.head)
    else:
        run_real(args.real, settings_of(args.settings or REAL), args.value)


if __name__ == "__main__":
    main()
