"""A new user's first hour: help text, bad input as one line and exit code 2, nothing half-written."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rollout_factory import random_rollouts

import vas_jax
from vas_jax.cli import build_parser, main
from vas_jax.demo import BASE_DIR, SMALL_DIR

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, *needles):
    """The error is one line starting 'vas COMMAND: error:' (progress bars before it aside), no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("vas ")]
    assert len(lines) == 1 and ": error: " in lines[0], err
    for n in needles:
        assert n in lines[0], err
    return lines[0]


# ----------------------------------------------------------------------------- help


def test_every_flag_has_help_with_its_default_once():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        for action in sp._actions:
            if action.dest == "help":
                continue
            assert action.help, f"vas {name} {action.option_strings or action.dest} has no help"
        text = sp.format_help()
        flat = " ".join(text.split())
        assert "(default: None)" not in flat, name
        for m in re.finditer(r"--[a-z-]+[^-]*?\(default", flat):
            assert m.group(0).count("default") == 1
        assert "default 1.0) (default" not in flat


def test_broken_pipe_is_not_an_error(tmp_path):
    p = subprocess.run(
        f"{sys.executable} -m vas_jax.cli info --json {BASE_DIR} | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.stdout.strip() == "{" and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr


# ----------------------------------------------------------------------------- files and paths


def test_truncated_safetensors_and_pickles_are_one_line(tmp_path, capsys):
    import shutil

    d = tmp_path / "trunc"
    shutil.copytree(SMALL_DIR, d)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert main(["info", str(d)]) == 2
    one_line_error(capsys, "model.safetensors is not a readable safetensors file", "it may be truncated")
    with pytest.raises(vas_jax.VasError, match="truncated"):
        vas_jax.load_model(d)
    f.write_bytes(b"\x10\x00")  # not even a header
    assert main(["info", str(d)]) == 2
    one_line_error(capsys, "is not a readable safetensors file")
    f.unlink()
    (d / "pytorch_model.bin").write_bytes(b"not read")
    assert main(["info", str(d)]) == 2
    one_line_error(capsys, "pytorch_model.bin is a pickle checkpoint", "AutoModelForCausalLM")


def test_non_utf8_prompts_are_refused(tmp_path, capsys):
    bad = tmp_path / "p.txt"
    bad.write_bytes(b"review : the \xff film\n")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes(b'{"prompt": "review \xfe"}\n')
    for args in (
        ["sample", "--base", str(BASE_DIR), "--prompts", str(jsonl), "--out", str(tmp_path / "r")],
        ["decode", "--base", str(BASE_DIR), "--prompts", str(bad)],
    ):
        assert main(args) == 2
        one_line_error(capsys, "is not UTF-8 text", "re-save it as UTF-8")
    assert not (tmp_path / "r").exists()


def test_outputs_are_checked_before_any_work(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    missing_base = str(tmp_path / "no-such-model")  # the --out error must come before this one
    for args in (
        ["sample", "--base", missing_base, "--prompts", "p.jsonl", "--out", str(f)],
        ["train", "--data", "d", "--init", missing_base, "--out", str(f)],
        ["bench", "--base", missing_base, "--value", "v", "--reward-fn", "m:f", "--prompts", "p", "--out", str(f)],
    ):
        assert main(args) == 2
        one_line_error(capsys, "is an existing file")
    assert main(["decode", "--base", missing_base, "--prompt", "x", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "is a directory; give a file path")
    assert main(["decode", "--base", missing_base, "--prompt", "x", "--out", str(tmp_path / "no" / "o.jsonl")]) == 2
    one_line_error(capsys, "does not exist; create it first")


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "args,needle",
    [
        (["sample", "--base", "b", "--prompts", "p", "--out", "o", "--n", "0"], "argument --n: '0' must be at least 1"),
        (["decode", "--base", "b", "--prompt", "x", "--value", "v", "--beta", "nan"], "'nan' is not a finite number"),
        (["decode", "--base", "b", "--prompt", "x", "--value", "v", "--beta", "inf"], "'inf' is not a finite number"),
        (["train", "--data", "d", "--init", "i", "--out", "o", "--lr", "nan"], "'nan' is not a finite number"),
        (["bench", "--base", "b", "--value", "v", "--prompts", "p", "--betas", "1", "nan"], "not a finite number"),
    ],
)
def test_bad_numbers_are_refused_while_parsing(args, needle, capsys):
    assert main(args) == 2
    one_line_error(capsys, needle)


@pytest.mark.slow
def test_diverging_training_stops_and_exports_nothing(tmp_path):

    from vas_jax.train import TrainConfig, init_value_model, rollout_arrays, train_value

    ds = random_rollouts(32, lambda rng, n: [1e30 * (i % 2) for i in range(n)], length=6, high=50)
    data = rollout_arrays(ds, pad_id=0)
    cfg = TrainConfig(learning_rate=1e3, batch_size=16, minibatch_size=8, passes=2, save_every=1, clip_norm=1e30)
    with pytest.raises(vas_jax.VasError, match=r"training diverged: the \w+ is (nan|inf) at step \d+; lower"):
        train_value(init_value_model(vas_jax.load_model(SMALL_DIR)), data, tmp_path / "run", cfg, progress=False)
    ckpts = [p for p in (tmp_path / "run" / "checkpoints").glob("*") if p.name.isdigit()]
    for c in ckpts:  # every checkpoint written holds finite parameters
        import orbax.checkpoint as ocp

        state = ocp.StandardCheckpointer().restore(c / "default")
        leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(state["params"])]
        assert all(np.isfinite(x).all() for x in leaves)


# ----------------------------------------------------------------------------- reward functions


def test_reward_function_errors_name_the_function_and_row(tmp_path, monkeypatch, capsys):
    import datasets

    from vas_jax.rewards import score_dataset

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "bad_rewards.py").write_text(
        "def words(prompts, responses):\n    return ['high' for _ in responses]\n"
        "def picky(prompts, responses):\n"
        "    return [1.0 / (len(r) - 3) for r in responses]\n"
    )
    datasets.Dataset.from_dict({"prompt": ["a", "b", "c"], "response": ["four", "six!!!", "abc"]}).save_to_disk("d")
    assert main(["score", "--data", "d", "--reward-fn", "bad_rewards:words"]) == 2
    one_line_error(capsys, "reward bad_rewards:words returned str 'high' for row 0; a reward must return numbers")
    assert main(["score", "--data", "d", "--reward-fn", "bad_rewards:picky"]) == 2
    one_line_error(capsys, "reward bad_rewards:picky raised ZeroDivisionError on row 2")
    import bad_rewards

    ds = datasets.load_from_disk("d")
    with pytest.raises(vas_jax.VasError) as e:
        score_dataset(ds, bad_rewards.picky, progress=False)
    assert isinstance(e.value.__cause__, ZeroDivisionError)  # the original error is kept


# ----------------------------------------------------------------------------- models and tokenizers


def test_value_models_are_checked_the_same_everywhere(tiny_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text('{"prompt": "review : the"}\n')
    (tmp_path / "rw.py").write_text("def f(p, r):\n    return [0.0] * len(r)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    other_tok = str(tiny_dirs["value"])  # a word-level tokenizer other than the shipped one
    for cmd in (["decode", "--prompt", "review :"], ["bench", "--reward-fn", "rw:f", "--prompts", "p.jsonl"]):
        assert main(cmd + ["--base", str(BASE_DIR), "--value", other_tok]) == 2
        one_line_error(capsys, "tokenizers differ")
        # a causal LM is not a value model unless it was trained as one or the user says so
        assert main(cmd + ["--base", str(BASE_DIR), "--value", str(SMALL_DIR)]) == 2
        one_line_error(capsys, "is a causal LM (*ForCausalLM), not a trained value model", "--value-head vocab")
    assert (
        main(
            [
                "decode",
                "--prompt",
                "review :",
                "--base",
                str(BASE_DIR),
                "--value",
                str(SMALL_DIR),
                "--value-head",
                "vocab",
                "--max-new-tokens",
                "3",
                "--out",
                "o.jsonl",
            ]
        )
        == 0
    )


def test_a_vocabulary_head_trained_by_us_is_accepted(tmp_path):
    from vas_jax.train import init_value_model
    from vas_jax.values import load_value

    tok = vas_jax.load_tokenizer(BASE_DIR)
    vas_jax.save_model(init_value_model(vas_jax.load_model(SMALL_DIR), head="vocab"), tmp_path / "q", tokenizer=tok)
    assert load_value(tmp_path / "q", tok).config.head == "lm"
    vas_jax.save_model(init_value_model(vas_jax.load_model(SMALL_DIR)), tmp_path / "v", tokenizer=tok)
    assert json.loads((tmp_path / "v" / "config.json").read_text())["vas_value"] == {"head": "scalar"}


# ----------------------------------------------------------------------------- reruns


def test_failed_sample_binds_no_settings_and_resume_says_so(tmp_path, monkeypatch, capsys):
    import vas_jax.decode as dec

    prompts = tmp_path / "p.txt"
    prompts.write_text("review : the\nreview : i\nreview :\n")
    out = str(tmp_path / "r")
    real = dec.generate

    def broken(*a, **k):
        raise RuntimeError("device lost")

    monkeypatch.setattr(dec, "generate", broken)
    args = [
        "sample",
        "--base",
        str(BASE_DIR),
        "--prompts",
        str(prompts),
        "--out",
        out,
        "--n",
        "2",
        "--max-new-tokens",
        "4",
        "--batch-size",
        "2",
    ]
    with pytest.raises(RuntimeError):
        main(args)
    monkeypatch.setattr(dec, "generate", real)
    assert not (Path(out) / "rollout_settings.json").exists()
    # the corrected command (other settings) is not refused
    calls = []

    def stop_after_one(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(dec, "generate", stop_after_one)
    assert main(args[:-1] + ["1"]) == 130
    monkeypatch.setattr(dec, "generate", real)
    capsys.readouterr()
    assert main(args[:-1] + ["1"]) == 0
    assert "resuming: 1 of 3 shards already in" in capsys.readouterr().out


# ----------------------------------------------------------------------------- safe by default


def save_pickle(model, path):
    import torch

    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(path))
    torch.save(model.state_dict(), path / "pytorch_model.bin")


@pytest.mark.slow
@pytest.mark.parametrize("head", ["lm", "score"])
def test_the_pickle_fix_keeps_the_head(hf_dir, tmp_path, head):
    import torch

    m, _ = hf_dir("llama", head)  # untied LM / sequence classification
    save_pickle(m, tmp_path)
    with pytest.raises(vas_jax.VasError) as e:
        vas_jax.load_model(tmp_path)
    cmd = re.search(r'python -c "(.*)"$', str(e.value)).group(1)
    subprocess.run([sys.executable, "-c", cmd], check=True, capture_output=True)
    ours = vas_jax.load_model(tmp_path)
    assert ours.config.head == head
    ids = np.array([[3, 9, 27, 4]], np.int32)
    with torch.no_grad():
        out = m(torch.tensor(ids, dtype=torch.long))
    want = out.logits.numpy() if head == "lm" else None
    got = np.asarray(ours(ids))
    if head == "lm":
        np.testing.assert_allclose(got, want, atol=2e-4)
    else:
        trunk = m.model(torch.tensor(ids, dtype=torch.long)).last_hidden_state
        np.testing.assert_allclose(got, m.score(trunk)[..., 0].detach().numpy(), atol=2e-4)


def test_reward_torch_refuses_pickles(hf_dir, tmp_path, capsys):
    import datasets

    m, _ = hf_dir("llama", "score")
    save_pickle(m, tmp_path / "rm")
    datasets.Dataset.from_dict({"prompt": ["a"], "response": ["b"]}).save_to_disk(str(tmp_path / "d"))
    assert main(["score", "--data", str(tmp_path / "d"), "--reward-torch", str(tmp_path / "rm")]) == 2
    one_line_error(capsys, "pytorch_model.bin is a pickle checkpoint", "AutoModelForSequenceClassification")


# ----------------------------------------------------------------------------- text a reward model reads


def test_reward_texts_never_glue_words_and_use_chat_templates():
    from vas_jax.rewards import reward_texts

    tok = vas_jax.load_tokenizer(BASE_DIR)
    assert reward_texts(tok, ["review : the film was", "a "], ["rather brilliant .", "b"]) == [
        "review : the film was rather brilliant .",
        "a b",
    ]
    assert reward_texts(tok, ["x"], ["y"], separator="\n") == ["x\ny"]
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    assert reward_texts(tok, ["hi"], ["there"]) == ["<user>hi<assistant>there"]


def test_shipped_tokenizer_round_trips_the_corpus():
    from vas_jax.corpus import make_corpus

    tok = vas_jax.load_tokenizer(BASE_DIR)
    for text in make_corpus(300, seed=3):
        assert tok.decode(tok(text)["input_ids"]) == text
    ids = tok("Overall, the film was rather brilliant.")["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == "overall , the film was rather brilliant ."


# ----------------------------------------------------------------------------- installs


def test_demo_installs_no_test_extra_and_accelerator_extras_exist(tmp_path):
    import tomllib

    dry = subprocess.run(
        ["make", "-n", "demo", f"VENV={tmp_path / 'v'}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    installs = [ln for ln in dry.splitlines() if "pip install" in ln and "-e" in ln]
    assert installs and all("test" not in ln.split("-e")[-1] for ln in installs)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("jax[cuda") for d in extras["cuda"]) and any(
        d.startswith("jax[tpu]") for d in extras["tpu"]
    )
    assert "torch" not in " ".join(extras["plot"])


def test_no_datasets_progress_bars_in_cli_output(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"prompt": ["a"] * 3, "response": ["b c"] * 3}).save_to_disk(str(tmp_path / "d"))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "vas_jax.cli",
            "score",
            "--data",
            str(tmp_path / "d"),
            "--reward-fn",
            "vas_jax.corpus:brevity",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    for noise in ("Saving the dataset", "Creating parquet", "Map", "Generating"):
        assert noise not in p.stderr, p.stderr
    assert "scored 3 responses" in p.stdout


def test_low_held_out_correlation_warns(tiny_dirs, tmp_path, monkeypatch, capsys):

    # noise: nothing to learn
    random_rollouts(48, lambda rng, n: rng.randn(n), length=5).save_to_disk(str(tmp_path / "d"))
    base = str(tiny_dirs["base"])
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "d"),
                "--init",
                base,
                "--base",
                base,
                "--out",
                str(tmp_path / "r"),
                "--batch-size",
                "16",
                "--minibatch-size",
                "8",
                "--passes",
                "1",
                "--eval-fraction",
                "0.25",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    assert "held-out correlation of V with the returns" in out.out
    assert "vas train: warning: a held-out correlation of" in out.err and "try more rollouts" in out.err


def test_best_of_n_times_each_n_with_its_own_call(tiny_dirs, monkeypatch):
    import vas_jax.harness as harness

    calls = []
    real = harness.generate

    def spy(*a, **k):
        calls.append(k.get("num_samples"))
        return real(*a, **k)

    monkeypatch.setattr(harness, "generate", spy)
    tok = vas_jax.load_tokenizer(tiny_dirs["base"])
    base = vas_jax.load_model(tiny_dirs["base"])
    value = vas_jax.load_model(tiny_dirs["value"])
    rep = harness.run_comparison(
        base,
        tok,
        [[5, 6], [7]],
        [value],
        {"r": lambda p, r: [float(len(x)) for x in r]},
        betas=[1.0],
        samples=2,
        bon_max=4,
        max_new_tokens=2,
        top_k=4,
        progress=False,
    )
    # each N its own call, compiled apart from it and timed alone (the base row is the n = 1 call)
    assert calls == [1, 2, 4]
    bon = [r for r in rep["rows"] if r["method"] == "bon"]
    assert [r["n"] for r in bon] == [1, 2, 4] and all(r["seconds_per_response"] > 0 for r in bon)


def test_new_flags_refuse_bad_combinations_in_one_line(tmp_path, capsys):
    import datasets

    cases = [
        (["demo", "--rollouts", "4"], "--rollouts belong to the real demo; add --real"),
        (["demo", "--real", "--quick"], "--quick is the toy demo's"),
        (["decode", "--base-url", "http://127.0.0.1:9/v1", "--base-model", "m", "--value", str(SMALL_DIR),
          "--prompt", "a", "--remote-mode", "text"], "talks to a chat endpoint: add --chat-template"),
        (["decode", "--base", str(BASE_DIR), "--base-url", "http://x/v1", "--prompt", "a"], "one of them"),
    ]  # fmt: skip
    datasets.Dataset.from_dict({"prompt": ["a"], "response": ["b"]}).save_to_disk(str(tmp_path / "d"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "f").write_text("keep me")
    cases.append(
        (["score", "--data", str(tmp_path / "d"), "--reward-fn", "vas_jax.corpus:brevity", "--out",
          str(tmp_path / "taken")], "exists and is not empty")
    )  # fmt: skip
    capsys.readouterr()  # what making the dataset printed
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert (tmp_path / "taken" / "f").read_text() == "keep me"  # nothing was overwritten
