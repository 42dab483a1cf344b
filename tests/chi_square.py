"""Pearson's goodness-of-fit test for sampled token counts, with every cell expecting at least 5."""

import numpy as np
from scipy import stats


def fit_pvalue(counts, probs, m: int) -> tuple[float, float, int]:
    """(chi2, p-value, cells) of `counts` (per token) against m draws from `probs`.

    Tokens expecting fewer than 5 draws share one cell; when that cell still expects fewer than 5
    it joins the smallest of the others, so that no cell's expectation is small enough for one rare
    draw to dominate the statistic (the chi-square approximation needs about 5 per cell). Tokens of
    probability 0 are left out: callers check that none was drawn."""
    counts, ex = np.asarray(counts, np.float64), np.asarray(probs, np.float64) * m
    big, small = ex >= 5, (ex < 5) & (ex > 0)
    obs, exp = list(counts[big]), list(ex[big])
    assert exp, "too few draws for a chi-square test: no token expects 5"
    tail_obs, tail_ex = counts[small].sum(), ex[small].sum()
    if tail_ex >= 5:
        obs.append(tail_obs)
        exp.append(tail_ex)
    elif tail_ex > 0:
        i = int(np.argmin(exp))
        obs[i] += tail_obs
        exp[i] += tail_ex
    obs, exp = np.asarray(obs), np.asarray(exp)
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    return chi2, float(stats.chi2.sf(chi2, len(exp) - 1)), len(exp)
