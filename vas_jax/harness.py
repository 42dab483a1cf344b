"""VAS against Best-of-N on held-out prompts: reward, KL to the base, and cost (FLOPs and seconds).

Used by `vas demo` (the shipped tiny model) and `vas bench` (a user's own directories).
Rows of the report: method in {base, vas, bon}; `beta` (VAS: one per value model), `n` (BoN);
`reward_mean` / `reward_se` of the primary reward. Every method's standard error has one basis:
over prompts, each prompt's samples averaged first (Best-of-N has one pick per prompt).
`kl` is KL(policy || base) in nats, of a kind named by `kl_kind`: "estimate" for VAS (the mean
over prompts of the summed per-token log-ratio of the sampled tokens, with its standard error
`kl_se`), "bound" for Best-of-N (the analytic log n - (n-1)/n, an upper bound), "exact" for the
base (0). `flops_per_response` is counted analytically (base, value and reward-model work);
`seconds_per_response` is measured: the wall time of that row's own compiled call over its responses.
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
from .tokenizer import default_pad_id, end_of_turn_ids


def _stats(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def per_prompt_stats(x, n_prompts: int) -> tuple[float, float]:
    """Mean and standard error over prompts of per-prompt means (x: prompt-major, equal samples each)."""
    return _stats(np.asarray(x, np.float64).reshape(n_prompts, -1).mean(axis=1))


def _timed(fn, repeats: int = 2):
    """(result, best wall time of `repeats` calls): the calls are identical (same key), so is the result."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        jax.block_until_ready(out.tokens)
        best = min(best, time.perf_counter() - t)
    return out, best


def bon_kl_bound(n: int) -> float:
    """KL(Best-of-n || base) <= log n - (n-1)/n (equal when no two samples tie in reward)."""
    return float(math.log(n) - (n - 1) / n)


