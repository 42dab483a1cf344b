"""VAS against Best-of-N on held-out prompts: reward, KL to the base, and cost (FLOPs and seconds).

Used by `vas demo` (the shipped tiny model) and `vas bench` (a user's own directories).
Rows of the report: method in {base, vas, bon}; `beta` (VAS: one per value model), `n` (BoN);
`reward_mean` / `reward_se` of the primary reward (standard error over samples; for BoN over
prompts); `kl`: KL(policy || base) -- for VAS the mean over samples of the summed per-token
log-ratio of the augmented distribution to the base's, for BoN its known bound log n - (n-1)/n;
`flops_per_response` counted analytically (base, value and reward-model work); and measured
`seconds_per_response` (wall time of the compiled call over its responses; BoN: the per-sample time
of one n_max call, times n).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from .decode import generate, vas_decode
from .flops import sequence_flops


def _stats(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def _timed(fn, repeats: int = 2):
    """(result, best wall time of `repeats` calls): the calls are identical (same key), so is the result."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        jax.block_until_ready(out.tokens)
        best = min(best, time.perf_counter() - t)
    return out, best


def run_comparison(base, tok, prompt_ids: list[list[int]], values: Sequence, rewards: dict[str, Callable], *,
                   betas: Sequence[float], composed: Sequence[tuple[float, float]] = (), samples: int = 8,
                   bon_max: int = 128, max_new_tokens: int = 48, top_k: int = 20, seed: int = 0,
                   reward_flops: Callable[[int], float] | None = None, progress: bool = True,
                   attention: str = "xla") -> dict:
    """Run base, VAS over `betas` (first value model, first reward), BoN n = 1, 2, 4 ... bon_max, and a
    composed grid of the first two value models. Returns the report dict. attention: the decode
    attention of every run (`generate`)."""
    from tqdm import tqdm

    names = list(rewards)
    primary = names[0]
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    key = jax.random.key(seed)
    prompt_texts = [tok.decode(p) for p in prompt_ids]
    mean_prompt = float(np.mean([len(p) for p in prompt_ids]))

    def score(res, n_per_prompt):
        resp = [tok.decode(t, skip_special_tokens=True) for t in res.token_lists()]
        ps = [p for p in prompt_texts for _ in range(n_per_prompt)]
        return {nm: np.asarray(fn(ps, resp), np.float64) for nm, fn in rewards.items()}, resp

    def cost(mean_len, vms=()):
        f = sequence_flops(base.config, mean_prompt, mean_len)
        for vm in vms:
            scalar = vm.config.head == "score"
            f += sequence_flops(vm.config, mean_prompt, mean_len, tokens_per_step=(top_k + 1) if scalar else 1,
                                with_head=not scalar)
        if reward_flops is not None:
            f += reward_flops(int(mean_prompt + mean_len))
        return f

    rows, examples = [], {}
    common = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_id=pad, attention=attention)
    steps = 1 + len(betas) + 1 + len(composed)
    bar = tqdm(total=steps, desc="compare", unit="run", disable=not progress)

    # base model
    generate(base, prompt_ids, key=key, num_samples=samples, **common)  # compile
    r, dt = _timed(lambda: generate(base, prompt_ids, key=key, num_samples=samples, **common))
    sc, resp = score(r, samples)
    mean_len = float(np.asarray(r.lengths).mean())
    m, se = _stats(sc[primary])
    rows.append(dict(method="base", beta=None, n=1, reward_mean=m, reward_se=se, kl=0.0,
                     flops_per_response=cost(mean_len), seconds_per_response=dt / len(resp),
                     rewards={k: _stats(v)[0] for k, v in sc.items()}, mean_length=mean_len))
    examples["base"] = resp[:3]
    bar.update(1)

    # VAS over the beta grid (beta is traced: one compilation for the whole grid)
    vm = values[0]
    vas_decode(base, vm, prompt_ids, beta=0.0, key=key, top_k=top_k, num_samples=samples, **common)  # compile
    for b in betas:
        r, dt = _timed(lambda: vas_decode(base, vm, prompt_ids, beta=b, key=key, top_k=top_k, num_samples=samples,
                                          **common))
        sc, resp = score(r, samples)
        mean_len = float(np.asarray(r.lengths).mean())
        m, se = _stats(sc[primary])
        rows.append(dict(method="vas", beta=[float(b)], n=1, reward_mean=m, reward_se=se,
                         kl=float(np.asarray(r.kl()).mean()), flops_per_response=cost(mean_len, [vm]),
                         seconds_per_response=dt / len(resp), rewards={k: _stats(v)[0] for k, v in sc.items()},
                         mean_length=mean_len))
        examples[f"vas beta={b:g}"] = resp[:3]
        bar.update(1)

    # Best-of-N: one call with bon_max samples per prompt (prefilled once each); BoN(n) keeps the best of
    # the first n samples of each prompt
    generate(base, prompt_ids[:1], key=key, num_samples=bon_max, **common)
    r, dt = _timed(lambda: generate(base, prompt_ids, key=jax.random.fold_in(key, 1), num_samples=bon_max, **common))
    sc, _ = score(r, bon_max)
    per_sample_s = dt / (len(prompt_ids) * bon_max)
    lens = np.asarray(r.lengths).reshape(len(prompt_ids), bon_max)
    all_r = sc[primary].reshape(len(prompt_ids), bon_max)
    n = 1
    while n <= bon_max:
        best = all_r[:, :n].max(axis=1)
        m, se = _stats(best)
        mean_len = float(lens[:, :n].mean())
        f = sequence_flops(base.config, mean_prompt, 0) + n * (cost(mean_len) - sequence_flops(base.config, mean_prompt, 0))
        rows.append(dict(method="bon", beta=None, n=n, reward_mean=m, reward_se=se,
                         kl=float(math.log(n) - (n - 1) / n), flops_per_response=f,
                         seconds_per_response=per_sample_s * n, mean_length=mean_len))
        n *= 2
    bar.update(1)

    # composed rewards: a grid over (beta_1, beta_2) with the first two value models
    grid = []
    if len(values) >= 2 and composed:
        vas_decode(base, values[:2], prompt_ids, beta=[0.0, 0.0], key=key, top_k=top_k, num_samples=samples,
                   **common)  # compile
        for b1, b2 in composed:
            r, dt = _timed(lambda: vas_decode(base, values[:2], prompt_ids, beta=[b1, b2], key=key, top_k=top_k,
                                              num_samples=samples, **common))
            sc, _ = score(r, samples)
            mean_len = float(np.asarray(r.lengths).mean())
            m, se = _stats(sc[primary])
            grid.append(dict(method="vas", beta=[float(b1), float(b2)], n=1, reward_mean=m, reward_se=se,
                             kl=float(np.asarray(r.kl()).mean()), flops_per_response=cost(mean_len, values[:2]),
                             seconds_per_response=dt / len(r.token_lists()),
                             rewards={k: _stats(v)[0] for k, v in sc.items()},
                             rewards_se={k: _stats(v)[1] for k, v in sc.items()}, mean_length=mean_len,
                             composed=True))
            bar.update(1)
    bar.close()
    return dict(primary_reward=primary, rewards=names, rows=rows + grid, compute_ratio=compute_ratios(rows),
                examples=examples, settings=dict(prompts=len(prompt_ids), samples=samples, bon_max=bon_max,
                                                 max_new_tokens=max_new_tokens, top_k=top_k, seed=seed))


