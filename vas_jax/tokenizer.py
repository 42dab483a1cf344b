"""Tokenizers: loading, comparing, and training a small one for shipped models."""

from __future__ import annotations

import functools
import json
import os

from .errors import VasError


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer saved in a checkpoint directory (or a GGUF file's metadata), via transformers."""
    from transformers import AutoTokenizer

    from .gguf_file import find_gguf, load_gguf_tokenizer
    from .hub import resolve_model

    path = resolve_model(path)
    gguf = find_gguf(path) if path.exists() else None
    if gguf is not None:  # the tokenizer and chat template in the file's metadata
        return load_gguf_tokenizer(gguf)
    if not path.is_dir():
        raise VasError(f"tokenizer directory {str(path)!r} does not exist")
    if not any(
        (path / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    ):
        raise VasError(f"{str(path)!r} has no tokenizer files (tokenizer.json or tokenizer_config.json)")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # transformers raises many types here
        raise VasError(f"could not load the tokenizer in {str(path)!r}: {str(e).splitlines()[0]}") from None
    extra = []
    gen = path / "generation_config.json"
    if gen.exists():  # instruct models end a turn with tokens beyond eos_token_id (<end_of_turn>, <|eot_id|>)
        try:
            e = json.loads(gen.read_text()).get("eos_token_id")
        except json.JSONDecodeError:
            raise VasError(f"{gen} is not valid JSON") from None
        extra = [e] if isinstance(e, int) else list(e or [])
    tok.vas_end_of_turn_ids = sorted({int(i) for i in extra} | _own_eos(tok))
    return tok


def _own_eos(tok) -> set:
    return set() if tok.eos_token_id is None else {int(tok.eos_token_id)}


def default_pad_id(tok) -> int:
    """The id padding uses: the tokenizer's pad token, else its first end-of-turn id, else 0. Padding
    is masked everywhere, so any id in the vocabulary serves; this one is at least a special token."""
    if tok.pad_token_id is not None:
        return int(tok.pad_token_id)
    ends = end_of_turn_ids(tok)
    return ends[0] if ends else 0


def end_of_turn_ids(tok) -> list[int]:
    """Every token id that ends a sequence: the tokenizer's EOS and the end-of-turn tokens that
    `load_tokenizer` found in generation_config.json or the GGUF metadata."""
    return sorted(set(getattr(tok, "vas_end_of_turn_ids", [])) | _own_eos(tok))


def token_bytes(tok, token_id: int) -> bytes:
    """The bytes a token stands for, as OpenAI's `bytes` field gives them: exact for byte-level BPE
    (GPT-2, Llama 3, SmolLM2: each character of the piece is one byte) and SentencePiece pieces
    ("▁" a space, "<0xNN>" one byte); otherwise the token's decoded text in UTF-8."""
    piece = tok.convert_ids_to_tokens(int(token_id))
    table = _byte_decoder()
    if piece is not None and piece and all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    if piece is not None and piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
        return bytes([int(piece[3:5], 16)])
    if piece is not None and "▁" in piece:
        return piece.replace("▁", " ").encode()
    return tok.decode([int(token_id)]).encode()


@functools.cache
def _byte_decoder() -> dict:
    """Byte-level BPE's printable stand-in of each byte, reversed (the GPT-2 table, as transformers has it)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def tokenizer_hash(tok) -> str:
    """A short fingerprint of a tokenizer's token-to-id map: equal exactly when the ids mean the same."""
    import hashlib
    import json

    items = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [pad, unk, bos, eos]
    words = specials + [w for w in vocab if w not in specials]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, pad_token=pad, eos_token=eos, bos_token=bos)
