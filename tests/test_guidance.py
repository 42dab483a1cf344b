"""The guidance rules against exact cases: a tree-structured toy base whose KL-optimal policy
pi*(y) ∝ pi_base(y) exp(beta r(y)) can be written down, and the soft value's bounds.

The tree's decoders are the functions the decoders call (`guidance.candidate_values`,
`guidance.vas_logits`, `sampling.top_k`, `sampling.sample_scored`), fed by tables instead of models.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from chi_square import fit_pvalue
from tree_base import ATOMS, Tree

from vas_jax import VasError, guidance, sampling


def soft_slow(p, z, beta):
    """log sum_i p_i exp(beta z_i), in float64."""
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    m = (beta * z)[p > 0].max()
    return m + np.log(np.sum(p * np.exp(beta * z - m)))


@pytest.mark.parametrize("beta", [1e-3, 1e-2, 0.1, 1.0, 10.0])
def test_soft_value_lies_between_jensen_and_hoeffding(beta):
    """0 <= soft(beta) - beta * mean <= beta^2 (z_max - z_min)^2 / 8, on random distributions."""
    rng = np.random.default_rng(0)
    z = np.sort(rng.normal(size=9)).astype(np.float32)
    logits = (rng.normal(size=(64, 9)) * 3).astype(np.float32)
    soft = np.asarray(guidance.soft_value(jnp.asarray(logits), z, jnp.full((64,), beta)), np.float64)
    mean = np.asarray(guidance.distribution_mean(jnp.asarray(logits), z), np.float64)
    gap = soft - beta * mean
    tol = 1e-5 * max(1.0, beta)  # float32 rounding of the two terms
    assert (gap >= -tol).all()
    assert (gap <= beta**2 * (z.max() - z.min()) ** 2 / 8 + tol).all()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = np.array([soft_slow(row, z, beta) for row in p])
    np.testing.assert_allclose(soft, ref, rtol=1e-5, atol=1e-5)


def test_soft_value_is_exactly_zero_at_beta_zero_and_finite_at_a_thousand():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(8, 5)), jnp.float32)
    assert (np.asarray(guidance.soft_value(logits, ATOMS, jnp.zeros(8))) == 0).all()
    big = np.asarray(guidance.soft_value(logits, ATOMS, jnp.full(8, 1000.0)))
    assert np.isfinite(big).all()
    # at a large beta the soft value is beta times the largest atom with mass, less a log-probability
    np.testing.assert_allclose(big, 1000.0 * ATOMS[-1] + np.asarray(jax.nn.log_softmax(logits))[:, -1], rtol=1e-5)


def test_soft_rule_is_refused_for_heads_that_know_only_a_mean():
    guidance.check_rule("soft", ("distributional", "distributional"))
    guidance.check_rule("mean", ("scalar", "vocab", "distributional"))
    with pytest.raises(VasError, match="soft rule needs a distributional value head, and v2 has a scalar head"):
        guidance.check_rule("soft", ("distributional", "scalar"), names=["v1", "v2"])
    with pytest.raises(VasError, match="unknown guidance rule"):
        guidance.check_rule("tail", ("distributional",))


BETA = 2.0


@pytest.mark.parametrize("vocab,k,restrict", [(3, 3, False), (4, 2, True)])
def test_soft_guidance_reproduces_the_kl_optimal_policy_exactly(vocab, k, restrict):
    """Conditions: every token a candidate (k = V, so centring shifts all logits alike), or
    restrict_to_topk with k < V (then pi* is of the base truncated to its top k at every step, with
    the return distributions under that truncated base); temperature 1, top-p 1, no top-k filter."""
    tree = Tree(vocab=vocab)
    target = tree.optimal(BETA, k if restrict else None)
    np.testing.assert_allclose(tree.policy(BETA, "soft", k, restrict), target, atol=1e-6)


def test_mean_guidance_does_not_reach_the_optimal_policy():
    """At the root, tokens 0 and 1 have the same mean return and different spreads: mean guidance
    cannot tell them apart, and ends at a total-variation distance >= 0.05 from pi*."""
    tree = Tree()
    assert abs(tree.returns((0,)) @ ATOMS - tree.returns((1,)) @ ATOMS) < 1e-12
    tv = 0.5 * np.abs(tree.policy(BETA, "mean", 3, False) - tree.optimal(BETA)).sum()
    assert tv >= 0.05, tv
    assert 0.5 * np.abs(tree.policy(BETA, "soft", 3, False) - tree.optimal(BETA)).sum() < 1e-6


def test_sampled_soft_guidance_matches_the_optimal_policy():
    """20k sequences drawn by the decoders' sampler (`sample_scored`) from the soft-guided logits."""
    tree = Tree()
    m = 20000
    prefixes = np.zeros((m, 0), np.int64)
    key = jax.random.key(3)
    for d in range(tree.D):
        base, aug = tree.guided_logits([tuple(p) for p in prefixes], BETA, "soft", 3, False)
        tok, _, _ = sampling.sample_scored(
            jax.random.fold_in(key, d), aug, jnp.asarray(base), sampling.SamplerSpec(), jnp.float32(1), jnp.float32(1)
        )
        prefixes = np.concatenate([prefixes, np.asarray(tok)[:, None]], axis=1)
    index = {leaf: i for i, leaf in enumerate(tree.leaves)}
    counts = np.bincount([index[tuple(p)] for p in prefixes], minlength=len(tree.leaves))
    _, pvalue, _ = fit_pvalue(counts, tree.optimal(BETA), m)
    assert pvalue > 1e-3, pvalue
