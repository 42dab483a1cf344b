"""Best-of-N's statistics from a pool of base samples per prompt: its reward, and its KL to the base.

Best-of-n samples n responses from the base and keeps the one with the highest reward; soft
Best-of-n keeps response i with probability softmax(r / tau)_i. Both are computed here from m >= n
samples per prompt that were already drawn and scored, rather than from fresh draws for every n:

- `expected_best`: the mean, over all size-n subsets of the pool, of the subset's best reward:
  the unbiased estimate of Best-of-n's expected reward (n <= m), with less variance than one draw.
- `bon_kl_estimate`: KL(Best-of-n || base) for the pool's empirical reward distribution, ties
  included. Best-of-n picks among tied rewards at random, so a reward level u of base probability
  p_u is chosen with probability q_u = F(u)^n - F(u-)^n, and KL = sum_u q_u log(q_u / p_u). Without
  ties this approaches the bound log n - (n-1)/n; with ties (integer or saturated rewards) it is
  smaller, and the bound flatters the other side of any comparison. Over a pool of m distinct
  rewards it cannot exceed log m, so for n near m it underestimates.
- `expected_other`: the mean of a second reward over Best-of-n's picks by the first (how much
  optimising one reward by selection moves another: the reference for composed guidance).
- `soft_bon`: soft Best-of-n's reward and KL for the pool's empirical distribution, by Monte Carlo
  over the n - 1 competitors of each response.
"""

from __future__ import annotations

import math

import numpy as np


def bon_kl_bound(n: int) -> float:
    """KL(Best-of-n || base) <= log n - (n-1)/n (equal when no two samples tie in reward)."""
    return float(math.log(n) - (n - 1) / n)


ADMISSIBLE_KL = bon_kl_bound(128)  # VAS settings beyond Best-of-128's bound are left out of every claim


def expected_best(rewards, n: int) -> np.ndarray:
    """float64[P]: per prompt, the mean best reward over every size-n subset of its m samples.

    rewards: [P, m]. The i-th smallest of m values is a subset's best in C(i-1, n-1) of the C(m, n)
    subsets, ties included (any of the tied values is the best)."""
    r = np.sort(np.asarray(rewards, np.float64), axis=1)
    return r @ _subset_weights(r.shape[1], n)


def expected_other(rewards, other, n: int) -> np.ndarray:
    """float64[P]: per prompt, the mean of `other` for the sample Best-of-n picks by `rewards`, over
    every size-n subset of its m samples (ties broken at random: a tied group's weight is shared
    evenly by its members). rewards, other: [P, m]."""
    r, o = np.asarray(rewards, np.float64), np.asarray(other, np.float64)
    w = _subset_weights(r.shape[1], n)  # the i-th smallest's chance of being the pick, ties not yet shared
    out = []
    for row, orow in zip(r, o):
        order = np.argsort(row, kind="stable")
        _, first, counts = np.unique(row[order], return_index=True, return_counts=True)
        total = 0.0
        for f, c in zip(first, counts):
            total += w[f : f + c].sum() * orow[order[f : f + c]].mean()
        out.append(total)
    return np.array(out)


def _subset_weights(m: int, n: int) -> np.ndarray:
    """C(i-1, n-1) / C(m, n) for i = 1..m: the i-th smallest of m distinct values is the best of
    that share of the size-n subsets."""
    if not 1 <= n <= m:
        raise ValueError(f"n={n} needs 1 <= n <= m={m}")
    i = np.arange(1, m + 1)
    with np.errstate(invalid="ignore"):
        logw = _lgamma(i) - _lgamma(n) - _lgamma(i - n + 1) - (_lgamma(m + 1) - _lgamma(n + 1) - _lgamma(m - n + 1))
    return np.where(i >= n, np.exp(logw), 0.0)


def _lgamma(x):
    return np.vectorize(math.lgamma)(np.maximum(np.asarray(x, np.float64), 1e-300))


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


def bon_kl_estimate(rewards, n: int) -> np.ndarray:
    """float64[P]: KL(Best-of-n || base) per prompt, for its samples' empirical reward distribution
    (ties resolved at random, as Best-of-n resolves them)."""
    out = []
    for row in np.asarray(rewards, np.float64):
        _, counts = np.unique(row, return_counts=True)
        p = counts / counts.sum()
        F = np.cumsum(p)
        q = F**n - np.concatenate([[0.0], F[:-1]]) ** n
        keep = q > 0
        out.append(max(0.0, float(np.sum(q[keep] * np.log(q[keep] / p[keep])))))  # 0 at n = 1, not -1e-17
    return np.array(out)


def soft_bon(rewards, n: int, tau: float, *, draws: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(reward, KL), each float64[P]: soft Best-of-n at temperature tau, per prompt, for its samples'
    empirical distribution. Sample i of m is chosen with probability (1/m) w_i, where
    w_i = n E[e_i / (e_i + S)], e = exp(r / tau) and S the sum of n - 1 draws from the pool."""
    rng = np.random.default_rng(seed)
    rewards_out, kls = [], []
    for row in np.asarray(rewards, np.float64):
        m = len(row)
        z = row / tau
        # log S per draw, and e_i / (e_i + S) = sigmoid(z_i - log S): no overflow at any temperature
        zo = z[rng.integers(0, m, size=(draws, n - 1))]  # [draws, n - 1]
        top = zo.max(axis=1, keepdims=True) if n > 1 else np.zeros((draws, 1))
        log_s = (top + np.log(np.exp(zo - top).sum(axis=1, keepdims=True)))[:, 0] if n > 1 else np.full(draws, -np.inf)
        w = n * np.mean(_sigmoid(z[:, None] - log_s[None, :]), axis=1)  # [m]
        pi = w / w.sum()  # the Monte Carlo weights sum to m only on average
        rewards_out.append(float(pi @ row))
        kls.append(float(np.sum(pi * np.log(np.maximum(pi * m, 1e-300)))))
    return np.array(rewards_out), np.array(kls)
