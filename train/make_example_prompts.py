"""Write the review prompts the README's recipe uses: `python train/make_example_prompts.py`.

examples/review-prompts.jsonl (train) and examples/review-heldout.jsonl (held out) hold openings of
synthetic reviews (vas_jax.corpus.demo_prompts) from different seeds, so no held-out prompt is
chosen by the seed that made a training prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from vas_jax.corpus import demo_prompts

OUT = Path(__file__).resolve().parents[1] / "examples"


def main():
    OUT.mkdir(exist_ok=True)
    for name, n, seed in (("review-prompts.jsonl", 256, 11), ("review-heldout.jsonl", 64, 12)):
        (OUT / name).write_text("".join(json.dumps({"prompt": p}) + "\n" for p in demo_prompts(n, seed=seed)))
        print(f"{OUT / name}: {n} prompts")


if __name__ == "__main__":
    main()
