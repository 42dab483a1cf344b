"""Models named as hub ids (ORG/NAME, ORG/NAME/FILE.gguf), with no network: a hub cache that the
test builds from a shipped model in its own HF_HOME, and a hub endpoint on a closed port."""

import os
import shutil
import socket
import subprocess
import sys

import pytest

from vas_jax.demo import BASE_DIR

REV = "0123456789abcdef0123456789abcdef01234567"


def _cache(home, repo, files: dict):
    """The hub cache layout huggingface_hub reads: hub/models--ORG--NAME/{refs/main, snapshots/REV/...}."""
    root = home / "hub" / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REV)
    snap = root / "snapshots" / REV
    snap.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snap / name) if src is not None else (snap / name).write_bytes(b"")
    return snap


def _vas(args, env):
    return subprocess.run([sys.executable, "-m", "vas_jax.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")
    _cache(home, "tiny-org/review-base", {p.name: p for p in BASE_DIR.iterdir() if p.is_file()})
    _cache(home, "tiny-org/pickles", {"config.json": BASE_DIR / "config.json", "pytorch_model.bin": None})
    _cache(home, "tiny-org/quants", {"m-Q4_K_M.gguf": None, "m-Q8_0.gguf": None})
    return home


def _env(home, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HOME": str(home), **kw}


def test_a_hub_id_loads_the_same_model_as_its_directory(home, monkeypatch):
    """Offline: the cached snapshot is found, and decodes the directory's tokens. In this process
    through huggingface_hub's settings; `vas info` in a fresh one through HF_HOME and HF_HUB_OFFLINE."""
    import jax
    from huggingface_hub import constants

    import vas_jax

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    tok = vas_jax.load_tokenizer("tiny-org/review-base")
    ids = [tok("review : the film")["input_ids"]]
    assert ids == [vas_jax.load_tokenizer(BASE_DIR)("review : the film")["input_ids"]]
    kw = dict(key=jax.random.key(0), max_new_tokens=6, temperature=0.0, eos_token_id=tok.eos_token_id)
    got = vas_jax.generate(vas_jax.load_model("tiny-org/review-base"), ids, **kw).token_lists()
    assert got == vas_jax.generate(vas_jax.load_model(BASE_DIR), ids, **kw).token_lists()
    info = _vas(["info", "tiny-org/review-base"], _env(home, HF_HUB_OFFLINE="1"))
    assert info.returncode == 0 and "tiny-org/review-base: llama" in info.stdout, info.stderr


@pytest.mark.parametrize(
    "name, message",
    [
        ("tiny-org/pickles", "tiny-org/pickles holds only pickled weights (pytorch_model.bin); vas-jax loads"),
        ("tiny-org/quants", "tiny-org/quants holds 2 GGUF file(s) (m-Q4_K_M.gguf, m-Q8_0.gguf); name one: "
                            "tiny-org/quants/FILE.gguf"),
        ("tiny-org/absent", "no directory 'tiny-org/absent', and no model 'tiny-org/absent' in the hub cache"),
    ],
)  # fmt: skip
def test_hub_ids_that_cannot_load_say_why_in_one_line(home, name, message):
    r = _vas(["info", name], _env(home, HF_HUB_OFFLINE="1"))
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_no_network_says_so_and_how_to_do_without(home):
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _vas(["info", "tiny-org/elsewhere"], _env(home, HF_ENDPOINT=f"http://127.0.0.1:{port}"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "no directory 'tiny-org/elsewhere', and the hub" in r.stderr and "could not be reached" in r.stderr
    assert "pass a local checkpoint directory" in r.stderr
