"""Value training: toy problem with exact values, resumable runs, the sample -> score -> train -> decode chain."""

import itertools
import json

import datasets
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vas_jax
from vas_jax import ModelConfig, Transformer, VasError
from vas_jax.cli import main
from vas_jax.hf_config import config_from_hf
from vas_jax.train import TrainConfig, init_value_model, rollout_arrays, train_value


def _toy_reward(resp):
    return float(sum(t == 2 for t in resp)) + (1.0 if resp[0] == 3 else 0.0)


@pytest.mark.slow
def test_td_training_recovers_exact_values_on_toy_problem(tmp_path):
    """4 tokens, horizon 3, no EOS: every prefix's true value E[R | prefix] is enumerated under the base
    policy. A value model trained by TD(0.9) on 4000 of the base's own samples gets within 0.15 of it at
    every one of the 84 prefixes (rewards span 0..3)."""
    v, h, prompt = 4, 3, [1]
    base = Transformer(
        ModelConfig(
            model_type="llama",
            vocab_size=v,
            hidden_size=16,
            intermediate_size=32,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            head_dim=8,
            max_position_embeddings=16,
            norm_eps=1e-5,
        ),
        rngs=nnx.Rngs(3),
    )
    cache = {}

    def probs(prefix):
        if prefix not in cache:
            cache[prefix] = np.asarray(jax.nn.softmax(base(np.array([prompt + list(prefix)]))[0, -1]))
        return cache[prefix]

    def true_value(prefix):
        if len(prefix) == h:
            return _toy_reward(prefix)
        p = probs(prefix)
        return sum(p[a] * true_value(prefix + (a,)) for a in range(v))

    truth = {pre: true_value(pre) for t in range(1, h + 1) for pre in itertools.product(range(v), repeat=t)}
    r = vas_jax.generate(base, [prompt] * 4000, key=jax.random.key(0), max_new_tokens=h)
    resp = r.token_lists()
    ds = datasets.Dataset.from_dict(
        {"prompt_ids": [prompt] * len(resp), "response_ids": resp, "reward": [_toy_reward(x) for x in resp]}
    )
    # GPT-2 trunk: learned absolute positions. (A RoPE-only trunk cannot tell [1,1,1] from [1,1,1,1]:
    # attention over identical tokens averages identical values, whatever their positions.)
    lm = Transformer(
        config_from_hf(dict(model_type="gpt2", vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_positions=16)),
        rngs=nnx.Rngs(5),
    )
    cfg = TrainConfig(
        lam=0.9,
        learning_rate=1e-2,
        batch_size=1000,
        minibatch_size=100,
        epochs=2,
        passes=10,
        warmup_steps=20,
        eval_fraction=0.05,
        save_every=10_000,
    )
    vm, metrics = train_value(init_value_model(lm), rollout_arrays(ds), tmp_path, cfg, progress=False)
    pres = list(truth)  # every prefix in one right-padded batch: V at each one's last token
    ids = np.zeros((len(pres), 1 + h), np.int32)
    for i, pre in enumerate(pres):
        ids[i, : 1 + len(pre)] = prompt + list(pre)
    lens = np.array([1 + len(pre) for pre in pres])
    got = np.asarray(vm(ids, attention_mask=np.arange(1 + h)[None] < lens[:, None]))[np.arange(len(pres)), lens - 1]
    errs = {pre: abs(float(g) - truth[pre]) for pre, g in zip(pres, got)}
    worst = max(errs, key=errs.get)
    assert errs[worst] < 0.15, (worst, errs[worst], truth[worst])
    assert metrics["eval_final_rmse"] < 0.1 and metrics["eval_corr"] > 0.7
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(1, 601))
    assert lines[-1]["loss"] < lines[0]["loss"]


@pytest.fixture(scope="module")
def small_data():
    rng = np.random.RandomState(0)
    prompts = [list(rng.randint(1, 96, size=rng.randint(1, 6))) for _ in range(40)]
    resps = [list(rng.randint(1, 96, size=rng.randint(0, 9))) for _ in range(40)]
    return datasets.Dataset.from_dict({"prompt_ids": prompts, "response_ids": resps, "reward": rng.randn(40).tolist()})


