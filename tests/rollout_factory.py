"""Scored rollouts made up for the training tests: one shared maker, so that every test builds its
table the same way (a two-token prompt, random response ids, rewards from the same generator)."""

import datasets
import numpy as np

# a test that saves these tables checks what `vas` alone writes to stderr: no saving bars
datasets.disable_progress_bars()


def random_rollouts(n: int, reward, *, length: int = 4, high: int = 90, seed: int = 0) -> datasets.Dataset:
    """n rollouts: prompt ids [5, 6], `length` response ids drawn from [4, high), then the rewards
    `reward(rng, n)` from the same generator (drawn after the responses)."""
    rng = np.random.RandomState(seed)
    responses = [list(rng.randint(4, high, length)) for _ in range(n)]
    return datasets.Dataset.from_dict(
        {"prompt_ids": [[5, 6]] * n, "response_ids": responses, "reward": list(reward(rng, n))}
    )