def run_comparison(
    base,
    tok,
    prompt_ids: list[list[int]],
    values: Sequence,
    rewards: dict[str, Callable],
    *,
    betas: Sequence[float],
    composed: Sequence[tuple[float, float]] = (),
    samples: int = 8,
    bon_max: int = 128,
    max_new_tokens: int = 48,
    top_k: int = 20,
    seed: int = 0,
    reward_flops: Callable[[int], float] | None = None,
    progress: bool = True,
    attention: str = "xla",
) -> dict:
    """Run base, VAS over `betas` (first value model, first reward), BoN n = 1, 2, 4 ... bon_max, and a
    composed grid of the first two value models. Returns the report dict. attention: the decode
    attention of every run (`generate`)."""
    from tqdm import tqdm

    from .rewards import call_reward

    names = list(rewards)
    primary = names[0]
    eos = end_of_turn_ids(tok)
    pad = default_pad_id(tok)
    key = jax.random.key(seed)
    P = len(prompt_ids)
    prompt_texts = [tok.decode(p, skip_special_tokens=True) for p in prompt_ids]
    mean_prompt = float(np.mean([len(p) for p in prompt_ids]))

    def score(res, n_per_prompt):
        resp = [tok.decode(t, skip_special_tokens=True) for t in res.token_lists()]
        ps = [p for p in prompt_texts for _ in range(n_per_prompt)]
        return {nm: np.asarray(call_reward(fn, ps, resp), np.float64) for nm, fn in rewards.items()}, resp

    def cost(mean_len, vms=()):
        f = sequence_flops(base.config, mean_prompt, mean_len)
        for vm in vms:
            scalar = vm.config.head == "score"
            f += sequence_flops(
                vm.config, mean_prompt, mean_len, tokens_per_step=(top_k + 1) if scalar else 1, with_head=not scalar
            )
        if reward_flops is not None:
            f += reward_flops(int(mean_prompt + mean_len))
        return f

    def sampled_row(method, res, dt, beta=None, vms=(), **extra):
        sc, resp = score(res, samples)
        mean_len = float(np.asarray(res.lengths).mean())
        m, se = per_prompt_stats(sc[primary], P)
        row = dict(
            method=method,
            beta=beta,
            n=1,
            reward_mean=m,
            reward_se=se,
            flops_per_response=cost(mean_len, vms),
            seconds_per_response=dt / len(resp),
            rewards={k: per_prompt_stats(v, P)[0] for k, v in sc.items()},
            rewards_se={k: per_prompt_stats(v, P)[1] for k, v in sc.items()},
            mean_length=mean_len,
            **extra,
        )
        if method == "base":
            row.update(kl=0.0, kl_se=0.0, kl_kind="exact")
        else:
            row["kl"], row["kl_se"] = per_prompt_stats(np.asarray(res.kl()), P)
            row["kl_kind"] = "estimate"
        return row, resp

    rows, examples = [], {}
    common = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_id=pad, attention=attention)
    bon_ns = [2**i for i in range(int(math.log2(bon_max)) + 1)]
    steps = 1 + len(betas) + len(bon_ns) + len(composed)
    bar = tqdm(total=steps, desc="compare", unit="run", disable=not progress)

    # base model
    # (the first of _timed's two calls compiles; the faster, second, one is the time)
    r, dt = _timed(lambda: generate(base, prompt_ids, key=key, num_samples=samples, **common))
    row, resp = sampled_row("base", r, dt)
    rows.append(row)
    examples["base"] = resp[::samples][:3]
    bar.update(1)

    # VAS over the beta grid (beta is traced: one compilation for the whole grid)
    vm = values[0]
    vas_decode(base, vm, prompt_ids, beta=0.0, key=key, top_k=top_k, num_samples=samples, **common)  # compile
    for b in betas:
        r, dt = _timed(
            lambda: vas_decode(base, vm, prompt_ids, beta=b, key=key, top_k=top_k, num_samples=samples, **common)
        )
        row, resp = sampled_row("vas", r, dt, beta=[float(b)], vms=[vm])
        rows.append(row)
        examples[f"vas beta={b:g}"] = resp[::samples][:3]
        bar.update(1)

    # Best-of-N: for each n its own call (n samples per prompt, each prompt prefilled once), timed on its
    # own; BoN(n) keeps the best of each prompt's n samples by the primary reward
    for n in bon_ns:
        k = jax.random.fold_in(key, n)
        r, dt = _timed(lambda: generate(base, prompt_ids, key=k, num_samples=n, **common))
        sc, resp = score(r, n)
        all_r = sc[primary].reshape(P, n)
        pick = all_r.argmax(axis=1)
        m, se = _stats(all_r[np.arange(P), pick])
        lens = np.asarray(r.lengths).reshape(P, n)
        mean_len = float(lens.mean())
        prefill = sequence_flops(base.config, mean_prompt, 0)
        rows.append(
            dict(
                method="bon",
                beta=None,
                n=n,
                reward_mean=m,
                reward_se=se,
                kl=bon_kl_bound(n),
                kl_se=0.0,
                kl_kind="bound",
                flops_per_response=prefill + n * (cost(mean_len) - prefill),
                seconds_per_response=dt / P,
                mean_length=mean_len,
                rewards={k_: float(v.reshape(P, n)[np.arange(P), pick].mean()) for k_, v in sc.items()},
            )
        )
        if n == bon_max:
            examples[f"best-of-{n}"] = [resp[i * n + pick[i]] for i in range(min(3, P))]
        bar.update(1)

    # composed rewards: a grid over (beta_1, beta_2) with the first two value models
    grid = []
    if len(values) >= 2 and composed:
        vas_decode(
            base, values[:2], prompt_ids, beta=[0.0, 0.0], key=key, top_k=top_k, num_samples=samples, **common
        )  # compile
        for b1, b2 in composed:
            r, dt = _timed(
                lambda: vas_decode(
                    base, values[:2], prompt_ids, beta=[b1, b2], key=key, top_k=top_k, num_samples=samples, **common
                )
            )
            row, _ = sampled_row("vas", r, dt, beta=[float(b1), float(b2)], vms=values[:2], composed=True)
            grid.append(row)
            bar.update(1)
    bar.close()
    return dict(
        primary_reward=primary,
        rewards=names,
        rows=rows + grid,
        compute_ratio=compute_ratios(rows),
        examples=examples,
        prompts=prompt_texts[:3],
        settings=dict(
            prompts=P,
            samples=samples,
            bon_max=bon_max,
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            seed=seed,
            standard_errors="over prompts (samples averaged per prompt)",
            seconds="measured per row",
            flops="counted analytically",
        ),
    )


