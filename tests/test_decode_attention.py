"""The fused decode-attention kernel (run by the Pallas interpreter here) against XLA's attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_decode import PROMPTS, models  # noqa: F401  (the module-scoped tiny models)

import vas_jax
from vas_jax import VasError
from vas_jax.decode_attention import BLOCK_K, decode_attention, padded_size, supported
from vas_jax.model import attend


def _case(seed, b, t, nh, kvh, d, size, dtype):
    rng = np.random.RandomState(seed)

    def arr(*shape):
        return jnp.asarray(rng.randn(*shape), dtype)

    return arr(b, t, nh, d), arr(b, kvh, size, d), arr(b, kvh, size, d), arr(b, kvh, t, d), arr(b, kvh, t, d)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("blocks,splits,t,nh", [(1, 1, 6, 8), (3, 3, 6, 8), (3, 2, 6, 8), (3, 2, 1, 8), (1, 1, 1, 6)])
def test_kernel_equals_masked_softmax_attention(dtype, tol, blocks, splits, t, nh):
    """Grouped-query heads, with and without each candidate's own key; one slot range normalised in
    the kernel, or several merged after it, the last one shorter (rows whose valid slots start
    mid-block, span ranges, or miss a range entirely). Fewer than 16 query rows per kv head (t = 1:
    products without the matrix unit), a group of 3 among them (rows padded to 4)."""
    b, kvh, d, size = 4, 2, 16, blocks * BLOCK_K
    q, kc, vc, ks, vs = _case(0, b, t, nh, kvh, d, size, dtype)
    lo = jnp.array([0, 5, 20, 40], jnp.int32) * blocks
    hi = jnp.array([1, 47, 47, 63], jnp.int32) * blocks
    slot = jnp.arange(size)
    mask = jnp.broadcast_to(((slot >= lo[:, None]) & (slot < hi[:, None]))[:, None], (b, t, size))
    for own, own_ref in ((None, None), ((ks, vs, 1), (ks, vs, jnp.arange(t) >= 1))):
        # with own keys, query 0 is the pending token (its key is in the cache already)
        want = attend(q, kc, vc, mask, 0.3, own=own_ref)
        got = jax.jit(lambda *a, own=own: decode_attention(*a, 0.3, own=own, interpret=True, splits=splits))(
            q, kc, vc, lo, hi
        )
        assert got.shape == want.shape == (b, t, nh * d) and got.dtype == want.dtype
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol, rtol=tol)


@pytest.mark.parametrize("t,nh,splits", [(1, 8, 1), (3, 8, 2), (3, 2, 1)])
def test_kernel_writes_the_new_token_into_the_cache(t, nh, splits):
    """write=True: the step's first token is not in the cache yet; the kernel attends to it as a new
    key (the token itself and the candidates after it see it) and stores it at the write index,
    giving what writing it first and attending after gives (the cache too)."""
    b, kvh, d, size, index = 3, 2, 16, 3 * BLOCK_K, 150
    q, kc, vc, ks, vs = _case(1, b, t, nh, kvh, d, size, jnp.float32)
    lo = jnp.array([0, 70, 149], jnp.int32)
    kc_ref = jax.lax.dynamic_update_slice(kc, ks[:, :, :1], (0, 0, index, 0))
    vc_ref = jax.lax.dynamic_update_slice(vc, vs[:, :, :1], (0, 0, index, 0))
    want = decode_attention(
        q, kc_ref, vc_ref, lo, jnp.full((b,), index + 1, jnp.int32), 0.3, own=(ks, vs, 1), interpret=True, splits=splits
    )
    got, kc_new, vc_new = jax.jit(
        lambda *a: decode_attention(*a, 0.3, own=(ks, vs, 1), write=True, interpret=True, splits=splits)
    )(q, kc, vc, lo, jnp.full((b,), index))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(kc_new), np.asarray(kc_ref))
    np.testing.assert_array_equal(np.asarray(vc_new), np.asarray(vc_ref))


def test_cache_sizes_head_widths_and_slot_ranges():
    from vas_jax.decode_attention import MAX_BLOCKS, block_splits

    assert padded_size(1) == padded_size(BLOCK_K) == BLOCK_K and padded_size(BLOCK_K + 1) == 2 * BLOCK_K
    # short caches and full grids read the slots in one range; a long cache on a small grid is split
    # into ranges of whole blocks, at most MAX_BLOCKS each, all of one length but the last
    assert block_splits(1, 8, 6 * BLOCK_K) == block_splits(16, 8, 64 * BLOCK_K) == 1
    for b, kvh, blocks in [(1, 8, 64), (1, 2, 63), (4, 4, 17)]:
        n = block_splits(b, kvh, blocks * BLOCK_K)
        per = -(-blocks // n)
        assert n > 1 and per <= MAX_BLOCKS and (n - 1) * per < blocks
    assert supported(64, 384) and supported(128, 128) and not supported(64, 100)
    assert not supported(8, 128) and not supported(80, 128) and supported(80, 128, interpret=True)


def test_kernel_lowers_to_triton_for_a_gpu():
    """The Pallas -> Triton lowering (run at trace time, no GPU needed) accepts the shapes decoding
    uses: a base step (one query per row) and a value model's pending token plus 20 candidates, each
    writing its new token into the cache."""
    for b, t, nh, kvh, d, size in [
        (1, 1, 32, 8, 64, 384),
        (16, 21, 16, 4, 64, 384),
        (16, 21, 32, 8, 64, 384),
        (2, 3, 8, 8, 128, 128),
    ]:
        q = jax.ShapeDtypeStruct((b, t, nh, d), jnp.bfloat16)
        c = jax.ShapeDtypeStruct((b, kvh, size, d), jnp.bfloat16)
        own = jax.ShapeDtypeStruct((b, kvh, t, d), jnp.bfloat16)
        rows = jax.ShapeDtypeStruct((b,), jnp.int32)

        def f(q, k, v, lo, hi, ks, vs, t=t):
            return decode_attention(q, k, v, lo, hi, 0.125, own=(ks, vs, 1), write=True)

        text = jax.jit(f).trace(q, c, c, rows, rows, own, own).lower(lowering_platforms=("cuda",)).as_text()
        assert text.count("xla.gpu.triton") == 1


@pytest.mark.slow
def test_decoding_with_the_kernel_equals_xla(models, hf_dir, monkeypatch):  # noqa: F811
    """vas_decode (a scalar and a vocabulary-wide value model, sampled, ragged batch) and generate with
    a sliding-window base (whose windowed layers keep XLA's attention) give the same tokens and, to
    rounding, the same log-probabilities and guidance."""
    import vas_jax.decode_attention as da

    calls = []
    kernel = da.decode_attention
    monkeypatch.setattr(
        da, "decode_attention", lambda *a, **k: calls.append(k["write"] and a[0].shape[1] > 1) or kernel(*a, **k)
    )
    base, values = models["base"], [models["v_llama"], models["q_qwen"]]
    windowed = vas_jax.load_model(hf_dir("mistral")[1])
    assert windowed.config.window(0) == 5
    kw = dict(key=jax.random.key(5), max_new_tokens=7)
    runs = {}
    for impl in ("xla", "interpret"):
        runs[impl] = (
            vas_jax.vas_decode(base, values, PROMPTS, beta=[2.0, 1.0], top_k=5, attention=impl, **kw),
            vas_jax.generate(windowed, PROMPTS, attention=impl, temperature=0.0, **kw),
        )
    # traced once per layer, each writing its step's token into the cache: the base's 2, the scalar
    # value model's 2 with candidates beside the written token, the vocabulary-wide one's 2; none in
    # the windowed model
    assert sorted(calls) == [False] * 4 + [True] * 2
    for want, got in zip(runs["xla"], runs["interpret"]):
        assert got.token_lists() == want.token_lists()
        for f in ("logprobs", "policy_logprobs", "guidance"):
            np.testing.assert_allclose(np.asarray(getattr(got, f)), np.asarray(getattr(want, f)), atol=1e-4)
    with pytest.raises(VasError, match="attention must be one of"):
        vas_jax.generate(base, PROMPTS, attention="flash", **kw)
    if jax.default_backend() != "gpu":
        with pytest.raises(VasError, match="attention='pallas' is a GPU kernel"):
            vas_jax.generate(base, PROMPTS, attention="pallas", **kw)
    with pytest.raises(VasError, match="topk_method must be one of lax, chunked, rounds"):
        vas_jax.vas_decode(base, values, PROMPTS, beta=1.0, topk_method="sort", **kw)


def test_gpu_compile_counts_a_decode_step_of_abstract_models(models):  # noqa: F811
    """vas_jax.program_stats (benchmarks/gpu_compile.py's machinery), on this machine's CPU (on a
    CPU-only machine the CUDA compile itself needs the plugin): a decode program of shape-only
    models compiled for a given device without running, counted per step, the library's backend
    choices restored after."""
    from flax import nnx

    from vas_jax.program_stats import compile_for, step_stats

    cfg = models["base"].config
    base = nnx.eval_shape(lambda: vas_jax.Transformer(cfg))
    value = nnx.eval_shape(lambda: vas_jax.Transformer(models["v_llama"].config))
    assert isinstance(base.embed.get_value(), jax.ShapeDtypeStruct)  # no weights made
    backend, program = jax.default_backend, vas_jax.decode.decode_program
    seen = []

    def call():
        seen.append(vas_jax.sampling.one_pass_pays())  # the library sees a GPU backend meanwhile
        return vas_jax.vas_decode(
            base,
            value,
            PROMPTS,
            beta=1.0,
            top_k=4,
            key=jax.random.key(0),
            max_new_tokens=4,
            attention="interpret",
            run=False,
        )

    compiled = compile_for(jax.devices("cpu")[0], call)
    stats = step_stats(compiled)
    assert seen == [True]
    assert jax.default_backend is backend and vas_jax.decode.decode_program is program
    # one step: both models' layers (the kernel interpreted into plain ops here), the pick, the write
    assert sum(stats["ops"].values()) > 10 and stats["triton"] == 0
    with pytest.raises(RuntimeError, match="did not reach the decode program"):
        compile_for(jax.devices("cpu")[0], lambda: None)
