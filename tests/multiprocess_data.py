"""Rollouts and settings shared by the multi-process check and its single-process reference."""

import numpy as np

CFG = dict(
    batch_size=16, minibatch_size=8, epochs=1, passes=3, learning_rate=1e-3, eval_fraction=0.25, save_every=3, keep=2
)


PROMPTS = [f"w{i} w{i + 1}" for i in range(10)]  # 5 sampling shards of 2 prompts: 3 on host 0, 2 on host 1


def dataset():
    import datasets

    rng = np.random.RandomState(1)
    return datasets.Dataset.from_dict(
        {
            "prompt_ids": [list(rng.randint(1, 96, size=rng.randint(1, 5))) for _ in range(32)],
            "response_ids": [list(rng.randint(1, 96, size=rng.randint(1, 8))) for _ in range(32)],
            "reward": rng.randn(32).tolist(),
        }
    )
