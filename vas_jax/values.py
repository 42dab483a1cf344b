"""Value models as `vas decode`, `vas bench` and the library load them, with one set of checks.

A value model's exported config.json carries a `vas_value` entry saying which head it was trained
with. A `*ForSequenceClassification` scores prefixes (the scalar head); a `*ForCausalLM` is used
as a vocabulary-wide Q head only when it was trained as one (the entry says so) or the caller says
`head="vocab"`: any causal LM would otherwise load silently and guide with its next-token logits.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import VasError

CONFIG_KEY = "vas_value"  # in config.json: {"head": "scalar" | "vocab"}
HEADS = ("scalar", "vocab")


def mark_value_config(cfg, head: str):
    """`cfg` with the value-model entry that `load_value` reads back from config.json."""
    d = json.loads(cfg.hf_config_json)
    d[CONFIG_KEY] = {**d.get(CONFIG_KEY, {}), "head": head}
    return cfg.replace(hf_config_json=json.dumps(d))


def has_tokenizer(path: str | Path) -> bool:
    return any((Path(path) / n).exists() for n in ("tokenizer.json", "tokenizer_config.json"))


def check_value_tokenizer(base_tok, path: str | Path) -> None:
    """A value model must read the base's token ids: its tokenizer, when it ships one, must be the base's."""
    from .tokenizer import check_same_tokenizer, load_tokenizer

    if has_tokenizer(path):
        check_same_tokenizer(base_tok, load_tokenizer(path), names=("base", f"value ({path})"))


def load_value(path: str | Path, base_tok, *, head: str | None = None, **load_kw):
    """Load a value model for guiding a base whose tokenizer is `base_tok`.

    head: None (what the checkpoint says), "scalar" or "vocab" (accept a causal LM as a Q head).
    load_kw: passed to `load_model` (dtype, mesh, fuse).
    """
    from .hf import load_model, read_config
    from .hf_config import config_from_hf

    if head is not None and head not in HEADS:
        raise VasError(f"unknown value head {head!r}; use one of {', '.join(HEADS)}")
    d = read_config(path)
    cfg = config_from_hf(d)  # the head is checked before any weight is read
    marked = (d.get(CONFIG_KEY) or {}).get("head")
    if cfg.head == "score":
        if head == "vocab":
            raise VasError(f"{path} has a scalar score head (*ForSequenceClassification), not a vocabulary-wide one")
        if cfg.num_labels != 1:
            raise VasError(f"{path} has {cfg.num_labels} score labels; a value model has one")
    elif marked != "vocab" and head != "vocab":
        raise VasError(
            f"{path} is a causal LM (*ForCausalLM), not a trained value model; train one with `vas train "
            f"--init {path}`, or pass --value-head vocab to use its logits as a Q head"
        )
    check_value_tokenizer(base_tok, path)
    return load_model(path, **load_kw)
