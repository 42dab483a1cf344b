"""Best-of-N's statistics from a pool of samples, against enumeration and simulation."""

import itertools
import math

import numpy as np
import pytest

from vas_jax.best_of_n_stats import bon_kl_bound, bon_kl_estimate, expected_best, expected_other, soft_bon


def test_expected_best_is_the_mean_over_every_subset():
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 4, size=(3, 7)).astype(float)  # ties on purpose
    for n in range(1, 8):
        want = [np.mean([max(c) for c in itertools.combinations(row, n)]) for row in pool]
        np.testing.assert_allclose(expected_best(pool, n), want, rtol=1e-12)
    with pytest.raises(ValueError):
        expected_best(pool, 8)


def test_expected_other_is_the_mean_over_every_subset_with_ties_broken_at_random():
    rng = np.random.default_rng(1)
    pool = rng.integers(0, 3, size=(3, 6)).astype(float)  # ties on purpose
    other = rng.normal(size=(3, 6))
    for n in range(1, 7):
        want = []
        for row, orow in zip(pool, other):
            picks = []
            for c in itertools.combinations(range(6), n):
                best = max(row[i] for i in c)
                picks.append(np.mean([orow[i] for i in c if row[i] == best]))  # a tie: each as likely
            want.append(np.mean(picks))
        np.testing.assert_allclose(expected_other(pool, other, n), want, rtol=1e-12)
    # picking by a reward, its own value is what Best-of-n gets
    np.testing.assert_allclose(expected_other(pool, pool, 3), expected_best(pool, 3), rtol=1e-12)


def test_bon_kl_estimate_with_and_without_ties():
    # distinct rewards: the estimate approaches the bound as the pool grows
    pool = np.random.default_rng(1).normal(size=(1, 20000))
    for n in (2, 4, 16):
        assert bon_kl_estimate(pool, n)[0] == pytest.approx(bon_kl_bound(n), abs=0.01)
    # one reward level: Best-of-n is the base, KL 0
    assert bon_kl_estimate(np.zeros((1, 50)), 8)[0] == 0.0
    # a coin (reward 1 with probability 1/2): Best-of-n keeps a 1 with probability 1 - 2^-n, and
    # among responses of equal reward keeps the base's proportions
    coin = np.array([[0.0, 1.0] * 50])
    for n in (1, 2, 4):
        q1 = 1 - 0.5**n
        want = q1 * math.log(q1 / 0.5) + (1 - q1) * math.log((1 - q1) / 0.5)
        assert bon_kl_estimate(coin, n)[0] == pytest.approx(want, rel=1e-12)
        assert bon_kl_estimate(coin, n)[0] < bon_kl_bound(n) or n == 1


def test_soft_bon_between_the_base_and_best_of_n():
    pool = np.random.default_rng(2).normal(size=(4, 64))
    n = 8
    hard = expected_best(pool, n).mean()
    r_cold, kl_cold = soft_bon(pool, n, 1e-4, draws=4096)
    r_hot, kl_hot = soft_bon(pool, n, 1e4, draws=256)
    # a tiny temperature is Best-of-n (drawn with replacement from the pool, hence a little below)
    assert r_cold.mean() == pytest.approx(hard, abs=0.05)
    assert np.all(kl_cold <= bon_kl_bound(n) + 0.05)
    # a huge one is the base: its mean reward, KL 0
    np.testing.assert_allclose(r_hot, pool.mean(axis=1), atol=1e-3)
    assert np.all(np.abs(kl_hot) < 1e-6)
    # in between, reward and KL both rise as the temperature falls
    rs, kls = zip(*(soft_bon(pool, n, t) for t in (2.0, 1.0, 0.5, 0.25)))
    assert all(np.diff([r.mean() for r in rs]) > 0) and all(np.diff([k.mean() for k in kls]) > 0)
