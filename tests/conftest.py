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
