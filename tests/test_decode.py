"""generate / vas_decode against slow, obvious references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from full_forward import last

import vas_jax
from vas_jax import VasError, init_cache
from vas_jax.decode import compiled_programs, prepare_prompts

PROMPTS = [[5, 9, 14, 3, 22, 41, 7], [8, 2], [17, 33, 4, 61]]


@pytest.fixture(scope="module")
def models(hf_dir):
    return {
        "base": vas_jax.load_model(hf_dir("llama")[1]),
        "v_llama": vas_jax.load_model(hf_dir("llama", "score")[1]),
        "v_gpt2": vas_jax.load_model(hf_dir("gpt2", "score")[1]),
        "q_qwen": vas_jax.load_model(hf_dir("qwen2")[1]),
    }


def ref_step_logits(base, values, kinds, seq, beta_row, k, restrict=False):
    """The VAS rule by full recomputation: returns the augmented logits and per-candidate guidance."""
    logits = last(base, seq).astype(np.float64)
    top = np.argsort(-logits, kind="stable")[:k]
    g = np.zeros(k)
    for vm, kind, b in zip(values, kinds, beta_row):
        if kind == "scalar":
            vals = np.array([last(vm, seq + [int(c)]) for c in top], np.float64)
        else:
            vals = last(vm, seq).astype(np.float64)[top]
        g += b * (vals - vals.mean())
    aug = np.full_like(logits, -np.inf) if restrict else logits.copy()
    aug[top] = logits[top] + g
    return aug, top, g


def ref_greedy(base, values, kinds, prompts, beta, k, n, eos, restrict=False):
    toks, guids = [], []
    for b, p in enumerate(prompts):
        seq, out, gs = list(p), [], []
        for _ in range(n):
            aug, top, g = ref_step_logits(base, values, kinds, seq, beta[b], k, restrict)
            t = int(np.argmax(aug))
            out.append(t)
            gs.append(g[list(top).index(t)] if t in top else 0.0)
            seq.append(t)
            if t == eos:
                break
        toks.append(out)
        guids.append(gs)
    return toks, guids


def test_prepare_prompts_left_pads_to_bucket():
    ids, starts, lens = prepare_prompts([[1, 2, 3], [4]], pad_id=0)
    assert ids.shape == (2, 16)
    assert ids[0, -3:].tolist() == [1, 2, 3] and ids[1, -1] == 4
    assert starts.tolist() == [13, 15] and lens.tolist() == [3, 1]
    ids2, _, _ = prepare_prompts(
        (np.array([[0, 0, 1, 2, 3], [4, 0, 0, 0, 0]]), np.array([[0, 0, 1, 1, 1], [1, 0, 0, 0, 0]]))
    )
    np.testing.assert_array_equal(ids2, ids)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_beta_zero_equals_generate(models, temperature, top_p):
    key = jax.random.key(3)
    g = vas_jax.generate(
        models["base"], PROMPTS, key=key, max_new_tokens=10, temperature=temperature, top_p=top_p, eos_token_id=7
    )
    v = vas_jax.vas_decode(
        models["base"],
        [models["v_llama"], models["q_qwen"]],
        PROMPTS,
        beta=0.0,
        key=key,
        max_new_tokens=10,
        temperature=temperature,
        top_p=top_p,
        eos_token_id=7,
        top_k=6,
    )
    np.testing.assert_array_equal(np.asarray(v.tokens), np.asarray(g.tokens))
    np.testing.assert_array_equal(np.asarray(v.lengths), np.asarray(g.lengths))
    np.testing.assert_array_equal(np.asarray(v.logprobs), np.asarray(g.logprobs))
    np.testing.assert_array_equal(np.asarray(v.policy_logprobs), np.asarray(g.policy_logprobs))


def test_generate_greedy_matches_recomputation_and_stops_at_eos(models):
    base = models["base"]
    r = vas_jax.generate(base, PROMPTS, key=jax.random.key(0), max_new_tokens=8, temperature=0.0)
    ref, _ = ref_greedy(base, [], [], PROMPTS, np.zeros((3, 0)), 1, 8, eos=None)
    assert r.token_lists() == ref
    # make the 3rd greedy token of row 0 the EOS: that row stops there, padded after
    eos = ref[0][2]
    r = vas_jax.generate(
        base, PROMPTS, key=jax.random.key(0), max_new_tokens=8, temperature=0.0, eos_token_id=eos, pad_id=0
    )
    toks = np.asarray(r.tokens)
    assert int(r.lengths[0]) == 3 and toks[0, :3].tolist() == ref[0][:3] and (toks[0, 3:] == 0).all()
    assert (np.asarray(r.logprobs)[0, 3:] == 0).all()
    # base logprobs are the model's own log-softmax at each chosen token
    lp = jax.nn.log_softmax(last(base, PROMPTS[1]))[ref[1][0]]
    assert abs(float(r.logprobs[1, 0]) - float(lp)) < 1e-4


@pytest.mark.parametrize("restrict", [False, True])
def test_greedy_vas_matches_slow_reference(models, restrict):
    """Ragged batch, two composed scalar value models of different architectures, per-row per-model beta."""
    values = [models["v_llama"], models["v_gpt2"]]
    beta = np.array([[3.0, 0.0], [0.5, -4.0], [2.0, 2.0]], np.float32)
    k, n = 5, 6
    r = vas_jax.vas_decode(
        models["base"],
        values,
        PROMPTS,
        beta=beta,
        top_k=k,
        key=jax.random.key(0),
        max_new_tokens=n,
        temperature=0.0,
        restrict_to_topk=restrict,
    )
    ref, guid = ref_greedy(models["base"], values, ["scalar", "scalar"], PROMPTS, beta, k, n, None, restrict)
    assert r.token_lists() == ref
    for b in range(3):
        np.testing.assert_allclose(np.asarray(r.guidance)[b, : len(guid[b])], guid[b], atol=1e-4)
    # guidance changed the outcome somewhere (the test would be vacuous otherwise)
    plain = vas_jax.generate(models["base"], PROMPTS, key=jax.random.key(0), max_new_tokens=n, temperature=0.0)
    assert plain.token_lists() != ref


def test_greedy_vas_with_vocabulary_wide_head(models):
    values = [models["q_qwen"], models["v_llama"]]
    beta = np.array([1.5, 1.0], np.float32)
    r = vas_jax.vas_decode(
        models["base"], values, PROMPTS, beta=beta, top_k=8, key=jax.random.key(0), max_new_tokens=5, temperature=0.0
    )
    ref, _ = ref_greedy(models["base"], values, ["vocab", "scalar"], PROMPTS, np.tile(beta, (3, 1)), 8, 5, None)
    assert r.token_lists() == ref


def test_sampled_step_matches_reference_distribution(models):
    """Chi-square: 4000 samples of one step against the reference augmented distribution."""
    from chi_square import fit_pvalue

    values = [models["v_llama"], models["q_qwen"]]
    beta_row = [3.0, -1.0]
    temperature, top_p, k = 0.8, 0.9, 10
    m = 4000
    prompt = PROMPTS[0]
    r = vas_jax.vas_decode(
        models["base"],
        values,
        [prompt] * m,
        beta=beta_row,
        top_k=k,
        key=jax.random.key(11),
        max_new_tokens=1,
        temperature=temperature,
        top_p=top_p,
    )
    aug, _, _ = ref_step_logits(models["base"], values, ["scalar", "vocab"], prompt, beta_row, k)
    x = aug / temperature
    order = np.argsort(-x)
    p = np.exp(x[order] - x[order].max())
    p /= p.sum()
    keep = (np.cumsum(p) - p) < top_p
    probs = np.zeros_like(x)
    probs[order[keep]] = p[keep] / p[keep].sum()
    counts = np.bincount(np.asarray(r.tokens)[:, 0], minlength=len(x))
    assert counts[probs == 0].sum() == 0, "sampled a token that top-p removes"
    chi2, pval, cells = fit_pvalue(counts, probs, m)
    assert pval > 1e-3, (chi2, cells, pval)
    # policy_logprobs are the log-probs of the sampled distribution
    tok0 = int(r.tokens[0, 0])
    assert abs(float(r.policy_logprobs[0, 0]) - np.log(probs[tok0])) < 1e-4


def test_candidate_cache_over_steps_matches_full_sequence(models):
    """The loop's value call over several steps (ragged batch): [pending token, k candidates] in one
    forward appends the pending token and scores every candidate as V(prefix + candidate)."""
    vm = models["v_gpt2"]
    ids, starts, lens = prepare_prompts(PROMPTS)
    cache = init_cache(vm.config, 3, ids.shape[1] + 5, vm.dtype, starts)
    _, cache = vm.forward(ids[:, :-1], cache, mode="prefill", outputs="none")
    pending = ids[:, -1]
    seqs = [list(p) for p in PROMPTS]
    rng = np.random.RandomState(0)
    for step in range(4):
        cands = rng.randint(1, 96, size=(3, 6)).astype(np.int32)
        toks = np.concatenate([pending[:, None], cands], axis=1)
        vals, cache = vm.forward(toks, cache, mode="candidates", n_pending=1)
        assert int(cache.index) == ids.shape[1] + step
        for b in range(3):
            for j in range(6):
                np.testing.assert_allclose(float(vals[b, j]), last(vm, seqs[b] + [int(cands[b, j])]), atol=3e-5)
        # the next pending token is sometimes a candidate, sometimes not
        pending = np.where(rng.rand(3) < 0.5, cands[:, 0], rng.randint(1, 96, size=3)).astype(np.int32)
        for b in range(3):
            seqs[b].append(int(pending[b]))


@pytest.mark.slow
def test_second_call_in_bucket_compiles_nothing(models):
    base, values = models["base"], [models["v_llama"], models["q_qwen"]]
    kw = dict(top_k=4, max_new_tokens=3, temperature=1.0)
    vas_jax.vas_decode(base, values, [[1, 2, 3], [4, 5]], beta=1.0, key=jax.random.key(0), **kw)
    before = compiled_programs()
    vas_jax.vas_decode(base, values, [[7, 8, 9, 10, 11], [12]], beta=[0.3, -2.0], key=jax.random.key(5), **kw)
    vas_jax.vas_decode(
        base, values, [[3] * 15, [2] * 9], beta=np.array([[1.0, 2.0], [3.0, 4.0]]), key=jax.random.key(9), **kw
    )
    assert compiled_programs() == before
    vas_jax.vas_decode(base, values, [[3] * 17, [2]], beta=1.0, key=jax.random.key(9), **kw)  # next bucket
    assert compiled_programs() == before + 1


def test_bad_inputs(models):
    base, v = models["base"], models["v_llama"]
    key = jax.random.key(0)
    with pytest.raises(VasError, match=r"beta of shape \(4,\) fits neither"):
        vas_jax.vas_decode(base, [v, v], PROMPTS, beta=[1.0, 2.0, 3.0, 4.0], key=key, max_new_tokens=2)
    with pytest.raises(VasError, match="exceeds the models' context of 128 positions"):
        vas_jax.generate(base, [[1] * 100], key=key, max_new_tokens=40)
    with pytest.raises(VasError, match="prompt 1 is empty"):
        vas_jax.generate(base, [[1], []], key=key, max_new_tokens=2)
    with pytest.raises(VasError, match="base model must be a causal LM"):
        vas_jax.generate(v, [[1]], key=key, max_new_tokens=2)
    with pytest.raises(VasError, match="top_p must be in"):
        vas_jax.generate(base, [[1]], key=key, max_new_tokens=2, top_p=0.0)
    vocab = base.config.vocab_size
    with pytest.raises(VasError, match=f"prompt 1 has token id {vocab} is outside the base model's vocabulary"):
        vas_jax.vas_decode(base, v, [[1], [2, vocab]], beta=1.0, key=key, max_new_tokens=2)
    with pytest.raises(VasError, match="pad_id -1 is outside"):
        vas_jax.generate(base, [[1], [2, 3]], key=key, max_new_tokens=2, pad_id=-1)
    small = vas_jax.Transformer(models["q_qwen"].config.replace(vocab_size=50))
    with pytest.raises(VasError, match="value models must use the base model's tokenizer"):
        vas_jax.vas_decode(base, small, [[1]], beta=1.0, key=key, max_new_tokens=2)


@pytest.mark.slow
def test_num_samples_share_one_prefill_and_best_of_n(models):
    base = models["base"]
    # greedy: every sample of a prompt is the same, and equals the prompt decoded alone
    r = vas_jax.generate(base, PROMPTS, key=jax.random.key(0), max_new_tokens=5, temperature=0.0, num_samples=3)
    alone = vas_jax.generate(base, PROMPTS, key=jax.random.key(0), max_new_tokens=5, temperature=0.0)
    assert r.tokens.shape == (9, 5)
    np.testing.assert_array_equal(np.asarray(r.tokens), np.repeat(np.asarray(alone.tokens), 3, axis=0))
    v = vas_jax.vas_decode(
        base,
        models["v_llama"],
        PROMPTS,
        beta=[1.0, 2.0, 3.0],
        key=jax.random.key(0),
        top_k=4,
        max_new_tokens=4,
        temperature=0.0,
        num_samples=2,
    )
    for i, bta in enumerate([1.0, 2.0, 3.0]):
        one = vas_jax.vas_decode(
            base,
            models["v_llama"],
            [PROMPTS[i]],
            beta=bta,
            key=jax.random.key(0),
            top_k=4,
            max_new_tokens=4,
            temperature=0.0,
        )
        assert v.token_lists()[2 * i] == v.token_lists()[2 * i + 1] == one.token_lists()[0]

    def reward(prompts, responses):  # token lists: prefer many 7s
        return [float(sum(t == 7 for t in r)) for r in responses]

    bon = vas_jax.best_of_n(base, PROMPTS, reward, n=16, key=jax.random.key(1), max_new_tokens=6)
    rw = np.asarray(bon.rewards)
    assert rw.shape == (3, 16)
    np.testing.assert_array_equal(np.asarray(bon.reward), rw.max(axis=1))
    best = bon.samples.token_lists()
    for i in range(3):
        j = int(rw[i].argmax())
        assert np.asarray(bon.tokens)[i, : int(bon.lengths[i])].tolist() == best[16 * i + j]


@pytest.mark.slow
def test_check_every_changes_nothing_but_the_exit_granularity(models):
    """The loop runs in chunks of steps between early-exit tests (the largest divisor of
    max_new_tokens up to check_every): per-step tests, chunks of 3 and one chunk of all 9 steps give
    the same result, bit for bit, with rows that end early (EOS) and rows that do not."""
    from vas_jax.decode import chunk_steps

    assert [chunk_steps(n, c) for n, c in [(9, 1), (9, 4), (9, 16), (256, 8), (100, 8), (13, 8), (1, 8)]] == [
        1,
        3,
        9,
        8,
        5,
        1,
        1,
    ]
    base, value = models["base"], models["v_llama"]
    key = jax.random.key(4)
    free = vas_jax.generate(base, PROMPTS, key=key, max_new_tokens=9).token_lists()
    eos = free[1][2]  # with this EOS, row 1 ends at its 3rd token

    def fields(r):
        return [np.asarray(x) for x in (r.tokens, r.lengths, r.logprobs, r.policy_logprobs, r.guidance)]

    gen = [
        fields(vas_jax.generate(base, PROMPTS, key=key, max_new_tokens=9, eos_token_id=eos, check_every=c))
        for c in (1, 4, 16)
    ]
    vas = [
        fields(
            vas_jax.vas_decode(
                base, value, PROMPTS, beta=2.0, top_k=5, key=key, max_new_tokens=9, eos_token_id=eos, check_every=c
            )
        )
        for c in (1, 4)
    ]
    assert gen[0][0].shape == vas[0][0].shape == (3, 9) and int(gen[0][1][1]) == 3
    for runs in (gen, vas):
        for other in runs[1:]:
            for a, b in zip(runs[0], other):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(VasError, match="check_every must be at least 1"):
        vas_jax.generate(base, PROMPTS, key=key, max_new_tokens=2, check_every=0)


@pytest.mark.slow
def test_fused_models_decode_the_same(models):
    values = [models["v_llama"], models["q_qwen"]]
    kw = dict(beta=[2.0, 1.0], top_k=5, key=jax.random.key(2), max_new_tokens=6, temperature=0.0)
    ref = vas_jax.vas_decode(models["base"], values, PROMPTS, **kw)
    fuse = vas_jax.fuse_projections
    import copy

    got = vas_jax.vas_decode(
        fuse(copy.deepcopy(models["base"])), [fuse(copy.deepcopy(v)) for v in values], PROMPTS, **kw
    )
    assert got.token_lists() == ref.token_lists()
    np.testing.assert_allclose(np.asarray(got.guidance), np.asarray(ref.guidance), atol=1e-4)


@pytest.mark.slow
def test_candidate_pick_methods_are_exact(models):
    """The chunked and round-wise top-k (sampling.top_k) equal lax.top_k, ties and a ragged last chunk
    included, and vas_decode with one of them (20 candidates: two rounds) decodes the same."""
    from vas_jax.sampling import top_k

    rng = np.random.RandomState(0)
    for x in (rng.randn(3, 96), rng.randint(0, 6, size=(3, 96))):
        x = jnp.asarray(x, jnp.float32)
        for k in (7, 37):
            want = jax.lax.top_k(x, k)
            for method, chunk in [("chunked", 8), ("chunked", 40), ("chunked", 95), ("rounds", 0)]:
                got = top_k(x, k, method, chunk)
                np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]), err_msg=f"{method} {k}")
                np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    kw = dict(beta=2.0, top_k=20, key=jax.random.key(3), max_new_tokens=5)
    ref = vas_jax.vas_decode(models["base"], models["v_llama"], PROMPTS, **kw)
    got = vas_jax.vas_decode(models["base"], models["v_llama"], PROMPTS, topk_method="rounds", **kw)
    assert got.token_lists() == ref.token_lists()
    np.testing.assert_array_equal(np.asarray(got.guidance), np.asarray(ref.guidance))


@pytest.mark.slow
def test_one_pass_vocabulary_scoring_matches_separate_passes(models, monkeypatch):
    """sample_scored's fused pass (the GPU path: both log-normalisers and the Gumbel-max pick in one
    variadic reduction) gives the tokens `sample` gives and the same log-probs, -inf entries
    included; decoding with it (forced on this CPU) gives what the separate passes give."""
    from vas_jax import sampling

    rng = np.random.RandomState(0)
    x = rng.randn(4, 300).astype(np.float32) * 3
    x[0, :250] = -np.inf  # restrict_to_topk's masked row
    x[1, 7] = x[1].max() + 50  # one token holds nearly all the mass
    base = rng.randn(4, 300).astype(np.float32)
    for i in range(10):
        got = sampling.sample_scored(jax.random.key(i), x, base, sampling.SamplerSpec(one_pass=True), 0.7, 1.0)
        want = sampling.sample_scored(jax.random.key(i), x, base, sampling.SamplerSpec(), 0.7, 1.0)
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
        np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(got[2]), np.asarray(want[2]), atol=1e-5)
    kw = dict(beta=2.0, top_k=5, key=jax.random.key(4), max_new_tokens=6, restrict_to_topk=True)  # -inf rows too
    want = vas_jax.vas_decode(models["base"], models["v_llama"], PROMPTS, **kw)
    monkeypatch.setattr(sampling, "one_pass_pays", lambda: True)
    got = vas_jax.vas_decode(models["base"], models["v_llama"], PROMPTS, **kw)
    assert got.token_lists() == want.token_lists()
    for name in ("logprobs", "policy_logprobs", "guidance"):
        np.testing.assert_allclose(np.asarray(getattr(got, name)), np.asarray(getattr(want, name)), atol=1e-5)


@pytest.mark.parametrize("restrict", [False, True])
def test_vas_logits_is_the_rule_written_slowly(restrict):
    """The VAS rule against a Python loop over rows and candidates, with two value models."""
    from vas_jax import vas_logits

    rng = np.random.RandomState(0)
    b, v, n, k = 3, 11, 2, 4
    logits = rng.randn(b, v).astype(np.float32)
    top_idx = np.stack([rng.choice(v, k, replace=False) for _ in range(b)]).astype(np.int32)
    top_vals = np.take_along_axis(logits, top_idx, axis=1)
    values = rng.randn(b, n, k).astype(np.float32)
    beta = rng.randn(b, n).astype(np.float32)
    aug, guidance = vas_logits(
        jnp.asarray(logits),
        jnp.asarray(top_vals),
        jnp.asarray(top_idx),
        jnp.asarray(values),
        jnp.asarray(beta),
        restrict,
    )
    for r in range(b):
        want = [-np.inf] * v if restrict else list(logits[r])
        for j in range(k):
            g = sum(beta[r, m] * (values[r, m, j] - sum(values[r, m]) / k) for m in range(n))
            want[top_idx[r, j]] = logits[r, top_idx[r, j]] + g
            assert abs(float(guidance[r, j]) - g) < 1e-5
        np.testing.assert_allclose(np.asarray(aug[r]), np.array(want, np.float32), atol=1e-5)
