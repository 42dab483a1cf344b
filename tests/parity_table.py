"""Print the README's parity table: each family against transformers' PyTorch, on tiny random configs.

    python tests/parity_table.py

Largest absolute difference of the logits (causal LM) and of the per-position scores (sequence
classification) in float32, of cached decoding against full recomputation (ours), and of
transformers' logits for a checkpoint we saved.
"""

import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from hf_factory import ARCHS, make_hf, save_hf  # noqa: E402
from test_models import rand_ids, torch_scores  # noqa: E402

import vas_jax  # noqa: E402


def main():
    print("| family | causal LM | sequence classification | KV-cache decode vs full | saved, then transformers |")
    print("| --- | --- | --- | --- | --- |")
    ids = rand_ids(2, 12, seed=5)
    for arch in ARCHS:
        row = []
        for head in ("lm", "score"):
            m = make_hf(arch, head)
            d = Path(tempfile.mkdtemp())
            save_hf(m, d)
            ours = vas_jax.load_model(d)
            row.append(np.abs(np.asarray(ours(ids)) - torch_scores(m, ids)).max())
            if head == "lm":
                full = np.asarray(ours(ids))
                cache = vas_jax.init_cache(ours.config, 2, 16, dtype=ours.dtype)
                out, cache = ours.forward(ids[:, :8], cache, mode="prefill")
                steps = [out[:, -1]]
                for t in range(8, 12):
                    out, cache = ours.forward(ids[:, t : t + 1], cache, mode="extend")
                    steps.append(out[:, -1])
                cached = np.stack([np.asarray(s) for s in steps[1:]], axis=1)
                row.append(np.abs(cached - full[:, 8:12]).max())
                back = Path(tempfile.mkdtemp())
                vas_jax.save_model(ours, back)
                row.append(np.abs(torch_scores(type(m).from_pretrained(str(back)).eval(), ids) - full).max())
        lm, cache_err, saved, score = row
        print(f"| {arch} | {lm:.1e} | {score:.1e} | {cache_err:.1e} | {saved:.1e} |")
    jax.clear_caches()


if __name__ == "__main__":
    main()
