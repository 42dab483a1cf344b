"""The sampler on its own (`vas_jax.sampling`), against slow NumPy references: the filters keep
what they promise, a draw is distributed as the filtered softmax, and the top-k methods agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from chi_square import fit_pvalue

from vas_jax import sampling

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(4, 37)).astype(np.float32) * 2


def test_top_p_keeps_the_fewest_likeliest_tokens_that_reach_p():
    for p in (0.05, 0.3, 0.9, 1.0):
        got = np.isfinite(np.asarray(sampling.top_p_filter(jnp.asarray(LOGITS), p)))
        for row, kept in zip(LOGITS, got):
            probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
            order = np.argsort(-probs)
            n = int(np.searchsorted(np.cumsum(probs[order]), p) + 1)  # the first prefix whose mass reaches p
            assert set(np.flatnonzero(kept)) == set(order[:n].tolist()), p


def test_top_k_keeps_the_k_largest_and_the_methods_agree_ties_to_the_lower_index():
    x = jnp.asarray(np.round(LOGITS))  # rounded: many ties
    for k in (1, 5, 16):
        kept = np.isfinite(np.asarray(sampling.top_k_filter(x, k)))
        assert (kept.sum(-1) >= k).all()
        want_v, want_i = jax.lax.top_k(x, k)
        for method in ("lax", "chunked", "rounds"):
            v, i = sampling.top_k(x, k, method=method, chunk=8)
            np.testing.assert_array_equal(np.asarray(v), np.asarray(want_v), method)
            np.testing.assert_array_equal(np.asarray(i), np.asarray(want_i), method)


def test_greedy_is_the_argmax_and_eos_ids_normalise():
    tok, lp = sampling.sample(jax.random.key(0), jnp.asarray(LOGITS), sampling.SamplerSpec(greedy=True), 1.0, 1.0)
    np.testing.assert_array_equal(np.asarray(tok), LOGITS.argmax(-1))
    assert (np.asarray(lp) == 0).all()
    assert sampling.eos_tuple(None) == () and sampling.eos_tuple(np.int64(2)) == (2,)
    assert sampling.eos_tuple([2, 7]) == (2, 7)


@pytest.mark.parametrize("spec", [sampling.SamplerSpec(top_k=5), sampling.SamplerSpec(use_top_p=True)])
def test_a_draw_follows_the_filtered_softmax_and_reports_its_log_prob(spec):
    row = jnp.asarray(np.tile(LOGITS[:1], (4000, 1)))
    tok, lp = jax.jit(sampling.sample, static_argnums=2)(jax.random.key(1), row, spec, 0.8, 0.7)
    x = np.asarray(sampling.process_logits(row[:1], spec, 0.8, 0.7))[0]
    probs = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    tok = np.asarray(tok)
    np.testing.assert_allclose(np.asarray(lp), np.log(probs[tok]), rtol=1e-5, atol=1e-5)
    assert (probs[tok] > 0).all()  # nothing outside the filter is drawn
    _, p, _ = fit_pvalue(np.bincount(tok, minlength=len(probs)), probs, len(tok))
    assert p > 1e-3
