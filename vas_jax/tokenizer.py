"""Tokenizers: loading, comparing, and training a small one for shipped models."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import VasError


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer saved in a checkpoint directory, via transformers."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise VasError(f"tokenizer directory {str(path)!r} does not exist")
    if not any((path / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")):
        raise VasError(f"{str(path)!r} has no tokenizer files (tokenizer.json or tokenizer_config.json)")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # transformers raises many types here
        raise VasError(f"could not load the tokenizer in {str(path)!r}: {str(e).splitlines()[0]}") from None
    return tok


def check_same_tokenizer(a, b, *, names=("base", "value")) -> None:
    """Raise VasError naming the first difference unless `a` and `b` map tokens to ids identically."""
    va, vb = a.get_vocab(), b.get_vocab()
    if len(va) != len(vb):
        raise VasError(
            f"tokenizers differ: the {names[0]} tokenizer has {len(va)} tokens, the {names[1]} tokenizer {len(vb)}; "
            f"the {names[1]} model must use the {names[0]} model's tokenizer"
        )
    for tok, i in sorted(va.items(), key=lambda kv: kv[1]):
        j = vb.get(tok)
        if j != i:
            other = j if j is not None else "no id"
            raise VasError(
                f"tokenizers differ: token {tok!r} is id {i} in the {names[0]} tokenizer but {other} in the "
                f"{names[1]} tokenizer; the {names[1]} model must use the {names[0]} model's tokenizer"
            )


def make_tokenizer(vocab: list[str], *, unk="<unk>", pad="<pad>", eos="</s>", bos="<s>"):
    """A whitespace word-level fast tokenizer over `vocab` (special tokens first); for tests and toys."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = [pad, unk, bos, eos]
    words = specials + [w for w in vocab if w not in specials]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, pad_token=pad, eos_token=eos, bos_token=bos)
