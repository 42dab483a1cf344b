"""A value model carries its meaning: the reward's name and normalisation, the base's tokenizer,
and whether its prompts were in the chat template; the commands that load it read them."""

import json

import datasets
import numpy as np
import pytest

import vas_jax
from vas_jax.cli import main
from vas_jax.rollout_batches import normalize_rewards
from vas_jax.tokenizer import tokenizer_hash
from vas_jax.values import value_meta


def test_rewards_are_normalised_for_training():
    ds = datasets.Dataset.from_dict({"reward_a": [1.0, 2.0, 3.0, 6.0], "reward": [9.0] * 4})
    out, mean, scale = normalize_rewards(ds, "reward_a")
    assert mean == 3.0 and scale == pytest.approx(np.std([1, 2, 3, 6]))
    np.testing.assert_allclose(out["reward"], (np.array([1, 2, 3, 6]) - 3) / scale, rtol=1e-6)
    _, mean, scale = normalize_rewards(datasets.Dataset.from_dict({"reward": [2.0, 2.0]}))
    assert (mean, scale) == (2.0, 1.0)  # a constant reward keeps its scale
    with pytest.raises(vas_jax.VasError, match="no 'reward_b' column .*reward_a"):
        normalize_rewards(ds, "reward_b")


def test_score_train_record_the_meaning_and_decode_bench_check_it(tiny_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "meta_rewards.py").write_text(
        "def n_words(prompts, responses):\n    return [len(r.split()) for r in responses]\n"
    )
    base = str(tiny_dirs["base"])
    rng = np.random.RandomState(0)
    n = 32
    datasets.Dataset.from_dict(
        {
            "prompt": ["w1 w2"] * n,
            "response": [" ".join(["w3"] * (i % 5 + 1)) for i in range(n)],
            "prompt_ids": [[5, 6]] * n,
            "response_ids": [list(rng.randint(4, 90, rng.randint(1, 6))) for _ in range(n)],
        }
    ).save_to_disk("d")
    (tmp_path / "d" / "rollout_settings.json").write_text(json.dumps({"chat_template": True}))
    assert main(["score", "--data", "d", "--reward-fn", "meta_rewards:n_words", "--column", "reward_len"]) == 0
    settings = json.loads((tmp_path / "d" / "rollout_settings.json").read_text())
    assert settings["rewards"] == {"reward_len": "meta_rewards:n_words"} and settings["chat_template"] is True
    r = np.asarray(datasets.load_from_disk("d")["reward_len"], np.float64)
    argv = ["train", "--data", "d", "--reward-column", "reward_len", "--init", base, "--init-layers", "1"]
    assert main(argv + ["--out", "v", "--batch-size", "16", "--minibatch-size", "8", "--passes", "1"]) == 0
    meta = value_meta(tmp_path / "v" / "value")
    assert meta["head"] == "scalar" and meta["reward"] == "meta_rewards:n_words" and meta["chat_template"] is True
    assert meta["reward_mean"] == pytest.approx(r.mean()) and meta["reward_scale"] == pytest.approx(r.std())
    assert meta["base_tokenizer"] == tokenizer_hash(vas_jax.load_tokenizer(base))
    capsys.readouterr()
    # trained on chat-template prompts: refused for plain ones, in one line, before any model loads
    (tmp_path / "p.txt").write_text("w1 w2\n")
    common = ["--base", base, "--value", "v/value", "--prompts", "p.txt"]
    assert main(["decode", *common, "--beta", "1", "--max-new-tokens", "2", "--out", "o.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "was trained on chat-template prompts; use the chat template" in err and err.count("\n") == 1
    assert main(["bench", *common, "--reward-fn", "meta_rewards:n_words", "--bon-max", "2", "--out", "b"]) == 2
    assert "was trained on chat-template prompts" in capsys.readouterr().err
    # a base with another tokenizer is refused by the fingerprint, even with no tokenizer shipped
    cfg = json.loads((tmp_path / "v" / "value" / "config.json").read_text())
    cfg["vas_value"]["base_tokenizer"] = "0" * 16
    (tmp_path / "v" / "value" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(vas_jax.VasError, match="trained for a base with another tokenizer"):
        from vas_jax.values import load_value

        load_value(tmp_path / "v" / "value", vas_jax.load_tokenizer(base))
