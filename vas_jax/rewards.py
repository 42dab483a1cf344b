"""Rewards for rollouts: a Python function, a reward model of ours, or a PyTorch reward model.

Every source is a callable `(prompts: list[str], responses: list[str]) -> list[float]`.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import VasError

RewardFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


def load_reward_function(spec: str) -> RewardFn:
    """`module:function`, importable from the working directory or the installed packages."""
    if ":" not in spec:
        raise VasError(f"reward function {spec!r} must be given as module:function")
    mod_name, fn_name = spec.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise VasError(f"cannot import module {mod_name!r} for the reward function: {e}") from None
    except Exception as e:  # the module's own code failed: say where
        import traceback

        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        if isinstance(e, SyntaxError):
            at = f" ({e.filename}, line {e.lineno})"
        else:
            at = f" ({where.filename}, line {where.lineno})" if where else ""
        msg = e.msg if isinstance(e, SyntaxError) else str(e)
        raise VasError(f"importing {mod_name} failed: {type(e).__name__}: {msg}{at}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise VasError(f"module {mod_name!r} has no function {fn_name!r}")
    return fn


def reward_texts(tok, prompts: Sequence[str], responses: Sequence[str], separator: str | None = None) -> list:
    """What a reward model reads for each (prompt, response).

    With a chat template (and no `separator`): the exchange as a user turn and an assistant turn, the
    way chat reward models are trained. Otherwise prompt + separator + response; the default
    separator is one space, left out where the prompt already ends (or the response starts) with
    whitespace, so that words are never glued ("was" + "rather" -> "was rather").
    """
    if separator is None and getattr(tok, "chat_template", None):
        return [
            tok.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
            )
            for p, r in zip(prompts, responses)
        ]
    out = []
    for p, r in zip(prompts, responses):
        sep = (
            separator if separator is not None else ("" if not p or not r or p[-1].isspace() or r[0].isspace() else " ")
        )
        out.append(p + sep + r)
    return out


def _refuse_pickles(path: Path) -> None:
    from .hf import refuse_pickle

    if not path.is_dir():
        raise VasError(f"reward model directory {str(path)!r} does not exist")
    if not list(path.glob("*.safetensors")):
        refuse_pickle(path)
        raise VasError(f"no *.safetensors weights in {str(path)!r}")


class RewardModel:
    """A `*ForSequenceClassification` directory as a reward: its own tokenizer on the text
    `reward_texts` builds, the score at the last token (as transformers pools it). Batches are
    right-padded to length buckets.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dtype="float32",
        batch_size: int = 32,
        label: int = 0,
        max_length: int | None = None,
        separator: str | None = None,
    ):
        import jax
        from flax import nnx

        from .hf import load_model
        from .tokenizer import load_tokenizer

        self.model = load_model(path, dtype=dtype)
        if self.model.config.head != "score":
            raise VasError(f"{path} is not a *ForSequenceClassification checkpoint; a reward model needs a score head")
        self.tok = load_tokenizer(path)
        self.batch_size = batch_size
        self.label = label
        self.separator = separator
        self.max_length = max_length or self.model.config.max_position_embeddings
        graphdef, self.state = nnx.split(self.model)
        multi = self.model.config.num_labels > 1

        @jax.jit
        def score(state, ids, mask):
            m = nnx.merge(graphdef, state)
            s = m(ids, attention_mask=mask)
            last = mask.sum(axis=1) - 1
            s = jax.numpy.take_along_axis(s, last[:, None, None] if multi else last[:, None], axis=1)[:, 0]
            return s[:, label] if multi else s

        self._score = score

    def __call__(self, prompts, responses):
        from .data import pad_rows
        from .decode import bucket_length

        texts = reward_texts(self.tok, prompts, responses, self.separator)
        templated = self.separator is None and getattr(self.tok, "chat_template", None)
        out = []
        for s in range(0, len(texts), self.batch_size):
            enc = [
                self.tok(t, add_special_tokens=not templated)["input_ids"][: self.max_length]
                for t in texts[s : s + self.batch_size]
            ]
            ids, mask = pad_rows(enc, min(bucket_length(max(len(e) for e in enc)), self.max_length))
            out.extend(np.asarray(self._score(self.state, ids, mask)).tolist())
        return out


