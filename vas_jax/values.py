"""Value models as `vas decode`, `vas bench` and the library load them, with one set of checks.

A value model's exported config.json carries a `vas_value` entry saying which head it was trained
with and, when `vas train` made it, what it means: the reward's name, the mean and scale that
normalised the reward for training (values are in units of the reward's standard deviation, so a
beta means the same for every reward), the base's tokenizer fingerprint, and whether the prompts
were in the chat template (`value_meta`, `check_prompting`).

A `*ForSequenceClassification` scores prefixes (the scalar head); a `*ForCausalLM` is used as a
vocabulary-wide Q head only when it was trained as one (the entry says so) or the caller says
`head="vocab"`: any causal LM would otherwise load silently and guide with its next-token logits.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import VasError

CONFIG_KEY = "vas_value"  # in config.json: {"head": "scalar" | "vocab" | "distributional", "atoms": [...]}
HEADS = ("scalar", "vocab", "distributional")


def mark_value_config(cfg, head: str, atoms=None):
    """`cfg` with the value-model entry that `load_value` reads back from config.json (a
    distributional head's atoms with it)."""
    d = json.loads(cfg.hf_config_json)
    entry = {**d.get(CONFIG_KEY, {}), "head": head}
    if atoms is not None:
        entry["atoms"] = [float(a) for a in atoms]
    d[CONFIG_KEY] = entry
    return cfg.replace(hf_config_json=json.dumps(d))


def value_meta(path: str | Path) -> dict:
    """The `vas_value` entry of a value model directory's config.json ({} when there is none)."""
    from .hf import read_config

    f = Path(path) / "config.json"
    return (read_config(path).get(CONFIG_KEY) or {}) if f.exists() else {}


def write_value_meta(path: str | Path, **meta) -> None:
    """Add `meta` to the `vas_value` entry of an exported value model's config.json."""
    from .hf import read_config

    f = Path(path) / "config.json"
    d = read_config(path)
    d[CONFIG_KEY] = {**(d.get(CONFIG_KEY) or {}), **meta}
    f.write_text(json.dumps(d, indent=2, sort_keys=True))


def check_prompting(meta: dict, chat_template: bool, name: str) -> None:
    """Refuse a value model for prompts formatted otherwise than its training prompts: its values
    were learnt on one kind of prefix and mean nothing on the other."""
    trained = meta.get("chat_template")
    if trained is None or bool(trained) == bool(chat_template):
        return
    if trained:
        raise VasError(f"value model {name} was trained on chat-template prompts; use the chat template for it")
    raise VasError(f"value model {name} was trained on prompts without the chat template; don't apply it for it")


def has_tokenizer(path: str | Path) -> bool:
    return any((Path(path) / n).exists() for n in ("tokenizer.json", "tokenizer_config.json"))


def check_value_tokenizer(base_tok, path: str | Path) -> None:
    """A value model must read the base's token ids: its tokenizer, when it ships one, must be the base's."""
    from .tokenizer import check_same_tokenizer, load_tokenizer

    if has_tokenizer(path):
        check_same_tokenizer(base_tok, load_tokenizer(path), names=("base", f"value ({path})"))


def load_value(path: str | Path, base_tok, *, head: str | None = None, **load_kw):
    """Load a value model for guiding a base whose tokenizer is `base_tok`.

    head: None (what the checkpoint says), "scalar", "distributional" or "vocab" (accept a causal LM
    as a Q head).
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
        atoms = (d.get(CONFIG_KEY) or {}).get("atoms") if marked == "distributional" else None
        kind = "distributional" if atoms else "scalar"
        if head == "vocab":
            raise VasError(f"{path} has a {kind} score head (*ForSequenceClassification), not a vocabulary-wide one")
        if head is not None and head != kind:
            raise VasError(f"{path} has a {kind} value head, not a {head} one")
        if atoms and len(atoms) != cfg.num_labels:
            raise VasError(f"{path} has {cfg.num_labels} score labels but {len(atoms)} atoms in its vas_value entry")
        if not atoms and cfg.num_labels != 1:
            raise VasError(
                f"{path} has {cfg.num_labels} score labels and no atoms; a scalar value model has one label "
                "(a distributional one lists its atoms in config.json's vas_value entry)"
            )
    elif marked != "vocab" and head != "vocab":
        raise VasError(
            f"{path} is a causal LM (*ForCausalLM), not a trained value model; train one with `vas train "
            f"--init {path}`, or pass --value-head vocab to use its logits as a Q head"
        )
    check_value_tokenizer(base_tok, path)
    trained_on = (d.get(CONFIG_KEY) or {}).get("base_tokenizer")
    if trained_on is not None:
        from .tokenizer import tokenizer_hash

        if tokenizer_hash(base_tok) != trained_on:
            raise VasError(f"{path} was trained for a base with another tokenizer (fingerprint {trained_on})")
    return load_model(path, **load_kw)
