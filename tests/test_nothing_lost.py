"""Interrupted work loses nothing and doubles nothing: a directory replaced in a crash, a resumed
decode, a torn last line, a resumed training run on other data, a beta that is not a number."""

import json
import os

import datasets
import numpy as np
import pytest
from rollout_factory import random_rollouts

import vas_jax
from vas_jax.cli import main
from vas_jax.data import NEW_SUFFIX, OLD_SUFFIX, drop_torn_tail, load_table, replace_dir
from vas_jax.demo import BASE_DIR, SMALL_DIR
from vas_jax.train import TrainConfig, init_value_model, rollout_arrays, train_value


class Killed(BaseException):
    """A kill -9 at this point: nothing after it runs (not even the CLI's handlers)."""


def _save(ds, path):
    ds.save_to_disk(str(path))
    return path


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_replacing_a_directory_never_leaves_neither_copy(tmp_path, monkeypatch, crash_at):
    """A crash at each rename (or at the delete) leaves the rollouts readable: the next reader finds
    the old copy or the new one, never "does not exist"."""
    old = _save(datasets.Dataset.from_dict({"reward": [1.0, 2.0]}), tmp_path / "data")
    new = _save(datasets.Dataset.from_dict({"reward": [3.0, 4.0]}), tmp_path / ("data" + NEW_SUFFIX))
    calls = {"n": 0}
    real_replace, real_rmtree = os.replace, __import__("shutil").rmtree

    def crashing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise Killed
        return real_replace(*a, **kw) if calls["n"] < 3 else real_rmtree(*a, **kw)

    monkeypatch.setattr(os, "replace", crashing)
    monkeypatch.setattr("shutil.rmtree", crashing)
    with pytest.raises(Killed):
        replace_dir(new, old)
    monkeypatch.undo()
    got = load_table(tmp_path / "data")["reward"]
    assert got == ([1.0, 2.0] if crash_at < 3 else [3.0, 4.0])  # undone before the swap, kept after it
    assert not (tmp_path / ("data" + OLD_SUFFIX)).exists() and not (tmp_path / ("data" + NEW_SUFFIX)).exists()


def test_vas_score_killed_between_the_renames_keeps_the_rollouts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nothing_lost_rewards.py").write_text(
        "def length(prompts, responses):\n    return [len(r) for r in responses]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ds = datasets.Dataset.from_dict({"prompt": ["a", "b"], "response": ["xy", "z"], "prompt_ids": [[5], [6]],
                                     "response_ids": [[7, 8], [9]]})  # fmt: skip
    ds.save_to_disk("roll")
    real = os.replace
    calls = []

    def kill_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new copy is about to move in; the old one is aside
            raise Killed
        return real(src, dst)

    monkeypatch.setattr(os, "replace", kill_second)
    with pytest.raises(Killed):
        main(["score", "--data", "roll", "--reward-fn", "nothing_lost_rewards:length"])
    monkeypatch.setattr(os, "replace", real)
    assert not (tmp_path / "roll").exists()  # the window the issue found: only the copies aside
    assert main(["score", "--data", "roll", "--reward-fn", "nothing_lost_rewards:length"]) == 0  # finds, undoes, redoes
    assert "the earlier copy is back in place" in capsys.readouterr().err
    assert load_table("roll")["reward"] == [2.0, 1.0]


def test_a_torn_last_line_is_cut_and_a_bad_middle_line_is_not(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    said = []
    assert drop_torn_tail(f, log=said.append)
    assert f.read_text() == '{"a": 1}\n{"a": 2}\n' and "cut off mid-write" in said[0]
    assert not drop_torn_tail(f)  # a whole file is left alone


DECODE = ["decode", "--base", str(BASE_DIR), "--prompt", "review : the film", "--prompt", "review : i",
          "--samples", "6", "--batch-size", "4", "--max-new-tokens", "5", "--seed", "3"]  # fmt: skip


def test_resumed_decode_writes_what_an_uninterrupted_run_would(tmp_path, capsys):
    """Record for record: the run is cut after its first batch, in the middle of a record of its
    second, then resumed (the repeats of the issue came from re-keying the remaining jobs)."""
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    assert main(DECODE + ["--out", str(full)]) == 0
    lines = full.read_text().splitlines(keepends=True)
    assert len(lines) == 12 and len({json.loads(x)["completion"] for x in lines}) > 6
    cut.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])  # batch 1, and half a record of batch 2
    assert main(DECODE + ["--out", str(cut), "--resume"]) == 0
    assert "cut off mid-write" in capsys.readouterr().err
    assert cut.read_text() == full.read_text()


def test_sample_refuses_a_beta_that_is_not_a_finite_number(tmp_path, capsys):
    for bad in ("nan", "inf"):
        assert main(["sample", "--base", str(BASE_DIR), "--prompts", "p.jsonl", "--value", "v", "--beta", bad,
                     "--out", str(tmp_path / "o")]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert f"argument --beta: '{bad}' is not a finite number" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_training_resume_checks_its_data_survives_a_torn_log_and_says_when_it_had_finished(tmp_path, capsys):
    lm = vas_jax.load_model(SMALL_DIR)
    ds = random_rollouts(32, lambda rng, n: rng.normal(size=n), high=60)
    cfg = TrainConfig(batch_size=16, minibatch_size=8, epochs=1, passes=2, eval_fraction=0.0, save_every=2)
    stop = {"at": 3}

    def kill(step, _):
        if step == stop["at"]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_value(init_value_model(lm), rollout_arrays(ds), tmp_path, cfg, progress=False, on_step=kill)
    log = tmp_path / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 4, "lo')  # a kill in the middle of a write
    other = ds.map(lambda r: {"reward": -r["reward"]})  # the same rollouts, another reward
    with pytest.raises(vas_jax.VasError, match="on other rollouts than the run"):
        train_value(init_value_model(lm), rollout_arrays(other), tmp_path, cfg, resume=True, progress=False)
    _, m = train_value(init_value_model(lm), rollout_arrays(ds), tmp_path, cfg, resume=True, progress=False)
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert steps == list(range(1, 9)) and np.isfinite(m["loss"])  # nothing lost, nothing doubled
    assert "cut off mid-write" in capsys.readouterr().err
    _, again = train_value(init_value_model(lm), rollout_arrays(ds), tmp_path, cfg, resume=True, progress=False)
    assert "had finished (8 of 8 updates)" in capsys.readouterr().err and again["loss"] == m["loss"]


@pytest.mark.slow
def test_vas_decode_killed_for_real_resumes_to_the_uninterrupted_output(tmp_path):
    """kill -9 at a fixed moment (once its output holds one batch), then resume: what an
    uninterrupted run writes, record for record (benchmarks/kill_resume.py kills at random moments)."""
    import signal
    import subprocess
    import sys
    import time

    args = ["decode", "--base", str(BASE_DIR), "--prompt", "review : the film", "--samples", "24", "--batch-size",
            "4", "--max-new-tokens", "6", "--seed", "9"]  # fmt: skip
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "vas_jax.cli", *args, "--out", str(cut)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while p.poll() is None and time.monotonic() < deadline:
        if cut.exists() and cut.read_text().count("\n") >= 4:
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before the kill"  # (or the deadline passed)
    assert main(args + ["--out", str(cut), "--resume"]) == 0
    assert main(args + ["--out", str(full)]) == 0
    assert cut.read_text() == full.read_text() and full.read_text().count("\n") == 24
