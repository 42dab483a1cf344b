"""Run by test_sharding.py in a subprocess with 8 fake CPU devices (the device count is fixed at JAX start)."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import vas_jax  # noqa: E402
from vas_jax.sharding import DECODE_RULES, TRAIN_RULES, make_mesh, shard_model  # noqa: E402
from vas_jax.train import TrainConfig, init_value_model, rollout_arrays, train_value  # noqa: E402


def flat(m):
    return {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(m, nnx.Param))}


def main(base_dir, value_dir, out):
    import datasets

    assert jax.device_count() == 8
    base, value = vas_jax.load_model(base_dir), vas_jax.load_model(value_dir)
    rng = np.random.RandomState(0)
    ids = rng.randint(1, 96, size=(8, 12)).astype(np.int32)
    prompts = [list(rng.randint(1, 96, size=n)) for n in (3, 7, 2, 9, 5, 4, 8, 6)]
    ref_logits = np.asarray(base(ids))
    ref_gen = vas_jax.generate(base, prompts, key=jax.random.key(0), max_new_tokens=6, temperature=0.0)
    ref_vas = vas_jax.vas_decode(
        base, value, prompts, beta=3.0, top_k=5, key=jax.random.key(0), max_new_tokens=6, temperature=0.0
    )
    for spec in ("data=8", "data=2,fsdp=2,tensor=2", "fsdp=4,tensor=2"):
        mesh = make_mesh(spec)
        for rules in (DECODE_RULES, TRAIN_RULES):
            sb = shard_model(base, mesh, rules)
            np.testing.assert_allclose(np.asarray(sb(ids)), ref_logits, atol=2e-5)
        sb, sv = vas_jax.load_model(base_dir, mesh=mesh), vas_jax.load_model(value_dir, mesh=mesh)
        spec_q = sb.layers[0].attn.q_proj.kernel[...].sharding.spec
        assert tuple(spec_q) == (None, "tensor") or mesh.shape["tensor"] == 1, spec_q
        g = vas_jax.generate(sb, prompts, key=jax.random.key(0), max_new_tokens=6, temperature=0.0, mesh=mesh)
        assert g.token_lists() == ref_gen.token_lists(), spec
        if spec == "data=2,fsdp=2,tensor=2":  # each device holds its rows' cache for its kv heads only
            plan = vas_jax.generate(
                sb, prompts, key=jax.random.key(0), max_new_tokens=6, temperature=0.0, mesh=mesh, run=False
            )
            hlo = plan.compile().as_text()  # the compiled, per-device program
            assert "f32[4,1,22,8]" in hlo and "f32[8,2,22,8]" not in hlo and "f32[4,2,22,8]" not in hlo
        # decoding with fused projections: each fused tensor is split on its kv groups / MLP units
        sb, sv = vas_jax.load_model(base_dir, mesh=mesh, fuse=True), vas_jax.load_model(value_dir, mesh=mesh, fuse=True)
        spec_f = sb.layers[0].attn.qkv_proj.kernel[...].sharding.spec
        assert tuple(spec_f) == (None, "tensor") or mesh.shape["tensor"] == 1, spec_f
        v = vas_jax.vas_decode(
            sb, sv, prompts, beta=3.0, top_k=5, key=jax.random.key(0), max_new_tokens=6, temperature=0.0, mesh=mesh
        )
        assert v.token_lists() == ref_vas.token_lists(), spec
        if spec == "data=2,fsdp=2,tensor=2":  # the attention kernel (interpreted) per device: its rows, kv heads
            import vas_jax.decode_attention as da

            calls, real = [], da.sharded_decode_attention
            da.sharded_decode_attention = lambda *a, calls=calls, real=real, **k: (
                calls.append(k["cache_sharding"].spec) or real(*a, **k)
            )
            v = vas_jax.vas_decode(
                sb,
                sv,
                prompts,
                beta=3.0,
                top_k=5,
                key=jax.random.key(0),
                max_new_tokens=6,
                temperature=0.0,
                mesh=mesh,
                attention="interpret",
            )
            da.sharded_decode_attention = real
            assert v.token_lists() == ref_vas.token_lists(), spec
            # traced once per layer and model (2 + 2), each on rows over data and kv heads over tensor
            assert len(calls) == 4 and all(tuple(c)[:2] == ("data", "tensor") for c in calls), (spec, calls)
            # sampled, with the GPU's fused vocabulary pass (a variadic reduction over the vocabulary, here
            # split over tensor): the tokens and log-probs a single device gets
            import vas_jax.sampling as sampling

            real_pays, sampling.one_pass_pays = sampling.one_pass_pays, lambda: True
            kw = dict(beta=3.0, top_k=5, key=jax.random.key(1), max_new_tokens=6)
            one = vas_jax.vas_decode(base, value, prompts, **kw)
            v = vas_jax.vas_decode(sb, sv, prompts, mesh=mesh, **kw)
            sampling.one_pass_pays = real_pays
            assert v.token_lists() == one.token_lists(), spec
            np.testing.assert_allclose(np.asarray(v.policy_logprobs), np.asarray(one.policy_logprobs), atol=1e-4)
        print("decode ok", spec, flush=True)

    # the step engine (what `vas serve` runs) on a mesh: the tokens one device gets, sampled rows too
    from vas_jax.engine import Engine
    from vas_jax.params import SamplingParams

    def engine_tokens(b, v, mesh):
        e = Engine(b, [v], slots=4, max_len=32, prefill_chunk=16, mesh=mesh)
        todo, out, slot_of = list(enumerate(prompts[:6])), {}, {}  # six requests, four slots: two wait
        while todo or e.busy():
            while todo and e.free:
                i, p = todo.pop(0)
                rp = SamplingParams(beta=(2.0,), temperature=0.0 if i % 2 else 1.0, seed=i, max_new_tokens=6)
                slot_of[e.submit(p, rp)] = i
            for r in e.step():
                out.setdefault(slot_of[r.slot], []).append(r.token)
        if mesh is not None:  # after every program, each device still holds its rows' cache only
            assert tuple(e.state.caches[0].k[0].sharding.spec)[:2] == ("data", "tensor"), (
                e.state.caches[0].k[0].sharding
            )
        return out

    ref_engine = engine_tokens(base, value, None)
    for spec in ("data=4,tensor=2", "data=2,fsdp=2,tensor=2"):
        mesh = make_mesh(spec)
        sb, sv = vas_jax.load_model(base_dir, mesh=mesh, fuse=True), vas_jax.load_model(value_dir, mesh=mesh, fuse=True)
        assert engine_tokens(sb, sv, mesh) == ref_engine, spec
        print("engine ok", spec, flush=True)

    ds = datasets.Dataset.from_dict(
        {
            "prompt_ids": [list(rng.randint(1, 96, size=rng.randint(1, 5))) for _ in range(32)],
            "response_ids": [list(rng.randint(1, 96, size=rng.randint(1, 8))) for _ in range(32)],
            "reward": rng.randn(32).tolist(),
        }
    )
    data = rollout_arrays(ds)
    cfg = TrainConfig(
        batch_size=16, minibatch_size=8, epochs=1, passes=5, learning_rate=1e-3, eval_fraction=0.0, save_every=5, keep=5
    )
    ref, m_ref = train_value(init_value_model(base), data, f"{out}/single", cfg, progress=False, max_steps=10)
    assert m_ref["step"] == 10
    ref_p = flat(ref)
    for spec in ("data=8", "data=2,fsdp=2,tensor=2", "fsdp=4,tensor=2"):
        mesh = make_mesh(spec)
        got, m = train_value(
            init_value_model(base), data, f"{out}/{spec}", cfg, progress=False, mesh=mesh, max_steps=10
        )
        assert abs(m["loss"] - m_ref["loss"]) < 1e-5, (spec, m["loss"], m_ref["loss"])
        for k, a in flat(got).items():
            np.testing.assert_allclose(a, ref_p[k], atol=2e-5, err_msg=f"{spec} {k}")
        print("train ok", spec, flush=True)
    # a checkpoint written on (2,2,2) resumes on (8,1,1) and on one device: steps 6-10 redone there
    import shutil

    for target in ("data=8", None):
        d = f"{out}/resume-{target}"
        shutil.copytree(f"{out}/data=2,fsdp=2,tensor=2", d)
        shutil.rmtree(f"{d}/checkpoints/10")
        mesh = make_mesh(target) if target else None
        got, m = train_value(init_value_model(base), data, d, cfg, progress=False, mesh=mesh, resume=True, max_steps=10)
        for k, a in flat(got).items():
            np.testing.assert_allclose(a, ref_p[k], atol=2e-5, err_msg=f"resume {target} {k}")
        print("resume ok", target, flush=True)
    print("ALL OK")


if __name__ == "__main__":
    main(*sys.argv[1:4])
