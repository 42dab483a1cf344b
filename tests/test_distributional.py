"""The distributional value head: its λ-return targets, its training and export, and the soft rule
in every decoder against slow references."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from rollout_factory import random_rollouts

import vas_jax
from vas_jax import VasError
from vas_jax.demo import BASE_DIR, SMALL_DIR
from vas_jax.engine import Engine, compiled_programs
from vas_jax.params import SamplingParams
from vas_jax.td import distributional_lambda_returns, lambda_returns, make_atoms, sparse_rewards, two_hot
from vas_jax.train import TrainConfig, init_value_model, rollout_arrays, train_value, value_mean

ATOMS = tuple(np.linspace(-3.0, 3.0, 13).tolist())
N_ATOMS = len(ATOMS)


def _random_case(seed=0, b=5, t=9, a=N_ATOMS):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(a), size=(b, t)).astype(np.float32)
    starts = rng.integers(0, 4, b)
    ends = np.minimum(t, starts + rng.integers(1, 6, b))
    mask = (np.arange(t)[None] >= starts[:, None]) & (np.arange(t)[None] < ends[:, None])
    reward = rng.uniform(-2.5, 2.5, b).astype(np.float32)  # within the atoms
    return probs, mask, reward


def _targets_slow(probs, mask, reward, lam):
    out = np.zeros(probs.shape, np.float64)
    z = np.asarray(ATOMS)
    for i in range(probs.shape[0]):
        pos = np.flatnonzero(mask[i])
        for j, t in enumerate(pos[::-1]):
            if j == 0:  # the last response position: the reward on its two neighbouring atoms
                hi = np.searchsorted(z, reward[i], side="right")
                w = (reward[i] - z[hi - 1]) / (z[hi] - z[hi - 1])
                out[i, t, hi - 1], out[i, t, hi] = 1 - w, w
            else:
                out[i, t] = (1 - lam) * probs[i, t + 1] + lam * out[i, t + 1]
    return out


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_targets_match_a_slow_loop_and_their_means_are_the_lambda_returns(lam):
    probs, mask, reward = _random_case()
    got = np.asarray(distributional_lambda_returns(probs, reward, mask, atoms=ATOMS, lam=lam))
    np.testing.assert_allclose(got, _targets_slow(probs, mask, reward, lam), atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), mask.astype(np.float32), atol=1e-5)  # distributions where unmasked
    means = probs @ np.asarray(ATOMS, np.float32)
    want = lambda_returns(means, sparse_rewards(reward, mask), mask, gamma=1.0, lam=lam)
    np.testing.assert_allclose(got @ np.asarray(ATOMS, np.float32), np.asarray(want), atol=1e-5)


def test_two_hot_keeps_the_mean_and_clips_outside_the_atoms():
    x = np.array([-2.9, -1.0, 0.1, 0.25, 2.999], np.float32)
    enc = np.asarray(two_hot(x, ATOMS))
    np.testing.assert_allclose(enc.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(enc @ np.asarray(ATOMS, np.float32), x, atol=1e-5)
    assert (np.count_nonzero(enc, axis=-1) <= 2).all()
    out = np.asarray(two_hot(np.array([-10.0, 10.0]), ATOMS))
    assert out[0, 0] == 1 and out[1, -1] == 1
    atoms = make_atoms(np.array([-1.0, 0.0, 3.0]), 5)
    assert atoms[0] == -2.0 and atoms[-1] == 4.0  # the span [-1, 3] widened by a quarter of it each side


@pytest.fixture(scope="module")
def setup():
    base = vas_jax.load_model(BASE_DIR)
    vm = init_value_model(vas_jax.load_model(SMALL_DIR), head="distributional", atoms=ATOMS)
    vm.score.kernel.value = jax.random.normal(jax.random.key(1), vm.score.kernel.value.shape) * 0.5  # it guides
    scalar = init_value_model(vas_jax.load_model(SMALL_DIR))
    scalar.score.kernel.value = jax.random.normal(jax.random.key(2), scalar.score.kernel.value.shape) * 0.5
    tok = vas_jax.load_tokenizer(BASE_DIR)
    prompts = [tok(p)["input_ids"] for p in ["review : the film", "review : i", "review : the acting was"]]
    return base, vm, scalar, tok, prompts


_FULL = {}


def _last(model, seq, width=32):
    """The model's output at the last token of `seq` by a whole forward (right-padded to one width,
    so that one compiled program serves every call)."""
    if id(model) not in _FULL:
        graphdef, state = nnx.split(model)
        _FULL[id(model)] = (state, jax.jit(lambda st, ids, mask: nnx.merge(graphdef, st)(ids, attention_mask=mask)))
    state, fn = _FULL[id(model)]
    ids = np.zeros((1, width), np.int32)
    ids[0, : len(seq)] = seq
    return np.asarray(fn(state, ids, np.arange(width)[None] < len(seq)), np.float64)[0, len(seq) - 1]


def _reference_greedy(base, vm, prompt, beta, rule, k, n):
    """Greedy soft- or mean-guided decoding by whole forwards: each candidate is scored by the value
    model's distribution at the end of prefix + candidate."""
    z = np.asarray(ATOMS)
    seq, out = list(prompt), []
    for _ in range(n):
        logits = _last(base, seq)
        top = np.argsort(-logits, kind="stable")[:k]
        vals = []
        for c in top:
            lg = _last(vm, seq + [int(c)])
            p = np.exp(lg - lg.max())
            p /= p.sum()
            if rule == "soft":
                m = (beta * z).max()
                vals.append(m + np.log(np.sum(p * np.exp(beta * z - m))))
            else:
                vals.append(beta * (p @ z))
        vals = np.asarray(vals)
        aug = logits.copy()
        aug[top] += vals - vals.mean()
        seq.append(int(np.argmax(aug)))
        out.append(seq[-1])
    return out


