"""`vas demo`: the whole of VAS in a few minutes on this machine, with nothing to download.

Samples rollouts from the shipped tiny review model, scores them with two built-in rewards
(positivity and brevity), trains a value model for each, then on held-out prompts compares the
base model, VAS over a grid of beta, and Best-of-N for n = 1, 2, 4, ... 128: reward, KL to the
base, and cost per response in FLOPs and seconds; then a grid of the two rewards composed.
Writes report.json, reward_vs_cost.png and reward_vs_kl.png to --out.
"""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--out", default="runs/demo", help="where the report, plots, rollouts and value models go")
    p.add_argument("--quick", action="store_true", help="a reduced run (a minute): fewer prompts, n up to 16")


def run(args):
    from vas_jax.demo import FULL, QUICK, run_demo

    run_demo(args.out, QUICK if args.quick else FULL)
