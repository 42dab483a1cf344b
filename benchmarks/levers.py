"""What each lever buys VAS on the reward-KL and reward-FLOPs planes, one at a time, on a demo.

    python -m benchmarks.levers                 # the toy demo (`make demo`'s size), a minute a variant
    python -m benchmarks.levers --only k=10 lam=1.0
    python -m benchmarks.levers --only default rounds=1,β2 --seeds 0 1 2   # mean and spread over seeds

Each variant changes settings of `vas_jax.demo.DemoSize` from the demo without on-policy rounds
(the baseline the levers were first measured against; the demo's default is now "rounds=1,β2")
and reruns the whole demo (rollouts, value training, comparison; the composed grid left out).
Printed per variant: per beta, VAS's reward and KL; the
best admissible setting's compute ratio (the smallest Best-of-N reaching its reward, and that
Best-of-N's FLOPs over VAS's); and VAS's reward at KL 1 and 2 nats (interpolated along its beta
curve) against Best-of-N's at the same KL (along its bound).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

import numpy as np

from vas_jax.demo import FULL, run_demo

VARIANTS = {
    "default": {},
    # the soft-values issue: the same rollouts, a distributional head, each rule
    "dist+mean": {"head": "distributional", "rule": "mean"},
    "dist+soft": {"head": "distributional", "rule": "soft"},
    "dist+soft+rounds1β2": {"head": "distributional", "rule": "soft", "rounds": 1, "round_beta": 2.0},
    "dist+soft,m0": {"head": "distributional", "rule": "soft", "atom_margin": 0.0},
    "dist+mean,m0": {"head": "distributional", "rule": "mean", "atom_margin": 0.0},
    "dist11+soft,m0": {"head": "distributional", "rule": "soft", "atom_margin": 0.0, "atoms": 11},
    "dist+mean,mse0": {"head": "distributional", "rule": "mean", "mean_loss": 0.0},
    "rollouts=16": {"samples_per_prompt": 16},
    "value=base:2": {"value_init": "base:2"},
    "lam=0.5": {"lam": 0.5},
    "lam=1.0": {"lam": 1.0},
    "epochs=4": {"epochs": 4},
    "k=10": {"top_k": 10},
    "k=40": {"top_k": 40},
    "T=0.7": {"vas_temperature": 0.7},
    "rounds=1,β4": {"rounds": 1, "round_beta": 4.0},
    "rounds=2,β4": {"rounds": 2, "round_beta": 4.0},
    "rounds=1,β2": {"rounds": 1, "round_beta": 2.0},
    "rounds=2,β2": {"rounds": 2, "round_beta": 2.0},
    "rounds=1,β1": {"rounds": 1, "round_beta": 1.0},
    # combinations of the ones that helped alone
    "r16+lam0.5": {"samples_per_prompt": 16, "lam": 0.5},
    "r16+k40+lam0.5": {"samples_per_prompt": 16, "top_k": 40, "lam": 0.5},
    "r16+T0.7": {"samples_per_prompt": 16, "vas_temperature": 0.7},
    "rounds1β2+r16": {"rounds": 1, "round_beta": 2.0, "samples_per_prompt": 16},
    "rounds1β2+k40+lam0.5": {"rounds": 1, "round_beta": 2.0, "top_k": 40, "lam": 0.5},
    "rounds1β2+lam0.5": {"rounds": 1, "round_beta": 2.0, "lam": 0.5},
    "rounds1β2+k40": {"rounds": 1, "round_beta": 2.0, "top_k": 40},
    "rounds2β2+k40+lam0.5": {"rounds": 2, "round_beta": 2.0, "top_k": 40, "lam": 0.5},
}


def at_kl(rows, kl: float) -> float | None:
    """Reward at a KL, interpolated linearly between the rows (sorted by KL); None beyond them."""
    pts = sorted((r["kl"], r["reward_mean"]) for r in rows)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if not xs or kl < xs[0] or kl > xs[-1]:
        return None
    return float(np.interp(kl, xs, ys))


def summarize(rows: list, compute_ratio: list) -> dict:
    """One run of a variant: VAS's reward/KL per beta, the best admissible setting's compute ratio,
    and VAS's and Best-of-N's rewards at KL 1 and 2 nats."""
    base = next(r for r in rows if r["method"] == "base")
    vas = [r for r in rows if r["method"] == "vas" and not r.get("composed")]
    bon = [r for r in rows if r["method"] == "bon"]  # at its KL bound
    vas_ratios = [c for c in compute_ratio if c.get("method", "vas") == "vas"]
    ok = [c for c in vas_ratios if c["admissible"] and c["flops_ratio"] is not None]
    best = max(ok, key=lambda c: c["vas_reward"]) if ok else None
    return dict(
        cells=" ".join(f"β={r['beta'][0]:g}:{r['reward_mean']:.2f}/{r['kl']:.2f}" for r in vas),
        best=f"β={best['beta'][0]:g} = BoN-{best['bon_n']} at {best['flops_ratio']:.1f}x" if best else "none",
        at_kl={kl: (at_kl([base, *vas], kl), at_kl(bon, kl)) for kl in (1.0, 2.0)},
    )


def summary_line(name: str, runs: list[dict]) -> str:
    """A variant's line: one run as measured; several (seeds) as the mean and spread at each KL."""
    if len(runs) == 1:
        r = runs[0]
        kls = "; ".join(
            f"KL{kl:g}: {'-' if v is None else f'{v:.2f}'} vs {'-' if b is None else f'{b:.2f}'}"
            for kl, (v, b) in r["at_kl"].items()
        )
        return f"{name:<14} {r['cells']}  | best admissible: {r['best']} | {kls}"
    parts = []
    for kl in (1.0, 2.0):
        gaps = [v - b for v, b in (r["at_kl"][kl] for r in runs) if v is not None and b is not None]
        if gaps:
            parts.append(f"KL{kl:g}: VAS - BoN {np.mean(gaps):+.2f} ± {np.std(gaps, ddof=1) / len(gaps) ** 0.5:.2f}")
    best = ", ".join(r["best"] for r in runs)
    return f"{name:<22} {len(runs)} seeds | {'; '.join(parts)} | best admissible per seed: {best}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds per variant (DemoSize.seed)")
    args = ap.parse_args()
    names = args.only or list(VARIANTS)
    # every variant is one change from the demo without on-policy rounds (the levers were first
    # measured against it); "rounds=1,β2" is the demo's default since
    base_size = dataclasses.replace(FULL, composed=(), betas=(1.0, 2.0, 4.0, 8.0), rounds=0, blockwise=())
    lines = []
    for name in names:
        runs = []
        for seed in args.seeds:
            size = dataclasses.replace(base_size, **VARIANTS[name], seed=seed)
            with tempfile.TemporaryDirectory() as out:
                rep = run_demo(out, size, progress=False, log=lambda *_: None)
            runs.append(summarize(rep["rows"], rep["compute_ratio"]))
            if len(args.seeds) > 1:
                print(summary_line(f"{name} s{seed}", runs[-1:]), flush=True)
        line = summary_line(name, runs)
        print(line, flush=True)
        lines.append(line)
    print("\nvariant        per beta: reward/KL | best admissible setting | VAS vs Best-of-N reward at equal KL")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
