"""Bad inputs that used to give a traceback or a silently wrong answer: each is one line and exit 2,
with nothing half-written."""

import json
import os
import shutil
import socket

import datasets
import pytest
from rollout_factory import random_rollouts

import vas_jax
from vas_jax import VasError
from vas_jax.cli import main
from vas_jax.demo import BASE_DIR


def _one_line(capsys, needle):
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("text, needle", [("{not json", "is not valid JSON"), ("[1, 2]", "holds a JSON list, not an")])
def test_a_value_whose_config_is_not_a_json_object(tmp_path, capsys, text, needle):
    bad = tmp_path / "value"
    shutil.copytree(BASE_DIR, bad)
    (bad / "config.json").write_text(text)
    assert main(["decode", "--base", str(BASE_DIR), "--value", str(bad), "--prompt", "review :"]) == 2
    _one_line(capsys, needle)


@pytest.mark.parametrize(
    "source, needle",
    [
        ("x = 1\nraise RuntimeError('no key')\n", "importing badreward failed: RuntimeError: no key ("),
        ("def f(:\n", "importing badreward failed: SyntaxError: "),
    ],
)
def test_a_reward_module_that_fails_to_import_names_the_file_and_line(tmp_path, monkeypatch, capsys, source, needle):
    from vas_jax.rewards import load_reward_function

    monkeypatch.chdir(tmp_path)
    (tmp_path / "badreward.py").write_text(source)
    with pytest.raises(VasError) as e:
        load_reward_function("badreward:f")
    msg = str(e.value)
    assert needle in msg and "badreward.py, line " in msg and "\n" not in msg


def test_prompts_as_plain_strings_and_columns_that_are_not_text(tmp_path):
    from vas_jax.data import read_prompts

    (tmp_path / "p.json").write_text(json.dumps(["review : a", "review : b"]))
    assert read_prompts(tmp_path / "p.json") == ["review : a", "review : b"]
    (tmp_path / "mixed.json").write_text(json.dumps([{"prompt": "a"}, 3]))
    with pytest.raises(VasError, match="row 2 is a JSON int; rows must be objects"):
        read_prompts(tmp_path / "mixed.json")
    datasets.Dataset.from_dict({"prompt": [1, 2]}).to_parquet(str(tmp_path / "n.parquet"))
    with pytest.raises(VasError, match="the 'prompt' column holds int values \\(row 1\\), not text"):
        read_prompts(tmp_path / "n.parquet")


def test_serve_refuses_a_port_in_use_before_loading_anything_and_ports_past_65535(tmp_path, capsys):
    assert main(["serve", "--base", str(BASE_DIR), "--port", "99999"]) == 2
    _one_line(capsys, "argument --port: '99999' is not a port: ports are 1 to 65535")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        # a base that does not exist: were the port checked after loading, this would say so instead
        assert main(["serve", "--base", str(tmp_path / "nothing"), "--port", str(taken)]) == 2
        _one_line(capsys, f"port {taken} on 127.0.0.1 is in use (another server?); pass another --port")


def test_engine_refuses_more_candidates_than_the_vocabulary():
    from vas_jax.engine import Engine

    base = vas_jax.load_model(BASE_DIR)
    with pytest.raises(VasError, match=f"max_top_k must be in \\[1, the vocabulary's {base.config.vocab_size}\\]"):
        Engine(base, [], max_top_k=500)


def test_flags_that_used_to_be_taken_silently(tmp_path, capsys):
    random_rollouts(16, lambda rng, n: rng.normal(size=n)).save_to_disk(str(tmp_path / "d"))
    train = ["train", "--data", str(tmp_path / "d"), "--init", str(BASE_DIR), "--out", str(tmp_path / "r")]
    assert main(train + ["--eval-fraction", "1"]) == 2
    _one_line(capsys, "argument --eval-fraction: '1' must be in [0, 1): the share held out, the rest trained on")
    assert main(["bench", "--base", str(BASE_DIR), "--value", "v", "--reward-fn", "m:f", "--prompts", "p",
                 "--out", "o", "--bon-max", "100"]) == 2  # fmt: skip
    _one_line(capsys, "'100' is not a power of two (Best-of-N runs N = 1, 2, 4, ...): 64 or 128")
    assert not (tmp_path / "r").exists()