@pytest.mark.slow
def test_soft_and_mean_guided_decoding_read_the_right_positions(setup):
    base, vm, _, tok, prompts = setup
    k, n = 6, 5
    for rule in ("soft", "mean"):
        for prompt, beta in zip(prompts, (3.0, -2.0, 8.0)):
            r = vas_jax.vas_decode(
                base,
                vm,
                [prompt],
                beta=beta,
                rule=rule,
                top_k=k,
                key=jax.random.key(0),
                max_new_tokens=n,
                temperature=0,
            )
            assert r.token_lists()[0] == _reference_greedy(base, vm, prompt, beta, rule, k, n), (rule, beta)
    soft = vas_jax.vas_decode(base, vm, prompts, beta=8.0, rule="soft", top_k=k, key=jax.random.key(0),
                              max_new_tokens=n, temperature=0)  # fmt: skip
    mean = vas_jax.vas_decode(base, vm, prompts, beta=8.0, rule="mean", top_k=k, key=jax.random.key(0),
                              max_new_tokens=n, temperature=0)  # fmt: skip
    assert soft.token_lists() != mean.token_lists()  # the two rules differ somewhere, or the test would be vacuous


def test_soft_rule_at_beta_zero_is_generate_and_refused_for_scalar_heads(setup):
    base, vm, scalar, tok, prompts = setup
    kw = dict(key=jax.random.key(4), max_new_tokens=6)
    plain = vas_jax.generate(base, prompts, **kw)
    soft = vas_jax.vas_decode(base, vm, prompts, beta=0.0, rule="soft", top_k=8, **kw)
    assert soft.token_lists() == plain.token_lists()
    np.testing.assert_array_equal(np.asarray(soft.policy_logprobs), np.asarray(plain.policy_logprobs))
    with pytest.raises(VasError, match="soft rule needs a distributional value head, and value model 1 has a scalar"):
        vas_jax.vas_decode(base, [vm, scalar], prompts, beta=1.0, rule="soft", **kw)


@pytest.mark.slow
def test_engine_soft_and_mean_rows_equal_vas_decode_and_compile_nothing_new(setup):
    base, vm, _, tok, prompts = setup
    e = Engine(base, [vm], slots=3, max_len=48, eos_token_id=tok.eos_token_id, prefill_chunk=16)
    e.warmup()
    sizes = compiled_programs()
    work = [(prompts[0], 3.0, "soft"), (prompts[1], 3.0, "mean"), (prompts[2], -5.0, "soft")]
    slot_of = {
        e.submit(p, SamplingParams(beta=(b,), rule=r, temperature=0.0, top_k=20, max_new_tokens=8)): i
        for i, (p, b, r) in enumerate(work)
    }
    got = {slot_of[s]: t for s, t in e.run().items()}
    assert compiled_programs() == sizes  # a mixed workload compiles nothing new
    for i, (p, b, r) in enumerate(work):
        want = vas_jax.vas_decode(
            base, vm, [p], beta=b, rule=r, top_k=20, key=jax.random.key(0), max_new_tokens=8, temperature=0.0,
            eos_token_id=tok.eos_token_id,
        )  # fmt: skip
        assert got[i] == want.token_lists()[0], (i, r)
    with pytest.raises(VasError, match="unknown guidance rule"):
        e.submit(prompts[0], SamplingParams(beta=(1.0,), rule="max", max_new_tokens=8))


