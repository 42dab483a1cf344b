"""On-policy rounds: rollouts sampled from VAS itself (`vas sample --value`), scored, and a value
model's training continued on them with the base's rollouts (`vas train --data A --data B
--init-value DIR`), in the first round's reward units."""

import json

import datasets
import numpy as np
import pytest

import vas_jax
from vas_jax.cli import main
from vas_jax.values import value_meta


@pytest.fixture
def round0(tiny_dirs, tmp_path, monkeypatch):
    """Base rollouts, scored by a reward of the test's, and a value model trained on them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "round_rewards.py").write_text(
        "def has_w5(prompts, responses):\n    return [float(r.split().count('w5')) for r in responses]\n"
    )
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1}"}) + "\n" for i in range(4, 20)))
    base = str(tiny_dirs["base"])
    common = ["--base", base, "--prompts", "p.jsonl", "--n", "4", "--max-new-tokens", "6"]
    assert main(["sample", *common, "--out", "r0"]) == 0
    assert main(["score", "--data", "r0", "--reward-fn", "round_rewards:has_w5"]) == 0
    train = ["--batch-size", "16", "--minibatch-size", "8", "--passes", "2"]
    assert main(["train", "--data", "r0", "--init", base, "--init-layers", "1", "--out", "t0", *train]) == 0
    return base, common, train


def test_sampling_from_vas_at_beta_0_is_sampling_from_the_base(round0):
    base, common, _ = round0
    assert main(["sample", *common, "--value", "t0/value", "--beta", "0", "--out", "g0"]) == 0
    plain, guided = datasets.load_from_disk("r0"), datasets.load_from_disk("g0")
    assert guided["response_ids"] == plain["response_ids"]
    settings = json.loads(open("g0/rollout_settings.json").read())
    assert settings["values"] == ["t0/value"] and settings["beta"] == [0.0] and settings["top_k"] == 20


def test_a_round_continues_the_value_model_in_its_reward_units(round0, capsys):
    base, common, train = round0
    assert main(["sample", *common, "--value", "t0/value", "--beta", "8", "--out", "r1"]) == 0
    assert datasets.load_from_disk("r1")["response_ids"] != datasets.load_from_disk("r0")["response_ids"]
    assert main(["score", "--data", "r1", "--reward-fn", "round_rewards:has_w5"]) == 0
    # a learning rate too small to move anything: the continued model is the one it started from
    argv = ["train", "--data", "r0", "--data", "r1", "--init-value", "t0/value", *train]
    assert main([*argv, "--lr", "1e-30", "--out", "t1"]) == 0
    before, after = vas_jax.load_model("t0/value"), vas_jax.load_model("t1/value")
    np.testing.assert_array_equal(np.asarray(after.score.kernel.value), np.asarray(before.score.kernel.value))
    m0, m1 = value_meta("t0/value"), value_meta("t1/value")
    # the first round's mean and scale, though the union's rewards have others
    assert (m1["reward_mean"], m1["reward_scale"]) == (m0["reward_mean"], m0["reward_scale"])
    r = np.concatenate([datasets.load_from_disk(d)["reward"] for d in ("r0", "r1")])
    assert r.mean() != pytest.approx(m0["reward_mean"])
    assert m1["reward"] == "round_rewards:has_w5"
    assert "held-out correlation" in capsys.readouterr().out
    # trained on both datasets: twice the rollouts, twice the updates at the same passes
    assert main([*argv, "--out", "t2"]) == 0
    steps = [json.loads(x)["step"] for d in ("t0", "t2") for x in open(f"{d}/metrics.jsonl").read().splitlines()[-1:]]
    assert steps[1] >= 1.8 * steps[0], steps


def test_round_input_errors_are_one_line(round0, capsys):
    base, common, train = round0
    capsys.readouterr()
    cases = [
        (["sample", *common, "--beta", "2", "--out", "x"], "add --value DIR"),
        (["sample", *common, "--value", "t0/value", "--out", "x"], "give --beta once, or once per --value"),
        (["sample", *common, "--value", "t0/value", "--beta", "1", "2", "3", "--out", "x"], "once per --value"),
        (["train", "--data", "r0", "--out", "x"], "--init LM (a new one) or --init-value DIR"),
        (["train", "--data", "r0", "--init", base, "--init-value", "t0/value", "--out", "x"], "--init-value DIR"),
        (["train", "--data", "r0", "--init-value", "t0/value", "--init-layers", "1", "--out", "x"], "continues one"),
        (["train", "--data", "r0", "--data", "nowhere", "--init-value", "t0/value", "--out", "x"], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    s = json.loads(open("r0/rollout_settings.json").read())
    datasets.load_from_disk("r0").save_to_disk("chat")
    open("chat/rollout_settings.json", "w").write(json.dumps({**s, "chat_template": True}))
    assert main(["train", "--data", "r0", "--data", "chat", "--init-value", "t0/value", "--out", "x"]) == 2
    assert "differ in --chat-template" in capsys.readouterr().err