def test_help_shows_defaults_of_zero(capsys):
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--seed SEED", "--weight-decay WEIGHT_DECAY", "--ema EMA", "--lora-rank LORA_RANK"):
        assert flag in out and "(default: 0" in out.rsplit(flag, 1)[1].split(" --", 1)[0], flag


def test_exported_weights_are_readable_like_every_other_file(tmp_path):
    old = os.umask(0o022)
    try:
        out = vas_jax.save_model(vas_jax.load_model(BASE_DIR), tmp_path / "m")
    finally:
        os.umask(old)
    assert oct((out / "model.safetensors").stat().st_mode & 0o777) == oct(0o644)
    assert oct((out / "config.json").stat().st_mode & 0o777) == oct(0o644)


def test_train_resume_with_another_init_is_refused(tmp_path, capsys):
    random_rollouts(16, lambda rng, n: rng.normal(size=n), high=60).save_to_disk(str(tmp_path / "d"))
    train = ["train", "--data", str(tmp_path / "d"), "--init", str(BASE_DIR), "--out", str(tmp_path / "r"),
             "--batch-size", "8", "--minibatch-size", "8", "--passes", "1", "--eval-fraction", "0"]  # fmt: skip
    assert main(train + ["--init-layers", "1"]) == 0
    capsys.readouterr()
    assert main(train + ["--init-layers", "2", "--resume"]) == 2
    _one_line(capsys, "--resume with settings that differ from the run in")


@pytest.mark.parametrize("errno_name", ["EROFS", "EACCES", "ENOSPC"])
def test_an_output_place_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch, capsys, errno_name):
    """As root, chmod does not make a read-only directory: the fault is injected where the probe writes."""
    import errno
    import tempfile

    def refuse(*a, **kw):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    out = tmp_path / "o.jsonl"
    assert main(["decode", "--base", str(tmp_path / "no-model"), "--prompt", "x", "--out", str(out)]) == 2
    err = _one_line(capsys, f"--out: cannot write in {str(tmp_path)!r} ({os.strerror(getattr(errno, errno_name))})")
    assert "no-model" not in err and not out.exists()  # refused before the model was looked for


def test_a_disk_that_fills_mid_run_is_one_line(tmp_path, capsys):
    """/dev/full takes the opening and fails every write with ENOSPC."""
    assert main(["decode", "--base", str(BASE_DIR), "--prompt", "review :", "--max-new-tokens", "2",
                 "--out", "/dev/full"]) == 2  # fmt: skip
    _one_line(capsys, "no space left writing under --out '/dev/full'; free space or choose another --out")


def test_a_disk_error_raised_wrapped_in_a_background_writer_is_one_line(tmp_path, monkeypatch, capsys):
    """Orbax writes checkpoints on a thread of its own and re-raises its failure wrapped in another
    error: the OSError beneath is found and said in one line, with exit 2."""
    import errno

    import vas_jax.train

    def full_disk(*a, **kw):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r" / "checkpoints" / "4"))
        except OSError as e:
            raise RuntimeError("background save failed") from e

    monkeypatch.setattr(vas_jax.train, "train_value", full_disk)
    random_rollouts(16, lambda rng, n: rng.normal(size=n), high=60).save_to_disk(str(tmp_path / "d"))
    args = ["train", "--data", str(tmp_path / "d"), "--init", str(BASE_DIR), "--init-layers", "1", "--out",
            str(tmp_path / "r"), "--batch-size", "8", "--minibatch-size", "8"]  # fmt: skip
    assert main(args) == 2
    _one_line(capsys, "no space left writing '" + str(tmp_path / "r" / "checkpoints" / "4"))
