"""Parity of our Flax models with transformers' PyTorch models on tiny random checkpoints."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
from hf_factory import ARCHS, VOCAB, make_hf, save_hf

import vas_jax
from vas_jax import VasError, init_cache

ALL = list(ARCHS)


def torch_scores(model, ids, mask=None, pos=None):
    """Per-position outputs of an HF model: logits [B,T,V], or the score head at every position."""
    kw = {}
    if mask is not None:
        kw["attention_mask"] = torch.tensor(np.asarray(mask, np.int64))
    if pos is not None:
        kw["position_ids"] = torch.tensor(np.asarray(pos, np.int64))
    with torch.no_grad():
        ids = torch.tensor(np.asarray(ids, np.int64))
        if hasattr(model, "score"):
            trunk = model.transformer if hasattr(model, "transformer") else model.model
            out = model.score(trunk(ids, **kw).last_hidden_state)
            out = out[..., 0] if out.shape[-1] == 1 else out
        else:
            out = model(ids, **kw).logits
    return out.float().numpy()


def rand_ids(b, t, seed=0):
    return np.random.RandomState(seed).randint(1, VOCAB, size=(b, t)).astype(np.int32)


@pytest.mark.parametrize("arch", ALL)
@pytest.mark.parametrize("head", ["lm", "score"])
def test_float32_parity(hf_dir, arch, head):
    ref_model, d = hf_dir(arch, head)
    ours = vas_jax.load_model(d)
    assert ours.config.head == head
    ids = rand_ids(2, 12)
    ref = torch_scores(ref_model, ids)
    out = np.asarray(ours(ids))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_multilabel_score_head_and_pooled_logits(hf_dir):
    ref_model, d = hf_dir("qwen2", "score", 3)
    ours = vas_jax.load_model(d)
    ids = rand_ids(2, 10, seed=3)
    out = np.asarray(ours(ids))
    assert out.shape == (2, 10, 3)
    np.testing.assert_allclose(out, torch_scores(ref_model, ids), atol=1e-4)
    # HF pools the score at the last non-pad token: ours at that position agrees.
    with torch.no_grad():
        pooled = ref_model(torch.tensor(ids.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(out[:, -1], pooled, atol=1e-4)


@pytest.mark.parametrize("arch", ALL)
def test_bfloat16_parity(tmp_path, arch):
    """bfloat16 keeps 8 significant bits (rounding 2^-9 ~ 0.2%); a 2-layer model rounds activations
    about a dozen times in sequence, so logits of size ~3 move by a few hundredths. We require our
    bf16 error against the float32 reference (same bf16-rounded weights) to be below 4% of the
    largest logit and no worse than 2x PyTorch's own bf16 error against that reference."""
    m = make_hf(arch, "lm", seed=1)
    save_hf(m, tmp_path, dtype=torch.bfloat16)
    ref32 = type(m).from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    ref16 = type(m).from_pretrained(str(tmp_path), dtype=torch.bfloat16).eval()
    ours = vas_jax.load_model(tmp_path, dtype="bfloat16")
    assert ours.embed[...].dtype == jnp.bfloat16
    ids = rand_ids(2, 12, seed=2)
    r32 = torch_scores(ref32, ids)
    r16 = torch_scores(ref16, ids)
    out = np.asarray(ours(ids))
    assert out.dtype == np.float32
    err = np.abs(out - r32).max()
    torch_err = np.abs(r16 - r32).max()
    assert err < 0.04 * np.abs(r32).max(), err
    assert err < 2 * torch_err + 1e-3, (err, torch_err)
    # and float32 loading of the bf16 file is exact parity
    np.testing.assert_allclose(np.asarray(vas_jax.load_model(tmp_path)(ids)), r32, atol=1e-4)


def _pad(rows, side, t):
    ids = np.zeros((len(rows), t), np.int32)
    mask = np.zeros((len(rows), t), bool)
    for i, r in enumerate(rows):
        if side == "left":
            ids[i, t - len(r) :] = r
            mask[i, t - len(r) :] = True
        else:
            ids[i, : len(r)] = r
            mask[i, : len(r)] = True
    return ids, mask


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma3_text", "gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_rows_equal_alone(hf_dir, arch, side):
    ref_model, d = hf_dir(arch)
    ours = vas_jax.load_model(d)
    rows = [rand_ids(1, n, seed=n)[0] for n in (11, 4, 8)]
    ids, mask = _pad(rows, side, 12)
    out = np.asarray(ours(ids, attention_mask=mask))
    for i, r in enumerate(rows):
        alone = np.asarray(ours(r[None]))[0]
        got = out[i][mask[i]]
        np.testing.assert_allclose(got, alone, atol=1e-5)
        pos = np.arange(len(r))[None]
        np.testing.assert_allclose(alone, torch_scores(ref_model, r[None], pos=pos)[0], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALL)
