"""Blockwise value-guided search against `generate`, a slow loop, its KL bound, and the tree's exact
block distribution."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from chi_square import fit_pvalue
from full_forward import last
from tree_base import ATOMS, Tree

import vas_jax
from vas_jax import VasError
from vas_jax.blockwise import block_kl_bound, block_scores, blockwise_decode, keep_block

PROMPTS = [[5, 9, 14, 3, 22, 41, 7], [8, 2]]
EOS = list(range(10, 22))  # a dozen end tokens of the tiny vocabulary: rows end at different blocks


@pytest.fixture(scope="module")
def models(hf_dir):
    return vas_jax.load_model(hf_dir("llama")[1]), vas_jax.load_model(hf_dir("llama", "score")[1])


def test_one_sample_per_block_is_generate(models):
    """K = 1 keeps the only continuation: the base's own samples, token for token, for the same key."""
    base, value = models
    key = jax.random.key(4)
    got = blockwise_decode(base, value, PROMPTS, beta=2.0, key=key, max_new_tokens=10, block=4, block_samples=1,
                           num_samples=2, eos_token_id=EOS)  # fmt: skip
    want = vas_jax.generate(base, PROMPTS, key=key, max_new_tokens=10, num_samples=2, eos_token_id=EOS)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-6)
    assert (np.asarray(got.kl_bound) == 0).all()  # log 1 - 0


def slow_search(base, value, prompts, key, *, n, block, k, eos):
    """The search written as a Python loop over full forwards: per step, every row's logits by
    recomputation and the same draw as the sampler's (one categorical over all rows with the step's
    key); per block, every row's value at its last token by recomputation, the first best kept."""
    seqs = [list(p) for p in prompts for _ in range(k)]
    new = [[] for _ in seqs]
    blocks = np.zeros(len(prompts), int)
    step = 0
    while step < n and not all(r and r[-1] in eos for r in new[::k]):
        for g in range(len(prompts)):
            blocks[g] += not (new[g * k] and new[g * k][-1] in eos)
        for _ in range(block):
            live = [step < n and not (r and r[-1] in eos) for r in new]
            logits = np.stack([last(base, s) if ok else np.zeros(base.config.vocab_size) for s, ok in zip(seqs, live)])
            toks = np.asarray(jax.random.categorical(jax.random.fold_in(key, step), jnp.asarray(logits, jnp.float32)))
            for i, ok in enumerate(live):
                if ok:
                    seqs[i].append(int(toks[i]))
                    new[i].append(int(toks[i]))
            step += 1
        for g in range(len(prompts)):
            vals = [float(last(value, seqs[g * k + j])) for j in range(k)]
            best = g * k + int(np.argmax(vals))
            for j in range(k):
                seqs[g * k + j], new[g * k + j] = list(seqs[best]), list(new[best])
    return new[::k], blocks


def test_argmax_search_is_the_slow_loop(models):
    """Three blocks (the last one short), four continuations each, rows ending at different blocks."""
    base, value = models
    key = jax.random.key(7)
    got = blockwise_decode(base, value, PROMPTS, beta=1.0, key=key, max_new_tokens=8, block=3, block_samples=4,
                           eos_token_id=EOS)  # fmt: skip
    want, blocks = slow_search(base, value, PROMPTS, key, n=8, block=3, k=4, eos=EOS)
    assert got.token_lists() == want
    np.testing.assert_array_equal(got.blocks, blocks)


@pytest.mark.parametrize("keep", ["argmax", "sample"])
def test_kl_bound_is_the_blocks_used_times_the_block_bound(models, keep):
    base, value = models
    got = blockwise_decode(base, value, PROMPTS * 4, beta=3.0, key=jax.random.key(1), max_new_tokens=9, block=2,
                           block_samples=3, keep=keep, eos_token_id=EOS)  # fmt: skip
    lengths, blocks = np.asarray(got.lengths), np.asarray(got.blocks)
    np.testing.assert_array_equal(blocks, -(-lengths // 2))  # a search that ended chooses no more blocks
    assert len(set(blocks.tolist())) > 1  # rows did end at different blocks
    np.testing.assert_allclose(got.kl_bound, blocks * block_kl_bound(3, keep), rtol=1e-6)
    assert block_kl_bound(3, "sample") == pytest.approx(np.log(3))
    assert block_kl_bound(3, "argmax") == pytest.approx(np.log(3) - 2 / 3)


@pytest.mark.parametrize("rule,keep", [("soft", "sample"), ("mean", "argmax")])
def test_kept_block_matches_the_exact_block_distribution_on_the_tree(rule, keep):
    """A block of the tree's first two tokens, K = 3 continuations from the base, each scored by the
    return distribution at its end (a distributional head's reading), one kept: the kept block's
    distribution, enumerated over all 9^3 K-tuples, against 20k searches (chi-square)."""
    tree, beta, k, m = Tree(), 1.5, 3, 20000
    blocks = list(itertools.product(range(tree.V), repeat=2))
    probs = np.array([tree.base_prob(b + (0,)) / tree.step_probs(b)[0] for b in blocks])  # base over blocks
    with np.errstate(divide="ignore"):  # -inf where an atom cannot occur
        logits = np.log(np.stack([tree.returns(b) for b in blocks]))

    def scores(idx):  # idx: int[G, K] blocks -> float32[G, K]
        read = jnp.asarray(logits[idx], jnp.float32)
        g = idx.shape[0]
        soft = jnp.full((g,), rule == "soft")
        return block_scores([read], ("distributional",), (ATOMS,), jnp.full((g, 1), beta), soft)

    exact = np.zeros(len(blocks))
    tuples = np.array(list(itertools.product(range(len(blocks)), repeat=k)))
    s = np.asarray(scores(tuples), np.float64)
    w = np.prod(probs[tuples], axis=1)
    if keep == "sample":
        share = np.exp(s - s.max(axis=1, keepdims=True))
        share /= share.sum(axis=1, keepdims=True)
    else:
        share = np.eye(k)[np.argmax(s, axis=1)]
    np.add.at(exact, tuples, w[:, None] * share)
    assert exact.sum() == pytest.approx(1.0)
    drawn = np.random.default_rng(0).choice(len(blocks), size=(m, k), p=probs)
    kept = drawn[np.arange(m), np.asarray(keep_block(scores(drawn), keep, jax.random.key(5)))]
    _, pvalue, _ = fit_pvalue(np.bincount(kept, minlength=len(blocks)), exact, m)
    assert pvalue > 1e-3, pvalue


def test_bad_settings_are_refused_in_one_line(models, hf_dir):
    base, value = models
    common = dict(beta=1.0, key=jax.random.key(0), max_new_tokens=4)
    with pytest.raises(VasError, match="block must be"):
        blockwise_decode(base, value, PROMPTS, block=0, block_samples=2, **common)
    with pytest.raises(VasError, match="block_samples must be"):
        blockwise_decode(base, value, PROMPTS, block=2, block_samples=0, **common)
    with pytest.raises(VasError, match="keep must be one of argmax, sample"):
        blockwise_decode(base, value, PROMPTS, block=2, block_samples=2, keep="best", **common)
    with pytest.raises(VasError, match="soft rule needs a distributional"):
        blockwise_decode(base, value, PROMPTS, block=2, block_samples=2, rule="soft", **common)
    with pytest.raises(VasError, match="vocabulary-wide"):
        blockwise_decode(base, base, PROMPTS, block=2, block_samples=2, **common)
