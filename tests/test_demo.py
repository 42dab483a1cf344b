"""The embedded demo at a reduced size, and `vas bench` on tiny models."""

import json

import jax
import numpy as np
import pytest

from vas_jax.cli import main
from vas_jax.corpus import brevity, make_corpus, positivity


def test_builtin_rewards_and_corpus():
    assert positivity([""], ["the film was great . i loved the plot ."]) == [2.0]
    assert positivity([""], ["the film was boring . not worth it"]) == [-1.0]  # boring, not; worth
    assert brevity(["", ""], ["a b c", ""]) == [-0.3, -0.0]
    # punctuation glued to words (as the tokenizer's decoder writes it) changes nothing
    assert positivity([""], ["the film was great. i loved it!"]) == [2.0]
    c = make_corpus(500, seed=0)
    assert c == make_corpus(500, seed=0) and len(set(c)) > 400
    scores = positivity([""] * 500, c)
    assert min(scores) < -2 and max(scores) > 2  # the corpus spreads the reward


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    from vas_jax.demo import QUICK, run_demo

    out = tmp_path_factory.mktemp("demo")
    run_demo(out, QUICK, progress=False, log=lambda *_: None)
    return out


@pytest.mark.slow
def test_demo_report_structure_and_guidance_beats_base(quick_report):
    rep = json.loads((quick_report / "report.json").read_text())
    rows = rep["rows"]
    assert {r["method"] for r in rows} == {"base", "vas", "bon", "soft_bon", "block"}
    for r in rows:
        for k in (
            "method",
            "beta",
            "n",
            "reward_mean",
            "reward_se",
            "kl",
            "flops_per_response",
            "seconds_per_response",
        ):
            assert k in r
        assert r["flops_per_response"] > 0 and r["seconds_per_response"] > 0 and r["reward_se"] >= 0
    assert [r["n"] for r in rows if r["method"] == "bon"] == [1, 2, 4, 8, 16]
    base = next(r for r in rows if r["method"] == "base")
    vas = [r for r in rows if r["method"] == "vas" and not r.get("composed")]
    assert max(r["reward_mean"] for r in vas) > base["reward_mean"]
    assert all(r["kl"] >= 0 for r in vas)
    composed = [r for r in rows if r.get("composed")]
    assert len(composed) == 4 and set(composed[0]["rewards"]) == {"positivity", "brevity"}
    block = [r for r in rows if r["method"] == "block"]
    assert len(rep["compute_ratio"]) == len(vas) + len(block)
    # blockwise search: its KL is its bound, within the bound of every block run; the report's one line names it
    assert [(r["block_samples"], r["block"], r["kl_kind"]) for r in block] == [(4, 8, "bound")]
    assert 0 < block[0]["kl"] <= block[0]["kl_bound_max"] and block[0]["reward_mean"] > base["reward_mean"]
    assert "| blockwise K=4 L=8 argmax |" in (quick_report / "examples.md").read_text()
    # composition: each beta raised alone, its own and the other reward's moves, against
    # Best-of-N raising that reward as far (its n = 1 point is the base itself)
    checks = {c["raised"]: c for c in rep["composition"]}
    assert set(checks) == {"positivity", "brevity"}
    zero = next(r for r in composed if r["beta"] == [0.0, 0.0])  # VAS's moves are from its own (0, 0) row
    for c in checks.values():
        row = next(r for r in composed if r["beta"] == c["beta"])
        assert c["own_move"] == pytest.approx(row["rewards"][c["raised"]] - zero["rewards"][c["raised"]])
        assert c["other_move"] == pytest.approx(row["rewards"][c["other"]] - zero["rewards"][c["other"]])
        ref = rep["composition_reference"][c["raised"]]
        assert ref[0]["n"] == 1 and ref[0][c["other"]] == pytest.approx(base["rewards"][c["other"]])
        assert c["within"] is None or c["within"] == (abs(c["other_move"]) <= abs(c["bon_other_move"]))
    # KL labelled by kind: VAS an estimate with its standard error, Best-of-N the analytic bound
    assert {r["kl_kind"] for r in vas} == {"estimate"} and all(r["kl_se"] > 0 for r in vas)
    assert {r["kl_kind"] for r in rows if r["method"] == "bon"} == {"bound"}
    # Best-of-N's tie-aware KL estimate never exceeds its bound; soft Best-of-N's KL stays below hard's
    bon = [r for r in rows if r["method"] == "bon"]
    assert all(0 <= r["kl_estimate"] <= r["kl"] + 1e-9 for r in bon)
    soft = [r for r in rows if r["method"] == "soft_bon"]
    assert soft and all(r["kl"] <= bon[-1]["kl"] + 1e-9 and r["n"] == bon[-1]["n"] for r in soft)
    # admissibility: a VAS row is compared only when its KL is within Best-of-128's bound
    for r, c in zip(vas + block, rep["compute_ratio"]):
        assert r["admissible"] == (r["kl"] <= rep["admissible_kl"]) == c["admissible"]
        assert c["admissible"] or c["bon_n"] is None
    for r in rows:
        if r["method"] != "soft_bon":
            assert 0 < r["distinct2"] <= 1 and 0 < r["distinct3"] <= 1 and r["loglik_per_token"] < 0
    assert "| base |" in (quick_report / "examples.md").read_text()
    for name in ("reward_vs_cost.png", "reward_vs_kl.png", "composed_grid.png"):
        assert (quick_report / name).stat().st_size > 10_000
    # the value models are exported for vas decode, with what they mean
    from vas_jax.values import value_meta

    meta = value_meta(quick_report / "value-positivity")
    assert meta["reward"] == "vas_jax.corpus:positivity" and meta["reward_scale"] > 0 and meta["chat_template"] is False