def test_cached_decoding_matches_full_sequence(hf_dir, arch):
    """Prefill a left-padded ragged batch, then extend one token at a time (jitted, cache donated)."""
    _, d = hf_dir(arch)
    ours = vas_jax.load_model(d)
    lens = [9, 5, 7]
    total = 14
    rows = [rand_ids(1, n + (total - 9), seed=10 + n)[0] for n in lens]  # prompt + 5 continuation tokens
    prompt_t = 9
    ids, mask = _pad([r[:n] for r, n in zip(rows, lens)], "left", prompt_t)
    graphdef, state = jax.tree.map(lambda x: x, __import__("flax").nnx.split(ours))

    @jax.jit
    def prefill(state, ids, starts):
        m = __import__("flax").nnx.merge(graphdef, state)
        cache = init_cache(m.config, ids.shape[0], 16, m.dtype, starts)
        return m.forward(ids, cache, mode="prefill")

    @jax.jit
    def extend(state, tok, cache):
        m = __import__("flax").nnx.merge(graphdef, state)
        return m.forward(tok, cache, mode="extend")

    starts = prompt_t - np.array(lens)
    out, cache = prefill(state, ids, starts)
    outs = [np.asarray(out)]
    for j in range(total - 9):
        tok = np.array([[r[n + j]] for r, n in zip(rows, lens)], np.int32)
        o, cache = extend(state, tok, cache)
        outs.append(np.asarray(o))
    for i, (r, n) in enumerate(zip(rows, lens)):
        full = np.asarray(ours(r[: n + total - 9][None]))[0]
        got = np.concatenate([outs[0][i, prompt_t - n :]] + [o[i] for o in outs[1:]], axis=0)
        np.testing.assert_allclose(got, full, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma2", "gpt2"])
def test_candidate_scoring_matches_full_sequence(hf_dir, arch):
    """K candidates as queries at one position see the cached prefix and themselves only."""
    _, d = hf_dir(arch, "score")
    ours = vas_jax.load_model(d)
    lens = [8, 3]
    ids, mask = _pad([rand_ids(1, n, seed=n)[0] for n in lens], "left", 8)
    cache = init_cache(ours.config, 2, 12, ours.dtype, 8 - np.array(lens))
    _, cache = ours.forward(ids, cache, mode="prefill")
    cands = rand_ids(2, 5, seed=7)
    vals, same = ours.forward(cands, cache, mode="candidates")
    assert int(same.index) == int(cache.index)  # nothing written
    assert vals.shape == (2, 5)
    for i, n in enumerate(lens):
        for j in range(5):
            seq = np.concatenate([ids[i, 8 - n :], cands[i, j : j + 1]])
            full = np.asarray(ours(seq[None]))[0, -1]
            np.testing.assert_allclose(vals[i, j], full, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALL)
def test_fused_projections_compute_the_same(hf_dir, tmp_path, arch):
    """fuse_projections (q/k/v grouped per kv head, gate/up interleaved) changes no output: full
    sequence, prefill and candidate scoring with the keys/values they return."""
    _, d = hf_dir(arch, "score")
    plain, fused = vas_jax.load_model(d), vas_jax.load_model(d, fuse=True)
    assert fused.layers[0].attn.q_proj is None and fused.layers[0].attn.qkv_proj is not None
    ids = rand_ids(2, 9, seed=2)
    np.testing.assert_allclose(np.asarray(fused(ids)), np.asarray(plain(ids)), atol=1e-5)
    outs = []
    for m in (plain, fused):
        cache = init_cache(m.config, 2, 12, m.dtype, np.array([0, 3]))
        _, cache = m.forward(ids, cache, mode="prefill")
        outs.append(m.forward(rand_ids(2, 6, seed=3), cache, mode="candidates", n_pending=1))
    (v0, c0), (v1, c1) = outs
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v0), atol=1e-5)
    for a, b in zip(c0.k + c0.v, c1.k + c1.v):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
    with pytest.raises(VasError, match="fused for decoding"):
        vas_jax.save_model(fused, tmp_path / "x")
    from vas_jax.model import add_lora
    from vas_jax.train import init_value_model

    with pytest.raises(VasError, match="fused for decoding; load it without fuse to train from it"):
        init_value_model(fused)
    with pytest.raises(VasError, match=r"has LoRA adapters; merge them \(merge_lora\) before fusing"):
        vas_jax.fuse_projections(add_lora(vas_jax.load_model(d), 2))


@pytest.mark.parametrize("arch", ALL)
@pytest.mark.parametrize("head", ["lm", "score"])
def test_round_trip_through_transformers(hf_dir, tmp_path, arch, head):
    _, d = hf_dir(arch, head)
    ours = vas_jax.load_model(d)
    out_dir = vas_jax.save_model(ours, tmp_path / "saved")
    cls = tf.AutoModelForSequenceClassification if head == "score" else tf.AutoModelForCausalLM
    back = cls.from_pretrained(str(out_dir), dtype=torch.float32).eval()
    ids = rand_ids(2, 9, seed=5)
    np.testing.assert_allclose(torch_scores(back, ids), np.asarray(ours(ids)), atol=1e-4)
    again = vas_jax.load_model(out_dir)
    np.testing.assert_array_equal(np.asarray(again(ids)), np.asarray(ours(ids)))


