"""The real demo's pipeline, reduced (few prompts, few tokens), on SmolLM2-135M-Instruct: every
command runs as printed, the report is whole, and guidance raises the reward on held-out prompts."""

import json

import pytest

from vas_jax.real_demo import RealSize, run_real_demo
from vas_jax.text_rewards import readability, sentiment

pytestmark = pytest.mark.slow


def test_text_rewards():
    assert sentiment(["", ""], ["I love this, it is wonderful!", "This is terrible and I hate it."]) == [
        pytest.approx(0.8478),
        pytest.approx(-0.7783),
    ]
    easy, hard, empty, yes = readability(
        [""] * 4,
        ["The cat sat on the mat. It was warm.", "Notwithstanding considerable institutional heterogeneity, "
         "organisational accountability mechanisms necessitate comprehensive reconceptualisation.", " ... ", "Yes."],
    )  # fmt: skip
    assert 80 < easy <= 100 and hard == 0.0  # clipped below at 0
    assert empty == 0.0 and yes == 100.0  # no words: 0; one short word: clipped to 100, not 121


def test_reduced_real_pipeline_guidance_beats_the_base(smollm2, tmp_path):
    size = RealSize(
        train_prompts=64,
        rollouts=4,
        max_new_tokens=16,
        value_layers=1,
        passes=2,
        eval_prompts=16,
        samples=4,
        bon_max=4,
        betas=(4.0,),
        composed=((0.0, 4.0),),
        rounds=1,
        blockwise=("2:8",),
    )
    lines = []
    report = run_real_demo(tmp_path, size, base=smollm2["hf"], log=lines.append)
    commands = [ln.split()[2] for ln in lines if ln.startswith("$ vas ")]
    # then one on-policy round per value model: VAS's rollouts, scored, training continued
    assert commands == ["sample", "score", "score", "train", "train", *["sample", "score", "train"] * 2, "bench"]
    rows = report["rows"]
    base = next(r for r in rows if r["method"] == "base")
    vas = next(r for r in rows if r["method"] == "vas" and not r.get("composed"))
    grid = next(r for r in rows if r.get("composed"))
    assert report["primary_reward"] == "sentiment" and report["rewards"] == ["sentiment", "readability"]
    # each value model moves its own reward up on held-out prompts
    assert vas["reward_mean"] > base["reward_mean"]
    assert grid["rewards"]["readability"] > base["rewards"]["readability"]
    assert [r["n"] for r in rows if r["method"] == "bon"] == [1, 2, 4]
    block = next(r for r in rows if r["method"] == "block")  # vas bench --blockwise 2:8
    assert (block["block_samples"], block["block"], block["keep"]) == (2, 8, "argmax")
    assert any("--blockwise 2:8" in ln for ln in lines)
    for f in ("report.json", "examples.md", "reward_vs_kl.png", "reward_vs_cost.png", "composed_grid.png"):
        assert (tmp_path / "bench" / f).exists()
    meta = json.loads((tmp_path / "train-sentiment" / "value" / "config.json").read_text())["vas_value"]
    assert meta["reward"] == "vas_jax.text_rewards:sentiment" and meta["chat_template"] is True
    again = json.loads((tmp_path / "train-sentiment-round1" / "value" / "config.json").read_text())["vas_value"]
    assert (again["reward_mean"], again["reward_scale"]) == (meta["reward_mean"], meta["reward_scale"])
    guided = json.loads((tmp_path / "rollouts-sentiment-round1" / "rollout_settings.json").read_text())
    assert guided["values"] == [str(tmp_path / "train-sentiment" / "value")] and guided["beta"] == [size.round_beta]
    # a rerun resumes: the rollouts and both value models are kept, only the comparison runs again
    lines.clear()
    run_real_demo(tmp_path, size, base=smollm2["hf"], log=lines.append)
    assert sum("trained already" in ln for ln in lines) == 2 and sum("done already" in ln for ln in lines) == 2
