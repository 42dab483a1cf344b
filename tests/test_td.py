"""lambda_returns against the reference trainer's slow per-row GAE loop."""

import numpy as np
import pytest

from vas_jax.td import lambda_returns, sparse_rewards


def gae_returns_slow(values, rewards, gamma, lam):
    """GAE over one row's response positions: delta_t = r_t + g V_{t+1} - V_t, A_t = delta_t + g l A_{t+1}."""
    n = len(values)
    adv = np.zeros(n)
    last = 0.0
    for t in reversed(range(n)):
        nv = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * nv - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv + np.asarray(values)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
@pytest.mark.parametrize("dense", [False, True])
def test_lambda_returns_match_gae_loop(gamma, lam, dense):
    rng = np.random.RandomState(int(gamma * 10 + lam * 100 + dense))
    # ragged rows, each a contiguous run (a response after a prompt of some length), right-padded
    spans = [(0, 7), (3, 9), (2, 3), (5, 12), (0, 1)]
    t = 12
    values = rng.randn(len(spans), t).astype(np.float32)
    mask = np.zeros((len(spans), t), bool)
    for i, (a, b) in enumerate(spans):
        mask[i, a:b] = True
    if dense:
        rewards = rng.randn(len(spans), t).astype(np.float32) * mask
    else:
        rewards = np.asarray(sparse_rewards(rng.randn(len(spans)), mask))
        assert (np.count_nonzero(rewards, axis=1) == 1).all()
    out = np.asarray(lambda_returns(values, rewards, mask, gamma=gamma, lam=lam))
    for i, (a, b) in enumerate(spans):
        ref = gae_returns_slow(values[i, a:b], rewards[i, a:b], gamma, lam)
        np.testing.assert_allclose(out[i, a:b], ref, rtol=1e-5, atol=1e-5)
        assert (out[i, ~mask[i]] == 0).all()


def test_sparse_reward_sits_on_last_token():
    mask = np.array([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], bool)
    r = np.asarray(sparse_rewards(np.array([2.0, -1.0]), mask))
    np.testing.assert_array_equal(r, [[0, 0, 0, 2, 0], [0, -1, 0, 0, 0]])
    # lambda = 1, gamma = 1: every position's target is the final reward
    g = np.asarray(lambda_returns(np.zeros((2, 5)), r, mask, gamma=1.0, lam=1.0))
    np.testing.assert_array_equal(g, [[0, 2, 2, 2, 0], [-1, -1, 0, 0, 0]])