def test_sharded_safetensors_with_index(tmp_path):
    m = make_hf("llama", "lm", seed=4)
    save_hf(m, tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    ids = rand_ids(1, 6)
    np.testing.assert_allclose(np.asarray(vas_jax.load_model(tmp_path)(ids)), torch_scores(m, ids), atol=1e-4)


def test_save_bfloat16(hf_dir, tmp_path):
    _, d = hf_dir("qwen2")
    ours = vas_jax.load_model(d)
    out = vas_jax.save_model(ours, tmp_path, dtype="bfloat16")
    back = tf.AutoModelForCausalLM.from_pretrained(str(out))
    assert next(back.parameters()).dtype == torch.bfloat16
    assert vas_jax.load_model(out, dtype="bfloat16").embed[...].dtype == jnp.bfloat16


# ------------------------------------------------------------------ bad input


def _copy_ckpt(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_pickle_checkpoint_is_refused(hf_dir, tmp_path):
    m, _ = hf_dir("llama")
    m.config.save_pretrained(str(tmp_path))
    torch.save(m.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / "pytorch_model.bin").exists()
    with pytest.raises(VasError, match=r"pytorch_model.bin is a pickle checkpoint.*convert it to safetensors"):
        vas_jax.load_model(tmp_path)


def test_unsupported_model_type_names_supported(hf_dir, tmp_path):
    _, d = hf_dir("llama")
    p = _copy_ckpt(d, tmp_path / "x")
    cfg = json.loads((p / "config.json").read_text())
    cfg["model_type"] = "falcon"
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        VasError,
        match=r"unsupported model_type 'falcon'; supported: llama, mistral, qwen2, qwen3, gemma2, gemma3_text, "
        r"phi3, olmo2, gpt2",
    ):
        vas_jax.load_model(p)


def test_missing_and_misshaped_tensors_are_named(hf_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, d = hf_dir("llama")
    p = _copy_ckpt(d, tmp_path / "x")
    tensors = load_file(str(p / "model.safetensors"))
    bad = dict(tensors)
    del bad["model.layers.1.mlp.up_proj.weight"]
    save_file(bad, str(p / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        VasError, match=r"missing tensor 'model.layers.1.mlp.up_proj.weight' \(expected shape \(64, 32\)\)"
    ):
        vas_jax.load_model(p)
    bad = dict(tensors)
    bad["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 32), np.float32)
    save_file(bad, str(p / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        VasError, match=r"'model.layers.0.self_attn.k_proj.weight' has shape \(8, 32\), expected \(16, 32\)"
    ):
        vas_jax.load_model(p)


def test_missing_directory_config_and_bad_dtype(hf_dir, tmp_path):
    with pytest.raises(VasError, match="does not exist"):
        vas_jax.load_model(tmp_path / "nope")
    with pytest.raises(VasError, match="has no config.json"):
        vas_jax.load_model(tmp_path)
    _, d = hf_dir("llama")
    with pytest.raises(VasError, match="unsupported dtype 'float16'; use float32 or bfloat16"):
        vas_jax.load_model(d, dtype="float16")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(VasError, match="config.json has no 'num_attention_heads' field"):
        vas_jax.load_model(tmp_path)
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    with pytest.raises(VasError, match="no \\*.safetensors weights"):
        vas_jax.load_model(tmp_path)


def test_unsupported_rope_type(hf_dir, tmp_path):
    _, d = hf_dir("llama")
    p = _copy_ckpt(d, tmp_path / "x")
    cfg = json.loads((p / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0}
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VasError, match="unsupported rope type 'yarn'"):
        vas_jax.load_model(p)


def test_phi3_longrope_parity_both_factors(tmp_path):
    """LongRoPE (Phi-3's long-context models): short factors up to original_max_position_embeddings,
    long factors and the attention factor beyond, as transformers picks them by sequence length."""
    cfg_cls, lm_cls, _, kw = ARCHS["phi3"]
    rng = np.random.RandomState(0)
    rope = {
        "rope_type": "longrope",
        "rope_theta": 500.0,
        "original_max_position_embeddings": 16,
        "short_factor": list(1 + rng.rand(4)),
        "long_factor": list(2 + 4 * rng.rand(4)),
    }
    cfg = cfg_cls(
        **dict(kw, max_position_embeddings=64, original_max_position_embeddings=16, rope_parameters=rope),
        pad_token_id=0,
    )
    m = lm_cls(cfg)
    from hf_factory import randomize

    randomize(m, 3)
    m.eval()
    save_hf(m, tmp_path)
    ours = vas_jax.load_model(tmp_path)
    assert ours.config.rope_scaling[0] == "longrope"
    for t in (12, 24):
        ids = rand_ids(2, t, seed=t)
        np.testing.assert_allclose(np.asarray(ours(ids)), torch_scores(m, ids), atol=2e-4, rtol=0)