@pytest.mark.slow
def test_vas_bench_cli(tiny_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench_rewards.py").write_text(
        "def count_w1(prompts, responses):\n    return [float(r.split().count('w1')) for r in responses]\n"
        "def prompt_only(prompts, responses):\n    return [float(p.split()[1][1:]) for p in prompts]\n"
    )
    (tmp_path / "p.jsonl").write_text("".join(f'{{"prompt": "w{i} w{i + 6}"}}\n' for i in range(4)))
    rc = main(
        [
            "bench",
            "--base",
            str(tiny_dirs["base"]),
            "--value",
            str(tiny_dirs["value"]),
            "--reward-fn",
            "bench_rewards:count_w1",
            "--prompts",
            "p.jsonl",
            "--betas",
            "1",
            "4",
            "--samples",
            "2",
            "--bon-max",
            "4",
            "--max-new-tokens",
            "4",
            "--top-k",
            "5",
            "--out",
            "b",
        ]
    )
    assert rc == 0
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [r["n"] for r in rep["rows"] if r["method"] == "bon"] == [1, 2, 4]
    # one basis for every standard error: over prompts. A reward that depends on the prompt alone
    # has the same spread for every method, whatever the samples per prompt or N.
    rc = main(
        [
            "bench",
            "--base",
            str(tiny_dirs["base"]),
            "--value",
            str(tiny_dirs["value"]),
            "--reward-fn",
            "bench_rewards:prompt_only",
            "--prompts",
            "p.jsonl",
            "--betas",
            "1",
            "--samples",
            "3",
            "--bon-max",
            "4",
            "--max-new-tokens",
            "2",
            "--top-k",
            "5",
            "--out",
            "se",
        ]
    )
    assert rc == 0
    rows = json.loads((tmp_path / "se" / "report.json").read_text())["rows"]
    per_prompt = np.array([6.0, 7.0, 8.0, 9.0])  # the number of each prompt's second word
    want = per_prompt.std(ddof=1) / np.sqrt(len(per_prompt))
    for r in rows:
        assert r["reward_se"] == pytest.approx(want, rel=1e-6), r["method"]
    assert "Best-of" in capsys.readouterr().out or rep["compute_ratio"][0]["beyond_bon_max"]
    rc = main(
        [
            "bench",
            "--base",
            str(tiny_dirs["base"]),
            "--value",
            str(tiny_dirs["value"]),
            "--value",
            str(tiny_dirs["value2"]),
            "--reward-fn",
            "bench_rewards:count_w1",
            "--prompts",
            "p.jsonl",
        ]
    )
    assert rc == 2 and "2 --value models but 1 rewards" in capsys.readouterr().err
    if jax.default_backend() != "gpu":
        rc = main(
            [
                "bench",
                "--base",
                str(tiny_dirs["base"]),
                "--value",
                str(tiny_dirs["value"]),
                "--reward-fn",
                "bench_rewards:count_w1",
                "--prompts",
                "p.jsonl",
                "--attention",
                "pallas",
            ]
        )
        assert rc == 2 and "attention='pallas' is a GPU kernel" in capsys.readouterr().err
