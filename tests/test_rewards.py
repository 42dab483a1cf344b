"""Rewards on their own (`vas_jax.rewards`): how a reward is named and loaded, what a reward model
reads, and what a reward may return."""

import datasets
import pytest

from vas_jax import VasError
from vas_jax.rewards import call_reward, load_reward, reward_texts, score_dataset


def test_a_reward_is_named_one_way_and_loaded_from_its_spec():
    fn = load_reward(function="vas_jax.corpus:positivity")
    assert fn(["p"], ["great fun"])[0] > fn(["p"], ["dull"])[0]
    with pytest.raises(VasError, match="name one reward"):
        load_reward(function="vas_jax.corpus:positivity", model="some/dir")
    with pytest.raises(VasError, match="must be given as module:function"):
        load_reward(function="vas_jax.corpus")
    with pytest.raises(VasError, match="has no function 'nothing'"):
        load_reward(function="vas_jax.corpus:nothing")


def test_words_are_never_glued_and_a_given_separator_is_kept():
    class Plain:  # a tokenizer without a chat template
        chat_template = None

    assert reward_texts(Plain(), ["it was", "it was ", ""], ["fine", "fine", "fine"]) == ["it was fine"] * 2 + ["fine"]
    assert reward_texts(Plain(), ["a"], ["b"], separator=" | ") == ["a | b"]


def test_what_a_reward_returns_is_checked_row_by_row():
    assert call_reward(lambda p, r: [1, 2.5], ["a", "b"], ["x", "y"]) == [1.0, 2.5]
    with pytest.raises(VasError, match="returned 1 values for 2 responses"):
        call_reward(lambda p, r: [1.0], ["a", "b"], ["x", "y"])
    with pytest.raises(VasError, match="returned str 'good' for row 11; a reward must return numbers"):
        call_reward(lambda p, r: [0.0, "good"], ["a", "b"], ["x", "y"], first_row=10)

    def fails_on_b(p, r):
        return [1 / (x != "b") for x in p]

    with pytest.raises(VasError, match="raised ZeroDivisionError on row 1"):
        call_reward(fails_on_b, ["a", "b"], ["x", "y"])
    ds = datasets.Dataset.from_dict({"prompt": ["a", "b", "c"], "response": ["x", "y", "z"]})
    with pytest.raises(VasError, match=r"1 non-finite reward\(s\) \(NaN or inf\) at row\(s\) 2"):
        score_dataset(ds, lambda p, r: [float("nan") if x == "c" else 0.0 for x in p], batch_size=2, progress=False)
    assert score_dataset(ds, lambda p, r: [len(x) for x in r], progress=False)["reward"] == [1.0, 1.0, 1.0]