class TorchRewardModel:
    """transformers' PyTorch `AutoModelForSequenceClassification`, for architectures we don't implement."""

    def __init__(self, path: str | Path, *, batch_size: int = 16, label: int = 0, separator: str | None = None):
        _refuse_pickles(Path(path))  # before PyTorch could unpickle anything
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError:
            raise VasError("--reward-torch needs PyTorch: pip install torch") from None
        self.torch = torch
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path), use_safetensors=True).eval()
        self.tok = AutoTokenizer.from_pretrained(str(path))
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.batch_size = batch_size
        self.label = label
        self.separator = separator

    def __call__(self, prompts, responses):
        out = []
        texts = reward_texts(self.tok, prompts, responses, self.separator)
        templated = self.separator is None and getattr(self.tok, "chat_template", None)
        for s in range(0, len(texts), self.batch_size):
            enc = self.tok(
                texts[s : s + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                add_special_tokens=not templated,
            )
            with self.torch.no_grad():
                logits = self.model(**enc).logits
            out.extend(logits[:, self.label].float().tolist())
        return out


def load_reward(
    *,
    function: str | None = None,
    model: str | None = None,
    torch: str | None = None,
    batch_size: int = 64,
    label: int = 0,
    separator: str | None = None,
) -> RewardFn:
    """One reward, named one way: a function "MODULE:FUNCTION", a reward model directory run here
    (Flax), or one run with transformers' PyTorch."""
    if sum(x is not None for x in (function, model, torch)) != 1:
        raise VasError("name one reward: a function (MODULE:FUNCTION), a reward model, or a PyTorch reward model")
    if function is not None:
        return load_reward_function(function)
    kind = RewardModel if model is not None else TorchRewardModel
    return kind(model or torch, batch_size=batch_size, label=label, separator=separator)


def _name(fn) -> str:
    mod = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{mod}:{name}" if mod and callable(fn) and not isinstance(fn, (RewardModel, TorchRewardModel)) else name


def call_reward(reward: RewardFn, prompts: Sequence[str], responses: Sequence[str], *, first_row: int = 0) -> list:
    """The reward's floats for one batch, or one line saying which function failed on which row and how
    (the original exception kept as the cause)."""
    try:
        got = list(reward(prompts, responses))
    except VasError:
        raise
    except Exception as e:
        row = first_row
        for i in range(len(prompts)):  # find the row it fails on (one at a time: only on failure)
            try:
                reward(prompts[i : i + 1], responses[i : i + 1])
            except Exception:
                row = first_row + i
                break
        raise VasError(
            f"reward {_name(reward)} raised {type(e).__name__} on row {row}: "
            f"{str(e).splitlines()[0] if str(e) else '(no message)'}"
        ) from e
    if len(got) != len(prompts):
        raise VasError(f"reward {_name(reward)} returned {len(got)} values for {len(prompts)} responses")
    out = []
    for i, x in enumerate(got):
        try:
            if isinstance(x, (str, bytes)):
                raise TypeError
            out.append(float(x))
        except (TypeError, ValueError):
            raise VasError(
                f"reward {_name(reward)} returned {type(x).__name__} {repr(x)[:40]} for row "
                f"{first_row + i}; a reward must return numbers"
            ) from None
    return out


def score_dataset(ds, reward: RewardFn, *, batch_size: int = 64, column: str = "reward", progress: bool = True):
    """Add a `column` of rewards to a rollout dataset; non-finite rewards stop with the row ids."""
    from tqdm import tqdm

    for c in ("prompt", "response"):
        if c not in ds.column_names:
            raise VasError(f"the rollout dataset has no {c!r} column; make it with `vas sample`")
    prompts, responses = ds["prompt"], ds["response"]
    rewards: list[float] = []
    for s in tqdm(range(0, len(ds), batch_size), desc="score", unit="batch", disable=not progress):
        rewards.extend(call_reward(reward, prompts[s : s + batch_size], responses[s : s + batch_size], first_row=s))
    bad = [i for i, r in enumerate(rewards) if not math.isfinite(r)]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise VasError(f"{len(bad)} non-finite reward(s) (NaN or inf) at row(s) {shown}; fix the reward and rerun")
    if column in ds.column_names:
        ds = ds.remove_columns(column)
    return ds.add_column(column, rewards)