def compute_ratios(rows) -> list[dict]:
    """For each VAS beta: the smallest BoN n whose reward reaches VAS's, and that BoN's cost over VAS's."""
    bon = sorted((r for r in rows if r["method"] == "bon"), key=lambda r: r["n"])
    out = []
    for v in (r for r in rows if r["method"] == "vas" and not r.get("composed")):
        hit = next((b for b in bon if b["reward_mean"] >= v["reward_mean"]), None)
        out.append(dict(beta=v["beta"], vas_reward=v["reward_mean"], bon_n=hit["n"] if hit else None,
                        bon_reward=hit["reward_mean"] if hit else None,
                        flops_ratio=hit["flops_per_response"] / v["flops_per_response"] if hit else None,
                        seconds_ratio=hit["seconds_per_response"] / v["seconds_per_response"] if hit else None,
                        beyond_bon_max=hit is None))
    return out


def format_table(report: dict) -> str:
    p = report["primary_reward"]
    lines = [f"{'method':<8} {'beta':>12} {'n':>4} {p + ' (mean ± se)':>24} {'KL':>7} {'MFLOP/resp':>11} {'ms/resp':>8}"]
    for r in report["rows"]:
        beta = "" if r["beta"] is None else ",".join(f"{b:g}" for b in r["beta"])
        extra = ""
        if r.get("composed"):
            extra = "   " + "  ".join(f"{k}={v:+.2f}" for k, v in r["rewards"].items())
        lines.append(f"{r['method']:<8} {beta:>12} {r['n']:>4} {r['reward_mean']:>15.3f} ± {r['reward_se']:<6.3f} "
                     f"{r['kl']:>7.2f} {r['flops_per_response'] / 1e6:>11.2f} {r['seconds_per_response'] * 1e3:>8.2f}"
                     f"{extra}")
    lines.append("")
    for c in report["compute_ratio"]:
        b = ",".join(f"{x:g}" for x in c["beta"])
        if c["beyond_bon_max"]:
            lines.append(f"VAS beta={b}: reward {c['vas_reward']:.3f} is above every Best-of-N up to "
                         f"n={report['settings']['bon_max']}")
        else:
            lines.append(f"VAS beta={b}: reward {c['vas_reward']:.3f}; Best-of-{c['bon_n']} reaches it at "
                         f"{c['flops_ratio']:.1f}x VAS's FLOPs and {c['seconds_ratio']:.1f}x its seconds")
    return "\n".join(lines)


