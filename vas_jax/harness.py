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

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .best_of_n_stats import ADMISSIBLE_KL, bon_kl_bound, bon_kl_estimate, expected_best, expected_other, soft_bon
from .blockwise import BlockSetting, beta_matters, block_kl_bound, blockwise_decode, search_blocks
from .decode import generate, vas_decode
from .flops import sequence_flops
from .tokenizer import default_pad_id, end_of_turn_ids


def _stats(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def per_prompt_stats(x, n_prompts: int) -> tuple[float, float]:
    """Mean and standard error over prompts of per-prompt means (x: prompt-major, equal samples each)."""
    return _stats(np.asarray(x, np.float64).reshape(n_prompts, -1).mean(axis=1))


class _Programs:
    """Runs decode plans through compiled programs, compiled once per spec and argument shapes, so
    that the timed call is the run alone (no warm-up call: on a CPU every sample counts)."""

    def __init__(self):
        self.compiled = {}

    def run(self, plan) -> tuple:
        """(DecodeResult, seconds of the run)."""
        # the models' graph definitions too: two value models of one spec may differ in architecture
        key = (plan.spec, plan.graphdefs, tuple(getattr(a, "shape", None) for a in plan.args))
        if key not in self.compiled:
            self.compiled[key] = plan.compile()
        t = time.perf_counter()
        out = self.compiled[key](plan.states, *plan.args)
        jax.block_until_ready(out.tokens)
        return out, time.perf_counter() - t


def _concat(results):
    return jax.tree.map(lambda *x: jnp.concatenate(x, axis=0), *results)


MAX_ROWS = 256  # rows per decode call: SmolLM2 on 2 CPU cores makes the most tokens/s near here (BENCHMARKS.md)


def _rows_per_call(models, prompt_ids, max_new_tokens: int, budget: float = 2**31) -> int:
    """Rows one call decodes: at most MAX_ROWS, and the KV caches of every model under `budget` bytes."""
    length = max(len(p) for p in prompt_ids) + max_new_tokens
    per_row = sum(2 * m.config.num_layers * m.config.num_kv_heads * m.config.head_dim * 4 * length for m in models)
    return max(1, min(MAX_ROWS, int(budget // per_row)))


def distinct_n(texts, n: int) -> float:
    """Repetition: per answer, its distinct word n-grams over all its word n-grams, averaged over
    answers (answers with fewer than n words are skipped; 0 when all are). 1.0: no n-gram repeats."""
    fracs = []
    for t in texts:
        w = t.split()
        grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        if grams:
            fracs.append(len(set(grams)) / len(grams))
    return float(np.mean(fracs)) if fracs else 0.0


def text_stats(res, texts) -> dict:
    """distinct-2/3 of the answers and the base's mean log-likelihood per token of them."""
    lens = np.asarray(res.lengths)
    lp = np.asarray(res.logprobs).sum(axis=1)
    return dict(
        distinct2=distinct_n(texts, 2),
        distinct3=distinct_n(texts, 3),
        loglik_per_token=float(lp.sum() / max(1, lens.sum())),
    )


class _Comparison:
    """What every row of one comparison shares (models, prompts, rewards, settings), and the ways
    each row is decoded, scored, costed and timed."""

    def __init__(
        self, base, tok, prompt_ids, values, rewards, prompt_texts, *, samples, max_new_tokens, top_k, seed,
        reward_flops, attention, temperature, rule,
    ):  # fmt: skip
        from .rewards import call_reward

        self.base, self.tok, self.prompt_ids, self.values, self.rewards = base, tok, prompt_ids, values, rewards
        self.prompt_texts, self.samples, self.max_new_tokens, self.top_k = prompt_texts, samples, max_new_tokens, top_k
        self.seed, self.reward_flops, self.attention = seed, reward_flops, attention
        self.temperature, self.rule = temperature, rule
        self.call_reward = call_reward
        self.primary = list(rewards)[0]
        self.eos, self.pad = end_of_turn_ids(tok), default_pad_id(tok)
        self.key = jax.random.key(self.seed)
        self.P = len(prompt_ids)
        self.mean_prompt = float(np.mean([len(p) for p in prompt_ids]))
        self.programs = _Programs()
        self.common = dict(
            max_new_tokens=self.max_new_tokens, eos_token_id=self.eos, pad_id=self.pad, attention=self.attention,
            run=False,
        )  # fmt: skip

    def score(self, res, n_per_prompt):
        resp = [self.tok.decode(t, skip_special_tokens=True) for t in res.token_lists()]
        ps = [p for p in self.prompt_texts for _ in range(n_per_prompt)]
        return {nm: np.asarray(self.call_reward(fn, ps, resp), np.float64) for nm, fn in self.rewards.items()}, resp

    def cost(self, mean_len, vms=()):
        f = sequence_flops(self.base.config, self.mean_prompt, mean_len)
        for vm in vms:
            scalar = vm.config.head == "score"
            f += sequence_flops(
                vm.config,
                self.mean_prompt,
                mean_len,
                tokens_per_step=(self.top_k + 1) if scalar else 1,
                with_head=not scalar,
            )
        if self.reward_flops is not None:
            f += self.reward_flops(int(self.mean_prompt + mean_len))
        return f

    def decode(self, make_plan, n, models):
        """Every prompt's n samples, in calls of at most the rows that fit: (result, seconds)."""
        per_call = max(1, _rows_per_call(models, self.prompt_ids, self.max_new_tokens) // n)
        parts, seconds = [], 0.0
        for i in range(0, self.P, per_call):
            res, dt = self.programs.run(make_plan(self.prompt_ids[i : i + per_call]))
            parts.append(res)
            seconds += dt
        return _concat(parts), seconds

    def stats(self, sc):
        """({reward: mean}, {reward: standard error}), over prompts."""
        both = {nm: per_prompt_stats(v, self.P) for nm, v in sc.items()}
        return {nm: m for nm, (m, _) in both.items()}, {nm: se for nm, (_, se) in both.items()}

    def outcome(self, res, dt, n_per_prompt):
        """A guided row's shared fields (rewards with standard errors, time, length, text statistics),
        and the answers."""
        sc, resp = self.score(res, n_per_prompt)
        means, ses = self.stats(sc)
        fields = dict(
            reward_mean=means[self.primary],
            reward_se=ses[self.primary],
            seconds_per_response=dt / len(resp),
            rewards=means,
            rewards_se=ses,
            mean_length=float(np.asarray(res.lengths).mean()),
            **text_stats(res, resp),
        )
        return fields, resp

    def vas_row(self, vms, beta, **extra):
        res, dt = self.decode(
            lambda ps: vas_decode(
                self.base, vms, ps, beta=beta, key=self.key, top_k=self.top_k, num_samples=self.samples,
                temperature=self.temperature, rule=self.rule, **self.common,
            ),
            self.samples,
            [self.base, *vms],
        )  # fmt: skip
        fields, resp = self.outcome(res, dt, self.samples)
        kl, kl_se = per_prompt_stats(np.asarray(res.kl()), self.P)
        row = dict(
            method="vas",
            rule=self.rule,
            beta=[float(b) for b in beta],
            n=1,
            kl=kl,
            kl_se=kl_se,
            kl_kind="estimate",
            admissible=bool(kl <= ADMISSIBLE_KL),
            flops_per_response=self.cost(fields["mean_length"], vms),
            **fields,
            **extra,
        )
        return row, resp

    def block_row(self, st: BlockSetting):
        """A blockwise search's row: its own call, its FLOPs for the K rows of every block it ran."""
        k, guide = st.block_samples, self.values[:1]
        res, dt = self.decode(
            lambda ps: blockwise_decode(
                self.base, guide, ps, beta=[st.beta], key=self.key, block=st.block, block_samples=k, keep=st.keep,
                rule=st.rule, num_samples=self.samples, max_new_tokens=self.max_new_tokens, eos_token_id=self.eos,
                pad_id=self.pad, run=False,
            ),
            self.samples * k,
            [self.base, *guide],
        )  # fmt: skip
        fields, resp = self.outcome(res, dt, self.samples)
        blocks = np.asarray(res.blocks)
        steps = float(np.minimum(blocks * st.block, self.max_new_tokens).mean())  # tokens each of the K rows ran
        flops = 0.0
        for m in (self.base, *guide):  # a prefill per prompt, then K rows of decode steps
            pre = sequence_flops(m.config, self.mean_prompt, 0)
            flops += pre + k * (sequence_flops(m.config, self.mean_prompt, steps) - pre)
        if self.reward_flops is not None:
            flops += self.reward_flops(int(self.mean_prompt + fields["mean_length"]))
        kl, _ = per_prompt_stats(np.asarray(res.kl_bound), self.P)
        row = dict(
            method="block",
            setting=st.label(),
            block_samples=k,
            block=st.block,
            keep=st.keep,
            rule=st.rule,
            beta=[float(st.beta)],
            n=k,
            kl=kl,
            kl_se=0.0,
            kl_kind="bound",
            kl_bound_max=search_blocks(self.max_new_tokens, st.block) * block_kl_bound(k, st.keep),  # every block
            admissible=bool(kl <= ADMISSIBLE_KL),
            flops_per_response=flops,
            mean_blocks=float(blocks.mean()),
            **fields,
        )
        return row, resp

    def best_of_n(self, bon_ns, bar):
        """Best-of-N: each n its own call and its own time; the samples of all of them make the pool.
        Returns the calls {n: (result, seconds, scores, answers)} and the pool {reward: [P, pool]}."""
        calls = {}
        for n in bon_ns:
            k = jax.random.fold_in(self.key, n)
            res, dt = self.decode(
                lambda ps, k=k, n=n: generate(self.base, ps, key=k, num_samples=n, **self.common), n, [self.base]
            )
            calls[n] = (res, dt, *self.score(res, n))
            bar.update(1)
        pool = {
            nm: np.concatenate([c[2][nm].reshape(self.P, -1) for c in calls.values()], axis=1) for nm in self.rewards
        }
        return calls, pool

    def base_row(self, calls, pool):
        """The base: the pool's mean reward, timed by the n = 1 call, its own answers' statistics."""
        res1, dt1, _, resp1 = calls[1]
        lens = np.asarray(res1.lengths)
        means, ses = self.stats(pool)
        return dict(
            method="base",
            beta=None,
            n=1,
            reward_mean=means[self.primary],
            reward_se=ses[self.primary],
            kl=0.0,
            kl_se=0.0,
            kl_kind="exact",
            flops_per_response=self.cost(float(lens.mean())),
            seconds_per_response=dt1 / self.P,
            rewards=means,
            rewards_se=ses,
            mean_length=float(lens.mean()),
            **text_stats(res1, resp1),
        )

    def bon_rows(self, calls, pool, bon_ns, picks, examples):
        """A row per n: the rewards are the pool's estimates over every subset of n; the answers
        (text statistics, examples) are the call's own picks."""
        primary, P, rows = self.primary, self.P, []
        prefill = sequence_flops(self.base.config, self.mean_prompt, 0)
        for n in bon_ns:
            res, dt, sc, resp = calls[n]
            pick = sc[primary].reshape(P, n).argmax(axis=1) + np.arange(P) * n
            m, se = _stats(expected_best(pool[primary], n))
            mean_len = float(np.asarray(res.lengths).mean())
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
                    kl_estimate=float(np.mean(bon_kl_estimate(pool[primary], n))),
                    flops_per_response=prefill + n * (self.cost(mean_len) - prefill),
                    seconds_per_response=dt / P,
                    mean_length=mean_len,
                    rewards={nm: picks[bon_ns.index(n)][nm] for nm in self.rewards},
                    **text_stats(jax.tree.map(lambda x, pick=pick: x[pick], res), [resp[i] for i in pick]),
                )
            )
            if n == bon_ns[-1]:
                examples[f"best-of-{n}"] = [resp[i] for i in pick[:3]]
        return rows


def _soft_bon_rows(pool, big: dict, bon_max: int, taus, scale: float, seed: int) -> list[dict]:
    """Soft Best-of-bon_max at temperatures taus x scale: a curve of its own on the reward-KL plane,
    from the same pool, at Best-of-bon_max's cost (`big`, its row)."""
    rows = []
    for t in taus:
        r_soft, kl_soft = soft_bon(pool, bon_max, t * scale, seed=seed)
        m, se = _stats(r_soft)
        rows.append(
            dict(
                method="soft_bon",
                beta=None,
                n=bon_max,
                tau=float(t),
                reward_mean=m,
                reward_se=se,
                kl=float(kl_soft.mean()),
                kl_se=_stats(kl_soft)[1],
                kl_kind="estimate",
                flops_per_response=big["flops_per_response"],
                seconds_per_response=big["seconds_per_response"],
                mean_length=big["mean_length"],
            )
        )
    return rows


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
    soft_taus: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    prompt_texts: Sequence[str] | None = None,
    temperature: float = 1.0,
    rule: str = "mean",
    blockwise: Sequence[BlockSetting] = (),
) -> dict:
    """Run Best-of-N for n = 1, 2, 4 ... bon_max, soft Best-of-bon_max at temperatures `soft_taus`
    (times the standard deviation of the base's rewards), VAS (sampling its augmented distribution at
    `temperature`) over `betas` (first value model, first reward) and a grid of the first two value
    models composed. Returns the report dict.

    Best-of-N: each n is decoded and timed by its own call (n samples per prompt). Its reward and
    KL estimate come from all those calls' samples together, a pool of 2 bon_max - 1 base samples
    per prompt (`vas_jax.best_of_n_stats`); the base row is the pool's mean, timed by the n = 1 call.
    attention: the decode attention of every run (`generate`). prompt_texts: the prompts as the
    rewards and the report see them (default: the ids decoded; give the texts before a chat template).
    rule: VAS's guidance rule, "mean" or "soft" (distributional value heads; `vas_jax.guidance`).
    blockwise: blockwise searches guided by the first value model (`vas_jax.blockwise`), each a row
    "block" whose KL is its bound (the mean over responses of blocks used x the per-block bound)."""
    from tqdm import tqdm

    names = list(rewards)
    primary = names[0]
    P = len(prompt_ids)
    if prompt_texts is None:
        prompt_texts = [tok.decode(p, skip_special_tokens=True) for p in prompt_ids]
    prompt_texts = list(prompt_texts)
    cmp = _Comparison(
        base, tok, prompt_ids, values, rewards, prompt_texts, samples=samples, max_new_tokens=max_new_tokens,
        top_k=top_k, seed=seed, reward_flops=reward_flops, attention=attention, temperature=temperature, rule=rule,
    )  # fmt: skip
    bon_ns = [2**i for i in range(int(math.log2(bon_max)) + 1)]
    total = len(bon_ns) + len(betas) + len(composed) + len(blockwise)
    bar = tqdm(total=total, desc="compare", unit="run", disable=not progress)

    calls, pool = cmp.best_of_n(bon_ns, bar)
    rows = [cmp.base_row(calls, pool)]
    examples = {"base": calls[1][3][:3]}
    picks = bon_picks(pool, primary, bon_ns)  # every reward over the primary's picks
    rows += cmp.bon_rows(calls, pool, bon_ns, picks, examples)
    scale = float(pool[primary].std()) or 1.0
    rows += _soft_bon_rows(pool[primary], rows[-1], bon_max, soft_taus, scale, seed)

    # VAS over the beta grid (beta is traced: one compilation for the whole grid)
    for b in betas:
        row, resp = cmp.vas_row(values[:1], [b])
        rows.append(row)
        examples[f"vas beta={b:g}"] = resp[::samples][:3]
        bar.update(1)

    # blockwise searches with the first value model, on the same prompts
    for st in blockwise:
        row, resp = cmp.block_row(st)
        rows.append(row)
        examples[f"blockwise {st.label()}"] = resp[::samples][:3]
        bar.update(1)

    # composed rewards: a grid over (beta_1, beta_2) with the first two value models
    grid = []
    for b1, b2 in composed if len(values) >= 2 else ():
        grid.append(cmp.vas_row(values[:2], [b1, b2], composed=True)[0])
        bar.update(1)
    bar.close()
    # Best-of-N optimising each reward alone, and where that leaves the others: composition's reference
    reference = {a: picks if a == primary else bon_picks(pool, a, bon_ns) for a in names[:2]} if grid else {}
    return dict(
        primary_reward=primary,
        rewards=names,
        rows=rows + grid,
        compute_ratio=compute_ratios(rows),
        composition_reference=reference,
        composition=composition_checks(rows[0], grid, reference, names),
        admissible_kl=ADMISSIBLE_KL,
        examples=examples,
        prompts=prompt_texts[:3],
        settings=dict(
            prompts=P,
            samples=samples,
            bon_max=bon_max,
            bon_pool=int(pool[primary].shape[1]),
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            vas_temperature=temperature,
            seed=seed,
            blockwise=[dataclasses.asdict(b) for b in blockwise],
            soft_bon_tau_unit=scale,
            standard_errors="over prompts (samples averaged per prompt)",
            seconds="measured per row (Best-of-N: each n its own call)",
            flops="counted analytically",
        ),
    )


GUIDED = ("vas", "block")  # the methods compared with Best-of-N: tokenwise VAS and blockwise search


def method_label(r: dict) -> str:
    """How the report names a guided row: "VAS beta=2" or "blockwise K=4 L=8 argmax"."""
    if r["method"] == "block":
        return f"blockwise {r['setting']}"
    return "VAS beta=" + ",".join(f"{b:g}" for b in r["beta"])


def compute_ratios(rows) -> list[dict]:
    """For each admissible guided setting (VAS's beta, a blockwise search; KL within Best-of-128's
    bound): the smallest Best-of-N whose reward reaches its, and that Best-of-N's cost over its.
    Other settings are listed, unranked."""
    bon = sorted((r for r in rows if r["method"] == "bon"), key=lambda r: r["n"])
    out = []
    for v in (r for r in rows if r["method"] in GUIDED and not r.get("composed")):
        hit = next((b for b in bon if b["reward_mean"] >= v["reward_mean"]), None) if v["admissible"] else None
        out.append(
            dict(
                method=v["method"],
                label=method_label(v),
                beta=v["beta"],
                vas_reward=v["reward_mean"],
                vas_kl=v["kl"],
                admissible=v["admissible"],
                bon_n=hit["n"] if hit else None,
                bon_reward=hit["reward_mean"] if hit else None,
                flops_ratio=hit["flops_per_response"] / v["flops_per_response"] if hit else None,
                seconds_ratio=hit["seconds_per_response"] / v["seconds_per_response"] if hit else None,
                beyond_bon_max=v["admissible"] and hit is None,
            )
        )
    return out


def bon_picks(pool: dict, by: str, ns) -> list[dict]:
    """Best-of-n picking by reward `by`, for each n: every reward's mean over its picks, estimated
    over all size-n subsets of the pool ({reward: [P, m] samples}), and n."""
    return [
        {
            nm: float(np.mean(expected_best(r, n) if nm == by else expected_other(pool[by], r, n)))
            for nm, r in pool.items()
        }
        | {"n": n}
        for n in ns
    ]


def composition_checks(base: dict, grid: list, reference: dict, names: list) -> list[dict]:
    """For each composed row that raises one beta alone: how far it moved its own reward and the
    other, against Best-of-N raising that reward alone as far (interpolated along its n; None beyond
    Best-of-N's largest n). The rewards are coupled, so Best-of-N is the reference for how much the
    other should move. VAS's moves are from the grid's (0, 0) row where it has one (its samples
    share their random draws with the other rows, so the noise of the sampling cancels), else the base's;
    Best-of-N's from the base's."""
    out = []
    zero = next((r for r in grid if not any(r["beta"][:2])), base)
    for r in grid:
        raised = [i for i, b in enumerate(r["beta"][:2]) if b != 0]
        if len(raised) != 1:
            continue
        a, b = names[raised[0]], names[1 - raised[0]]
        own, other = r["rewards"][a] - zero["rewards"][a], r["rewards"][b] - zero["rewards"][b]
        level = base["rewards"][a] + own  # Best-of-N raising reward a as far from the base
        curve = sorted((p[a], p[b]) for p in reference.get(a, []))
        bon_other = None
        if curve and curve[0][0] <= level <= curve[-1][0]:
            bon_other = float(np.interp(level, [c[0] for c in curve], [c[1] for c in curve])) - base["rewards"][b]
        out.append(
            dict(
                beta=r["beta"],
                raised=a,
                other=b,
                own_move=own,
                other_move=other,
                bon_other_move=bon_other,
                within=None if bon_other is None else bool(abs(other) <= abs(bon_other)),
            )
        )
    return out


def kl_text(r: dict) -> str:
    """The KL cell: an estimate with its standard error, or a bound marked as one (with Best-of-N's
    tie-aware estimate after it)."""
    if r.get("kl_kind") == "bound":
        est = f" ~{r['kl_estimate']:.2f}" if "kl_estimate" in r else ""
        return f"<={r['kl']:.2f}{est}"
    if r.get("kl_kind") == "estimate":
        return f"{r['kl']:.2f}±{r['kl_se']:.2f}"
    return f"{r['kl']:.2f}"


def _setting(r: dict) -> str:
    if r["method"] == "soft_bon":
        return f"n={r['n']} τ={r['tau']:g}σ"
    if r["method"] == "bon":
        return f"n={r['n']}"
    if r["method"] == "block":
        return r["setting"]
    return "" if r["beta"] is None else "β=" + ",".join(f"{b:g}" for b in r["beta"])


def format_table(report: dict) -> str:
    p = report["primary_reward"]
    bound = report.get("admissible_kl", ADMISSIBLE_KL)
    lines = [
        f"{'method':<9}{'setting':>22} {p + ' (mean ± se)':>22} {'KL (nats)':>15} {'dist-2':>6} {'ll/tok':>6} "
        f"{'MFLOP/resp':>11} {'ms/resp':>8}"
    ]
    for r in report["rows"]:
        extra = ""
        if r.get("composed"):
            extra = "  " + " ".join(f"{k}={v:+.3f}" for k, v in r["rewards"].items())
        mark = "" if r.get("admissible", True) else "  (KL beyond Best-of-128's bound: not admissible)"
        ll = f"{r['loglik_per_token']:6.2f}" if "loglik_per_token" in r else f"{'':6}"
        d2 = f"{r['distinct2']:6.2f}" if "distinct2" in r else f"{'':6}"
        lines.append(
            f"{r['method']:<9}{_setting(r):>22} {r['reward_mean']:>13.3f} ± {r['reward_se']:<6.3f} "
            f"{kl_text(r):>15} {d2} {ll} {r['flops_per_response'] / 1e6:>11.2f} "
            f"{r['seconds_per_response'] * 1e3:>8.2f}{extra}{mark}"
        )
    lines.append("")
    lines.append(
        "standard errors over prompts. KL: VAS and soft Best-of-N estimates ± se; Best-of-N the bound "
        "log n - (n-1)/n, then ~ its estimate from the base's rewards with ties; blockwise search (block) "
        "its bound, blocks used x the per-block bound, averaged over responses. dist-2: distinct word "
        "bigrams per answer; ll/tok: the base's mean log-likelihood per token of the answers. Seconds "
        "measured per row, FLOPs counted."
    )
    lines.append(
        f"admissible: guided settings with KL <= {bound:.2f} nats (Best-of-128's bound); only they are compared"
    )
    for c in report["compute_ratio"]:
        name = c.get("label") or "VAS beta=" + ",".join(f"{x:g}" for x in c["beta"])
        if not c["admissible"]:
            lines.append(f"{name}: KL {c['vas_kl']:.2f} > {bound:.2f}, not admissible: not compared")
        elif c["beyond_bon_max"]:
            lines.append(
                f"{name}: reward {c['vas_reward']:.3f} is above every Best-of-N up to n={report['settings']['bon_max']}"
            )
        else:
            lines.append(
                f"{name}: reward {c['vas_reward']:.3f}; Best-of-{c['bon_n']} reaches it at "
                f"{c['flops_ratio']:.1f}x its FLOPs and {c['seconds_ratio']:.1f}x its seconds"
            )
    for c in report.get("composition", []):
        b = ",".join(f"{x:g}" for x in c["beta"])
        ref = (
            f"Best-of-N raising {c['raised']} as far moves {c['other']} {c['bon_other_move']:+.3f}"
            f" (VAS moves it {'no more' if c['within'] else 'more'})"
            if c["bon_other_move"] is not None
            else "beyond Best-of-N's range"
        )
        lines.append(
            f"composed beta={b}: {c['raised']} {c['own_move']:+.3f}, {c['other']} {c['other_move']:+.3f}; {ref}"
        )
    return "\n".join(lines)


def format_examples(report: dict) -> str:
    """The first prompts' answers from the base, each VAS beta and Best-of-N, side by side (Markdown)."""
    out = ["# Answers side by side", ""]
    for i, prompt in enumerate(report["prompts"]):
        out += [f"## {i + 1}. {prompt.strip()}", "", "| method | answer |", "| --- | --- |"]
        for method, answers in report["examples"].items():
            if i < len(answers):
                text = " ".join(answers[i].split()).replace("|", "\\|")
                out.append(f"| {method} | {text} |")
        out.append("")
    return "\n".join(out)


def write_report(report: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    (out / EXAMPLES).write_text(format_examples(report))
    try:
        plot(report, out)
    except ImportError:
        pass  # matplotlib is optional: the JSON and the table still say everything
    return out


PLOTS = ("reward_vs_cost.png", "reward_vs_kl.png")
LABEL_BOX = dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8)  # labels stay legible over lines
GRID_PLOT = "composed_grid.png"
EXAMPLES = "examples.md"


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
        ("kl", PLOTS[1], "KL to the base (nats): VAS estimated; Best-of-N (and blockwise) bound", False),
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
        for r in bon:  # Best-of-N labels below-right of their points (VAS's curve runs below Best-of-N's)
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
        if xkey == "kl":
            est = [r for r in bon if "kl_estimate" in r]
            ax.plot(
                [r["kl_estimate"] for r in est],
                [r["reward_mean"] for r in est],
                ls="--",
                marker=".",
                color="tab:gray",
                alpha=0.6,
                label="Best-of-N, KL estimated (ties)",
                zorder=3,
            )
            soft = [r for r in rows if r["method"] == "soft_bon"]
            if soft:
                ax.errorbar(
                    [r["kl"] for r in soft],
                    [r["reward_mean"] for r in soft],
                    [r["reward_se"] for r in soft],
                    marker="^",
                    ms=4,
                    capsize=2,
                    color="tab:green",
                    label=f"soft Best-of-{soft[0]['n']} (temperature τ, in σ of the rewards)",
                    zorder=3,
                )
                for r in soft:  # each soft point says its τ, above-left (its curve runs above Best-of-N's)
                    ax.annotate(f"τ={r['tau']:g}", (r["kl"], r["reward_mean"]), fontsize=7, xytext=(-6, 6),
                                ha="right", textcoords="offset points", color="tab:green", annotation_clip=False,
                                bbox=LABEL_BOX)  # fmt: skip
        ok = [r for r in vas if r.get("admissible", True)]
        bad = [r for r in vas if not r.get("admissible", True)]
        xerr = [r["kl_se"] for r in vas] if xkey == "kl" else None
        ax.errorbar(
            [r[xkey] for r in vas],
            [r["reward_mean"] for r in vas],
            [r["reward_se"] for r in vas],
            xerr,
            marker="none",
            capsize=2,
            label="VAS",
            color="tab:blue",
            zorder=4,
        )
        ax.scatter([r[xkey] for r in ok], [r["reward_mean"] for r in ok], marker="s", s=20, color="tab:blue", zorder=5)
        ax.scatter(
            [r[xkey] for r in bad],
            [r["reward_mean"] for r in bad],
            marker="s",
            s=30,
            facecolor="white",
            edgecolor="tab:blue",
            label="VAS, not admissible" if bad else None,
            zorder=5,
        )
        for i, r in enumerate(vas):  # alternately above-left and below-right: neighbours' labels never meet
            ax.annotate(
                f"β={r['beta'][0]:g}",
                (r[xkey], r["reward_mean"]),
                fontsize=7,
                xytext=(-5, 7) if i % 2 == 0 else (5, -13),
                ha="right" if i % 2 == 0 else "left",
                textcoords="offset points",
                color="tab:blue",
                annotation_clip=False,
                bbox=LABEL_BOX,
            )
        plot_blockwise(ax, [r for r in rows if r["method"] == "block"], xkey)
        if logx:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
            ax.xaxis.set_major_formatter(FuncFormatter(_flops_label))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.1, y=0.12)  # room for the labels of the outermost points
        if xkey == "kl":  # settings beyond Best-of-128's KL bound are not admissible: shaded to the edge
            bound = report.get("admissible_kl", ADMISSIBLE_KL)
            ax.autoscale_view()
            lo, hi = ax.get_xlim()
            hi = max(hi, bound * 1.1)
            ax.axvspan(bound, hi, color="tab:red", alpha=0.08, lw=0, label="not admissible (KL > Best-of-128)")
            ax.set_xlim(lo, hi)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{p} reward (mean ± se over prompts)")
        searched = any(r["method"] == "block" for r in rows)
        ax.set_title(f"{p}: VAS{', blockwise search' if searched else ''} vs Best-of-N")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
    plot_grid(report, out)


BLOCK_COLORS = ("tab:purple", "tab:orange", "tab:brown", "tab:olive")


def plot_blockwise(ax, rows: list, xkey: str) -> None:
    """Blockwise searches: a series per way of keeping a block (argmax, sample; mean or soft value),
    each point labelled K·L; hollow where the KL bound is beyond Best-of-128's."""
    kinds = sorted({(r["keep"], r["rule"]) for r in rows})
    for (keep, rule), color in zip(kinds, BLOCK_COLORS):
        pts = sorted((r for r in rows if (r["keep"], r["rule"]) == (keep, rule)), key=lambda r: r[xkey])
        ax.errorbar([r[xkey] for r in pts], [r["reward_mean"] for r in pts], [r["reward_se"] for r in pts],
                    ls="none", capsize=2, color=color, zorder=4)  # fmt: skip
        ax.scatter([r[xkey] for r in pts], [r["reward_mean"] for r in pts], marker="D", s=28, color=color, zorder=5,
                   facecolor=[color if r.get("admissible", True) else "white" for r in pts],
                   label=f"blockwise, {keep}{' (soft V)' if rule == 'soft' else ''}"
                         + ("; KL: its bound" if xkey == "kl" else ""))  # fmt: skip
        for r in pts:
            beta = f" β{r['beta'][0]:g}" if beta_matters(keep, rule, r["beta"][0]) else ""
            ax.annotate(f"K{r['block_samples']}·L{r['block']}{beta}", (r[xkey], r["reward_mean"]), fontsize=7,
                        xytext=(6, 2), textcoords="offset points", color=color, annotation_clip=False,
                        bbox=LABEL_BOX)  # fmt: skip


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
