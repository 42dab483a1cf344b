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
    for name, (arch, head) in {"base": ("llama", "lm"), "value": ("llama", "score"),
                               "value2": ("gpt2", "score")}.items():
        d = root / name
        shutil.copytree(hf_dir(arch, head)[1], d)
        tok.save_pretrained(str(d))
        out[name] = d
    return out