def compute_ratios(rows) -> list[dict]:
    """For each VAS beta: the smallest BoN n whose reward reaches VAS's, and that BoN's cost over VAS's."""
    bon = sorted((r for r in rows if r["method"] == "bon"), key=lambda r: r["n"])
    out = []
    for v in (r for r in rows if r["method"] == "vas" and not r.get("composed")):
        hit = next((b for b in bon if b["reward_mean"] >= v["reward_mean"]), None)
        out.append(
            dict(
                beta=v["beta"],
                vas_reward=v["reward_mean"],
                bon_n=hit["n"] if hit else None,
                bon_reward=hit["reward_mean"] if hit else None,
                flops_ratio=hit["flops_per_response"] / v["flops_per_response"] if hit else None,
                seconds_ratio=hit["seconds_per_response"] / v["seconds_per_response"] if hit else None,
                beyond_bon_max=hit is None,
            )
        )
    return out


def kl_text(r: dict) -> str:
    """The KL cell: an estimate with its standard error, or a bound marked as one."""
    if r.get("kl_kind") == "bound":
        return f"<={r['kl']:.2f}"
    if r.get("kl_kind") == "estimate":
        return f"{r['kl']:.2f}±{r['kl_se']:.2f}"
    return f"{r['kl']:.2f}"


def format_table(report: dict) -> str:
    p = report["primary_reward"]
    lines = [
        f"{'method':<8} {'beta':>9} {'n':>4} {p + ' (mean ± se)':>22} {'KL (nats)':>11} {'MFLOP/resp':>11} "
        f"{'ms/resp':>8}"
    ]
    for r in report["rows"]:
        beta = "" if r["beta"] is None else ",".join(f"{b:g}" for b in r["beta"])
        extra = ""
        if r.get("composed"):
            extra = "   " + "  ".join(f"{k}={v:+.2f}" for k, v in r["rewards"].items())
        lines.append(
            f"{r['method']:<8} {beta:>9} {r['n']:>4} {r['reward_mean']:>13.3f} ± {r['reward_se']:<6.3f} "
            f"{kl_text(r):>11} {r['flops_per_response'] / 1e6:>11.2f} {r['seconds_per_response'] * 1e3:>8.2f}"
            f"{extra}"
        )
    lines.append("")
    lines.append(
        "standard errors over prompts; KL: VAS an estimate ± se, Best-of-N the bound log n - (n-1)/n; "
        "seconds measured per row, FLOPs counted"
    )
    for c in report["compute_ratio"]:
        b = ",".join(f"{x:g}" for x in c["beta"])
        if c["beyond_bon_max"]:
            lines.append(
                f"VAS beta={b}: reward {c['vas_reward']:.3f} is above every Best-of-N up to "
                f"n={report['settings']['bon_max']}"
            )
        else:
            lines.append(
                f"VAS beta={b}: reward {c['vas_reward']:.3f}; Best-of-{c['bon_n']} reaches it at "
                f"{c['flops_ratio']:.1f}x VAS's FLOPs and {c['seconds_ratio']:.1f}x its seconds"
            )
    return "\n".join(lines)


def write_report(report: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    try:
        plot(report, out)
    except ImportError:
        pass  # matplotlib is optional: the JSON and the table still say everything
    return out


PLOTS = ("reward_vs_cost.png", "reward_vs_kl.png")
LABEL_BOX = dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8)  # labels stay legible over lines
GRID_PLOT = "composed_grid.png"