def test_distributional_head_trains_exports_and_loads(tmp_path):
    lm = vas_jax.load_model(SMALL_DIR)
    ds = random_rollouts(48, lambda rng, n: rng.normal(size=n), high=60)
    atoms = make_atoms(ds["reward"], 11)
    cfg = TrainConfig(batch_size=16, minibatch_size=8, epochs=1, passes=2, eval_fraction=0.25, save_every=100)
    with pytest.raises(VasError, match="distributional value head trains with --gamma 1"):
        train_value(
            init_value_model(lm, head="distributional", atoms=atoms),
            rollout_arrays(ds),
            tmp_path / "g",
            TrainConfig(gamma=0.9, batch_size=16, minibatch_size=8),
            progress=False,
        )
    vm, m = train_value(
        init_value_model(lm, head="distributional", atoms=atoms), rollout_arrays(ds), tmp_path, cfg, progress=False
    )
    assert np.isfinite(m["loss"]) and np.isfinite(m["eval_nll"]) and -1 <= m["eval_corr"] <= 1
    assert np.abs(np.asarray(vm.score.kernel[...])).max() > 0  # trained away from its zero (uniform) init
    out = vas_jax.save_model(vm, tmp_path / "value", tokenizer=vas_jax.load_tokenizer(SMALL_DIR))
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["num_labels"] == 11 and cfg_json["architectures"][0].endswith("ForSequenceClassification")
    assert cfg_json["vas_value"]["head"] == "distributional" and cfg_json["vas_value"]["atoms"] == list(atoms)
    loaded = vas_jax.values.load_value(out, vas_jax.load_tokenizer(BASE_DIR))
    ids = np.array([[5, 9, 14, 3]], np.int32)
    mask = np.ones_like(ids, bool)
    np.testing.assert_allclose(np.asarray(value_mean(loaded, ids, mask)), np.asarray(value_mean(vm, ids, mask)),
                               atol=1e-5)  # fmt: skip
    import torch
    import transformers

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()  # transformers reads the last position's labels
    np.testing.assert_allclose(np.asarray(loaded(ids))[:, -1], want, atol=1e-4)
    with pytest.raises(VasError, match="has a distributional value head, not a scalar one"):
        vas_jax.values.load_value(out, vas_jax.load_tokenizer(BASE_DIR), head="scalar")


def test_soft_value_in_jnp_is_stable_in_the_decoders_dtype():
    """The soft rule never computes exp(beta z): a beta of 1000 gives finite, ordered values."""
    from vas_jax import guidance

    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, len(ATOMS))), jnp.float32)
    cand, w = guidance.candidate_values(
        [logits], ("distributional",), (ATOMS,), jnp.full((2, 1), 1000.0), jnp.array([True, False])
    )
    assert np.isfinite(np.asarray(cand)).all()
    np.testing.assert_array_equal(np.asarray(w), [[1.0], [1000.0]])


def test_cli_trains_a_distributional_head_and_decodes_with_the_soft_rule(tiny_dirs, tmp_path, monkeypatch, capsys):
    from vas_jax.cli import main

    monkeypatch.chdir(tmp_path)
    ds = random_rollouts(32, lambda rng, n: rng.normal(size=n), high=60)
    ds.save_to_disk("roll")
    base = str(tiny_dirs["base"])
    train = ["train", "--data", "roll", "--init", base, "--init-layers", "1", "--batch-size", "16",
             "--minibatch-size", "8", "--passes", "1", "--eval-fraction", "0.25"]  # fmt: skip
    assert main(train + ["--out", "g", "--head", "distributional", "--gamma", "0.9"]) == 2
    assert "--head distributional trains with --gamma 1" in capsys.readouterr().err
    assert main(train + ["--out", "v", "--head", "distributional", "--atoms", "9"]) == 0
    out = capsys.readouterr().out
    assert "9 atoms on [" in out and "0.0% of the rewards lie outside them" in out and "held-out NLL" in out
    decode = ["decode", "--base", base, "--prompt", "w1 w2", "--max-new-tokens", "3", "--beta", "2"]
    assert main(decode + ["--value", "v/value", "--rule", "soft", "--out", "soft.jsonl"]) == 0
    rec = json.loads((tmp_path / "soft.jsonl").read_text())
    assert rec["rule"] == "soft" and rec["beta"] == [2.0]
    capsys.readouterr()
    assert main(decode + ["--value", str(tiny_dirs["value"]), "--rule", "soft"]) == 2  # a scalar head
    err = capsys.readouterr().err
    assert "soft rule needs a distributional value head, and value model 0 has a scalar head" in err
    assert err.count("\n") == 1


def test_tail_calibration_is_zero_for_the_true_distribution_and_positive_for_a_heavy_tail():
    from vas_jax.train import tail_calibration

    rng = np.random.default_rng(0)
    atoms = (-1.0, 0.0, 1.0)
    p = np.array([0.5, 0.3, 0.2])
    rewards = rng.choice(atoms, size=200000, p=p)
    exact = tail_calibration(np.log(np.tile(p, (8, 1))), rewards, atoms)
    assert all(abs(v) < 0.05 for v in exact.values()), exact  # sampling error only
    heavy = tail_calibration(np.log(np.tile([0.45, 0.3, 0.25], (8, 1))), rewards, atoms)
    assert all(v > 0.05 for v in heavy.values()), heavy