def _flat(model):
    return {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.slow
@pytest.mark.parametrize("ema,accum,dtype,lora", [(0.0, 1, "float32", 0), (0.9, 2, "bfloat16", 4)])
def test_interrupted_training_resumes_to_same_parameters(hf_dir, small_data, tmp_path, ema, accum, dtype, lora):
    lm = vas_jax.load_model(hf_dir("llama")[1])
    data = rollout_arrays(small_data)
    assert len(data) < 40  # empty responses were dropped
    cfg = TrainConfig(
        batch_size=16,
        minibatch_size=8,
        grad_accum=accum,
        epochs=2,
        passes=2,
        ema=ema,
        save_every=5,
        keep=2,
        learning_rate=1e-3,
        eval_fraction=0.1,
        compute_dtype=dtype,
        lora_rank=lora,
        log_every=3,
    )
    full, m_full = train_value(init_value_model(lm), data, tmp_path / "a", cfg, progress=False)

    class Killed(Exception):
        pass

    def kill(step, _):
        if step == 13:  # not a checkpoint step: steps 11-13 are lost and redone
            raise Killed

    with pytest.raises(Killed):
        train_value(init_value_model(lm), data, tmp_path / "b", cfg, progress=False, on_step=kill)
    with pytest.raises(VasError, match="already holds checkpoints; pass --resume"):
        train_value(init_value_model(lm), data, tmp_path / "b", cfg, progress=False)
    resumed, m_res = train_value(init_value_model(lm), data, tmp_path / "b", cfg, resume=True, progress=False)
    a, b = _flat(full), _flat(resumed)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))
    assert m_full["loss"] == m_res["loss"]
    # one log line per update, in order, whether fetched every update (b: on_step) or in groups (a)
    logs = {r: [json.loads(ln) for ln in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab"}
    assert [x["step"] for x in logs["a"]] == [x["step"] for x in logs["b"]] == list(range(1, m_full["step"] + 1))
    assert [x["loss"] for x in logs["a"]] == [x["loss"] for x in logs["b"]]
    kept = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir() if p.name.isdigit())
    assert len(kept) == 2 and int(kept[-1]) == m_full["step"]


def test_lora_trains_adapters_only_and_merges(hf_dir, small_data, tmp_path):
    from vas_jax.model import add_lora, merge_lora

    lm = vas_jax.load_model(hf_dir("llama")[1])
    ids = np.array([[3, 4, 5, 6]])
    # adapters start as a no-op, and merging folds them in exactly
    m = add_lora(vas_jax.load_model(hf_dir("llama")[1]), 4)
    np.testing.assert_allclose(np.asarray(m(ids)), np.asarray(lm(ids)), atol=1e-6)
    for _, mod in m.iter_modules():
        if getattr(mod, "lora_b", None) is not None:
            mod.lora_b.value = jnp.ones_like(mod.lora_b[...]) * 0.01
    before = np.asarray(m(ids))
    np.testing.assert_allclose(np.asarray(merge_lora(m)(ids)), before, atol=1e-5)
    # training with LoRA changes the head and (through the adapters) the trunk's function, but the
    # trunk's stored kernels only by the merged low-rank update
    cfg = TrainConfig(
        batch_size=16,
        minibatch_size=8,
        epochs=1,
        passes=1,
        learning_rate=1e-2,
        eval_fraction=0.0,
        lora_rank=2,
        save_every=100,
    )
    vm0 = init_value_model(lm)
    w0 = np.asarray(vm0.layers[0].attn.q_proj.kernel[...])
    vm, _ = train_value(init_value_model(lm), rollout_arrays(small_data), tmp_path, cfg, progress=False)
    w1 = np.asarray(vm.layers[0].attn.q_proj.kernel[...])
    assert vm.layers[0].attn.q_proj.lora_a is None  # merged for export
    assert np.linalg.matrix_rank(w1 - w0, tol=1e-6) <= 2 and not np.allclose(w1, w0)
    np.testing.assert_array_equal(np.asarray(vm.embed[...]), np.asarray(vm0.embed[...]))  # frozen


def test_init_value_model_heads(hf_dir):
    lm = vas_jax.load_model(hf_dir("llama3_tied")[1])
    vm = init_value_model(lm)
    assert vm.config.head == "score" and vm.config.num_labels == 1
    ids = np.array([[3, 4, 5]])
    assert np.all(np.asarray(vm(ids)) == 0)  # zero-initialised head
    np.testing.assert_array_equal(np.asarray(vm.embed[...]), np.asarray(lm.embed[...]))
    q = init_value_model(lm, head="vocab")
    assert q.config.head == "lm" and not q.config.tie_word_embeddings
    assert np.all(np.asarray(q(ids)) == 0)


def test_bad_rollouts():
    with pytest.raises(VasError, match="no 'reward' column; score it with `vas score`"):
        rollout_arrays(datasets.Dataset.from_dict({"prompt_ids": [[1]], "response_ids": [[2]]}))
    with pytest.raises(VasError, match=r"non-finite reward\(s\) at row\(s\) 1"):
        rollout_arrays(
            datasets.Dataset.from_dict(
                {"prompt_ids": [[1], [1]], "response_ids": [[2], [3]], "reward": [1.0, float("nan")]}
            )
        )


# ------------------------------------------------------------------ the CLI chain


REWARD_MODULE = """
def length(prompts, responses):
    return [float(len(r.split())) for r in responses]

def broken(prompts, responses):
    return [float("nan") if i == 2 else 1.0 for i, _ in enumerate(responses)]
"""


@pytest.mark.slow
def test_sample_score_train_decode_chain(tiny_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy_rewards.py").write_text(REWARD_MODULE)
    (tmp_path / "prompts.csv").write_text("text\n" + "\n".join(f"w{i} w{i + 1}" for i in range(10)) + "\n")
    base = str(tiny_dirs["base"])
    assert (
        main(
            [
                "sample",
                "--base",
                base,
                "--prompts",
                "prompts.csv",
                "--prompt-field",
                "text",
                "--n",
                "3",
                "--max-new-tokens",
                "6",
                "--batch-size",
                "6",
                "--out",
                "roll",
            ]
        )
        == 0
    )
    ds = datasets.load_from_disk("roll")
    assert len(ds) == 30 and sorted(set(ds["prompt_index"])) == list(range(10))
    assert set(ds.column_names) >= {"prompt", "prompt_ids", "response_ids", "response", "logprobs", "ended_with_eos"}
    assert all(len(lp) == len(r) for lp, r in zip(ds["logprobs"], ds["response_ids"]))
    assert main(["score", "--data", "roll", "--reward-fn", "toy_rewards:broken"]) == 2
    assert "non-finite reward(s) (NaN or inf) at row(s) 2" in capsys.readouterr().err
    assert main(["score", "--data", "roll", "--reward-fn", "toy_rewards:length"]) == 0
    scored = datasets.load_from_disk("roll")
    assert scored["reward"] == [float(len(r.split())) for r in scored["response"]]
    # a reward model of ours (its own tokenizer): the score head at the last token
    assert (
        main(
            ["score", "--data", "roll", "--reward-model", str(tiny_dirs["value"]), "--column", "rm", "--out", "roll_rm"]
        )
        == 0
    )
    rm = datasets.load_from_disk("roll_rm")
    vm = vas_jax.load_model(tiny_dirs["value"])
    tok = vas_jax.load_tokenizer(tiny_dirs["value"])
    row = rm[4]
    ids = tok(row["prompt"] + " " + row["response"])["input_ids"]  # joined by one space: no glued words
    assert abs(rm["rm"][4] - float(vm(np.array([ids]))[0, -1])) < 1e-4
    assert (
        main(
            [
                "train",
                "--data",
                "roll",
                "--init",
                base,
                "--out",
                "run",
                "--batch-size",
                "8",
                "--minibatch-size",
                "4",
                "--passes",
                "2",
                "--save-every",
                "4",
                "--lr",
                "1e-3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "value model saved to" in out and "held-out correlation of V with the returns" in out
    value = vas_jax.load_model(tmp_path / "run" / "value")
    assert value.config.head == "score" and value.config.num_labels == 1
    import transformers as tf

    back = tf.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "run" / "value"))
    assert back.config.num_labels == 1
    assert (
        main(
            [
                "decode",
                "--base",
                base,
                "--value",
                "run/value",
                "--beta",
                "4",
                "--prompt",
                "w1 w2",
                "--max-new-tokens",
                "4",
                "--out",
                "dec.jsonl",
            ]
        )
        == 0
    )
    assert len((tmp_path / "dec.jsonl").read_text().splitlines()) == 1


def test_interrupted_sampling_resumes_without_loss_or_duplicates(tiny_dirs, tmp_path):
    from vas_jax.rollouts import sample_rollouts

    tok = vas_jax.load_tokenizer(tiny_dirs["base"])
    base = vas_jax.load_model(tiny_dirs["base"])
    prompts = [f"w{i}" for i in range(7)]
    kw = dict(n=2, max_new_tokens=5, prompts_per_shard=2, progress=False)
    full = sample_rollouts(base, tok, prompts, tmp_path / "a", **kw)

    class Killed(Exception):
        pass

    def kill(shard):
        if shard == 1:
            raise Killed

    with pytest.raises(Killed):
        sample_rollouts(base, tok, prompts, tmp_path / "b", on_shard=kill, **kw)
    assert len(list((tmp_path / "b" / ".shards").glob("shard-*.parquet"))) == 2
    resumed = sample_rollouts(base, tok, prompts, tmp_path / "b", **kw)
    assert resumed.to_dict() == full.to_dict()
    keys = list(zip(resumed["prompt_index"], resumed["sample_index"]))
    assert len(keys) == len(set(keys)) == 14
    with pytest.raises(VasError, match=r"made with other settings \(n"):
        sample_rollouts(base, tok, prompts, tmp_path / "b", **dict(kw, n=3))


def test_cli_input_errors(tiny_dirs, hf_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = str(tiny_dirs["base"])
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["sample", "--base", base, "--prompts", "empty.jsonl", "--out", "x"]) == 2
    assert "'empty.jsonl' is empty" in capsys.readouterr().err
    (tmp_path / "p.jsonl").write_text('{"question": "w1"}\n')
    assert main(["sample", "--base", base, "--prompts", "p.jsonl", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "has no field 'prompt' (fields: question); set --prompt-field" in err and err.count("\n") == 1
    # tokenizer mismatch between the base and the value model's init
    import shutil

    from vas_jax.tokenizer import make_tokenizer

    other = tmp_path / "other"
    shutil.copytree(hf_dir("llama")[1], other)
    make_tokenizer([f"v{i}" for i in range(92)]).save_pretrained(str(other))
    datasets.Dataset.from_dict(
        {"prompt": ["w1"], "response": ["w2"], "prompt_ids": [[5]], "response_ids": [[6]], "reward": [1.0]}
    ).save_to_disk("d")
    assert main(["train", "--data", "d", "--init", str(other), "--base", base, "--out", "r"]) == 2
    err = capsys.readouterr().err
    assert (
        "tokenizers differ: token 'w0' is id 4 in the base tokenizer but no id in the value (--init) tokenizer" in err
    )
    assert (
        main(["train", "--data", "d", "--init", base, "--out", "r", "--batch-size", "6", "--minibatch-size", "4"]) == 2
    )
    assert "--batch-size (6) must be a multiple of --minibatch-size (4)" in capsys.readouterr().err
    assert main(["train", "--data", "d", "--init", base, "--out", "r", "--log-every", "0"]) == 2
    assert "argument --log-every: '0' must be at least 1" in capsys.readouterr().err
    assert main(["train", "--data", "d", "--init", base, "--out", "r", "--data-shards", "0"]) == 2
    assert "argument --data-shards: '0' must be at least 1" in capsys.readouterr().err
    assert main(["train", "--data", "d", "--init", base, "--out", "r", "--data-shards", "4"]) == 2
    assert "1 rollout(s) cannot fill 4 data shards" in capsys.readouterr().err
    if jax.default_backend() != "gpu":
        assert main(["decode", "--base", base, "--prompt", "w1", "--attention", "pallas", "--max-new-tokens", "2"]) == 2
        err = capsys.readouterr().err
        assert "attention='pallas' is a GPU kernel and this backend is cpu" in err and err.count("\n") == 1


@pytest.mark.slow
def test_data_shards_split_like_datasets_and_train(hf_dir, small_data, tmp_path):
    """In one process, --data-shards N holds the N contiguous shards that N hosts would each read
    (datasets' split_dataset_by_node), padded to one length, and trains on them. (That a pod's hosts,
    each with its own shard, train exactly like this is test_sharding's two-process test.)"""
    from datasets.distributed import split_dataset_by_node

    from vas_jax.train import load_rollouts

    data = load_rollouts(small_data, shards=3)
    assert data.count == 3 and sorted(data.local) == [0, 1, 2]
    assert len({b.ids.shape[1] for b in data.local.values()}) == 1
    for s in range(3):
        one = rollout_arrays(
            split_dataset_by_node(small_data, rank=s, world_size=3), max_length=data.local[s].ids.shape[1]
        )
        np.testing.assert_array_equal(data.local[s].ids, one.ids)
        np.testing.assert_array_equal(data.local[s].reward, one.reward)
    lm = vas_jax.load_model(hf_dir("llama")[1])
    cfg = TrainConfig(batch_size=12, minibatch_size=6, epochs=1, passes=1, eval_fraction=0.1, learning_rate=1e-3)
    seen = []
    _, m = train_value(init_value_model(lm), data, tmp_path, cfg, progress=False, on_step=lambda s, mt: seen.append(mt))
    assert m["step"] == len(seen) > 0 and np.isfinite(m["loss"]) and "eval_rmse" in m
    with pytest.raises(VasError, match=r"--batch-size \(8\) and the micro-batch .* must divide by the 3 data shards"):
        train_value(
            init_value_model(lm), data, tmp_path / "x", TrainConfig(batch_size=8, minibatch_size=4), progress=False
        )


def test_torch_reward_model_matches_ours(tiny_dirs):
    from vas_jax.rewards import RewardModel, TorchRewardModel

    prompts, responses = ["w1 w2", "w5"], [" w3 w4 w9", " w6"]
    ours = RewardModel(tiny_dirs["value"])(prompts, responses)
    theirs = TorchRewardModel(tiny_dirs["value"])(prompts, responses)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.slow
def test_vocabulary_wide_value_head_trains_and_exports(hf_dir, small_data, tmp_path):
    lm = vas_jax.load_model(hf_dir("qwen2")[1])
    cfg = TrainConfig(
        batch_size=16, minibatch_size=8, epochs=1, passes=2, learning_rate=1e-2, eval_fraction=0.0, save_every=100
    )
    vm, m = train_value(init_value_model(lm, head="vocab"), rollout_arrays(small_data), tmp_path, cfg, progress=False)
    from vas_jax.train import value_readout

    assert np.abs(np.asarray(vm.lm_head.kernel[...])).max() > 0  # trained away from its zero init
    assert np.isfinite(m["loss"])
    # V(prefix + y_t) is read from Q at position t-1, column y_t
    ids = np.array([[3, 9, 4, 7]], np.int32)
    v = np.asarray(value_readout(vm, ids, np.ones_like(ids, bool)))
    logits = np.asarray(vm(ids))
    np.testing.assert_allclose(v[0, 1:], logits[0, np.arange(3), ids[0, 1:]], atol=1e-6)
    out = vas_jax.save_model(vm, tmp_path / "q")
    q = vas_jax.load_model(out)
    assert q.config.head == "lm"
    # usable as a vocabulary-wide value model in vas_decode
    r = vas_jax.vas_decode(lm, q, [[3, 4, 5]], beta=2.0, key=jax.random.key(0), max_new_tokens=3, top_k=5)
    assert r.tokens.shape == (1, 3)


def test_pod_layout_errors(small_data, monkeypatch):
    """On several hosts (process count patched: one real process), rollouts need a mesh, one shard
    per host, and a mesh whose data x fsdp blocks the hosts can each own; else one clear line."""
    from vas_jax.sharding import make_mesh
    from vas_jax.train import load_rollouts, process_block

    mesh = make_mesh("data=1", devices=jax.devices()[:1])
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(VasError, match="training on several hosts needs a mesh"):
        load_rollouts(small_data)
    with pytest.raises(VasError, match="read in 2 shards, one per host; --data-shards 3 does not fit"):
        load_rollouts(small_data, shards=3, mesh=mesh)
    with pytest.raises(VasError, match=r"data x fsdp \(1\) must be a multiple of the 2 hosts"):
        process_block(mesh)