def plot(report: dict, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    p = report["primary_reward"]
    rows = [r for r in report["rows"] if not r.get("composed")]
    bon = [r for r in rows if r["method"] == "bon"]
    vas = [r for r in rows if r["method"] == "vas"]
    base = [r for r in rows if r["method"] == "base"]
    for xkey, fname, xlabel, logx in (
        ("flops_per_response", PLOTS[0], "FLOPs per response (counted)", True),
        ("kl", PLOTS[1], "KL to the base (nats): VAS estimated, Best-of-N bound", False),
    ):
        fig, ax = plt.subplots(figsize=(7.2, 4.8))
        # the base first and behind: Best-of-1 sits on the same point and must stay visible
        ax.scatter(
            [r[xkey] for r in base],
            [r["reward_mean"] for r in base],
            marker="*",
            s=260,
            facecolor="none",
            edgecolor="tab:red",
            linewidth=1.5,
            label="base",
            zorder=2,
        )
        ax.errorbar(
            [r[xkey] for r in bon],
            [r["reward_mean"] for r in bon],
            [r["reward_se"] for r in bon],
            marker="o",
            ms=4,
            capsize=2,
            label="Best-of-N",
            color="tab:gray",
            zorder=3,
        )
        for r in bon:  # Best-of-N labels below-right of their points, VAS labels above-left: they never meet
            ax.annotate(
                f"N={r['n']}",
                (r[xkey], r["reward_mean"]),
                fontsize=7,
                xytext=(5, -12),
                textcoords="offset points",
                color="dimgray",
                annotation_clip=False,
                bbox=LABEL_BOX,
            )
        xerr = [r["kl_se"] for r in vas] if xkey == "kl" else None
        ax.errorbar(
            [r[xkey] for r in vas],
            [r["reward_mean"] for r in vas],
            [r["reward_se"] for r in vas],
            xerr,
            marker="s",
            ms=4,
            capsize=2,
            label="VAS",
            color="tab:blue",
            zorder=4,
        )
        for r in vas:
            ax.annotate(
                f"β={r['beta'][0]:g}",
                (r[xkey], r["reward_mean"]),
                fontsize=7,
                xytext=(-5, 7),
                ha="right",
                textcoords="offset points",
                color="tab:blue",
                annotation_clip=False,
                bbox=LABEL_BOX,
            )
        if logx:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
            ax.xaxis.set_major_formatter(FuncFormatter(_flops_label))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.1, y=0.12)  # room for the labels of the outermost points
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{p} reward (mean ± se over prompts)")
        ax.set_title(f"{p}: VAS vs Best-of-N")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
    plot_grid(report, out)


def _flops_label(x, _pos=None) -> str:
    """Short tick labels for FLOP counts (50M, 1G, 2.5T), which never run into each other."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:g}{unit}"
    return f"{x:g}"


def plot_grid(report: dict, out: Path) -> bool:
    """Heatmaps of each reward over the composed (beta_1, beta_2) grid; False if there is no grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [r for r in report["rows"] if r.get("composed")]
    names = report["rewards"][:2]
    if not grid or len(names) < 2:
        return False
    b1 = sorted({r["beta"][0] for r in grid})
    b2 = sorted({r["beta"][1] for r in grid})
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.2))
    for ax, name in zip(axes, names):
        z = np.full((len(b2), len(b1)), np.nan)
        for r in grid:
            z[b2.index(r["beta"][1]), b1.index(r["beta"][0])] = r["rewards"][name]
        im = ax.imshow(z, origin="lower", cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(z):
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    f"{v:+.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v < np.nanmean(z) else "black",
                )
        ax.set_xticks(range(len(b1)), [f"{b:g}" for b in b1])
        ax.set_yticks(range(len(b2)), [f"{b:g}" for b in b2])
        ax.set_xlabel(f"β₁ ({names[0]} value)")
        ax.set_ylabel(f"β₂ ({names[1]} value)")
        ax.set_title(f"{name} reward")
        fig.colorbar(im, ax=ax, shrink=0.85)
    fig.suptitle("Two rewards composed: each reward over the β₁ × β₂ grid")
    fig.tight_layout()
    fig.savefig(out / GRID_PLOT, dpi=120)
    plt.close(fig)
    return True