def write_report(report: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    try:
        plot(report, out)
    except ImportError:
        pass  # matplotlib is optional: the JSON and the table still say everything
    return out


def plot(report: dict, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = report["primary_reward"]
    rows = [r for r in report["rows"] if not r.get("composed")]
    bon = [r for r in rows if r["method"] == "bon"]
    vas = [r for r in rows if r["method"] == "vas"]
    base = [r for r in rows if r["method"] == "base"]
    for xkey, fname, xlabel, logx in (("flops_per_response", "reward_vs_cost.png", "FLOPs per response", True),
                                      ("kl", "reward_vs_kl.png", "KL to the base (nats)", False)):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        ax.errorbar([r[xkey] for r in bon], [r["reward_mean"] for r in bon], [r["reward_se"] for r in bon],
                    marker="o", label="Best-of-N", color="tab:gray")
        for r in bon:
            ax.annotate(f"N={r['n']}", (r[xkey], r["reward_mean"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points", color="tab:gray")
        ax.errorbar([r[xkey] for r in vas], [r["reward_mean"] for r in vas], [r["reward_se"] for r in vas],
                    marker="s", label="VAS", color="tab:blue")
        for r in vas:
            ax.annotate(f"β={r['beta'][0]:g}", (r[xkey], r["reward_mean"]), fontsize=7, xytext=(3, 4),
                        textcoords="offset points", color="tab:blue")
        ax.scatter([r[xkey] for r in base], [r["reward_mean"] for r in base], marker="*", s=120, color="tab:red",
                   label="base", zorder=5)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{p} reward (mean ± se)")
        ax.set_title(f"{p}: VAS vs Best-of-N")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
