"""Prompt files and rollout datasets: reading them, with clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .errors import VasError


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise VasError(
            f"{str(path)!r} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); re-save it as UTF-8"
        ) from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(_read_text(path).splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise VasError(f"{path}:{i + 1} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise VasError(f"{path}:{i + 1} is not a JSON object")
        rows.append(row)
    return rows


OLD_SUFFIX = ".old-swap"  # `replace_dir`'s name for the copy it moves aside
NEW_SUFFIX = ".tmp-swap"  # ... and for the new copy before it moves in


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Put directory `new` in place of `target` with no moment where neither is there: the old one is
    renamed aside, the new one renamed in, and only then the old one deleted. A crash at any point
    leaves a state that `recover_dir` finishes or undoes."""
    import os
    import shutil

    new, target = Path(new), Path(target)
    old = target.with_name(target.name + OLD_SUFFIX)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(target: str | Path, log=None) -> None:
    """Finish or undo a `replace_dir` that a crash cut short: with the target in place, the copy moved
    aside is deleted (the swap was done); without it, the copy moved aside is moved back (the swap is
    undone, and the work that made the new copy is redone). A new copy that never moved in is deleted."""
    import os
    import shutil

    target = Path(target)
    old, new = target.with_name(target.name + OLD_SUFFIX), target.with_name(target.name + NEW_SUFFIX)
    if old.exists():
        if target.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, target)
            if log is not None:
                log(f"{target} was being replaced when a run stopped; the earlier copy is back in place")
    if new.exists():
        shutil.rmtree(new)


def drop_torn_tail(path: str | Path, log=None) -> bool:
    """Truncate a JSON-lines file to its last complete line. An append cut short (a kill, a full disk)
    leaves a last line without its newline: skipping it when reading is not enough, since the next
    append would join the torn text. Returns whether anything was cut."""
    path = Path(path)
    if not path.exists():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
    if log is not None:
        log(f"{path}: its last line was cut off mid-write ({len(data) - keep} bytes); dropped it, continuing")
    return True


def _records(rows: list, path: Path) -> list[dict]:
    """JSON rows as records: objects as they are, and a list of plain strings as prompts (the
    `prompt` field); anything else is refused, naming the first row that is neither."""
    if rows and all(isinstance(r, str) for r in rows):
        return [{"prompt": r} for r in rows]
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise VasError(
                f"{str(path)!r}: row {i + 1} is a JSON {type(r).__name__}; rows must be objects "
                '({"prompt": "..."}), or all of them prompt strings'
            )
    return rows


def load_table(path: str | Path):
    """A local JSONL/JSON, CSV or Parquet file, or a `datasets.save_to_disk` directory, as a Dataset.

    Files are read into memory (not through datasets' builder, which would write a cache under
    ~/.cache): nothing is written anywhere.
    """
    import datasets
    import pyarrow as pa

    path = Path(path)
    recover_dir(path, log=lambda m: print(f"vas: {m}", file=sys.stderr))
    if not path.exists():
        raise VasError(f"{str(path)!r} does not exist")
    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            if not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
                raise VasError(f"{str(path)!r} is a directory but not a saved `datasets` dataset")
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
            return ds
        if path.stat().st_size == 0:
            raise VasError(f"{str(path)!r} is empty")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            data = _read_jsonl(path) if suffix == ".jsonl" else json.loads(_read_text(path))
            if not isinstance(data, list):
                raise VasError(f"{str(path)!r} must hold a JSON list (of objects, or of prompt strings)")
            return datasets.Dataset.from_list(_records(data, path))
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            text = _read_text(path)  # a clear error for non-UTF-8 bytes; then parsed from memory
            return datasets.Dataset(pcsv.read_csv(pa.py_buffer(text.encode("utf-8"))))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return datasets.Dataset(pq.read_table(str(path)))
        raise VasError(
            f"unsupported file type {suffix!r} for {str(path)!r}; use .txt, .jsonl, .json, .csv, .parquet "
            "or a datasets directory"
        )
    except VasError:
        raise
    except Exception as e:  # datasets/arrow raise many types for malformed files
        raise VasError(f"could not read {str(path)!r}: {str(e).splitlines()[0]}") from None


def read_prompts(path: str | Path, field: str = "prompt") -> list[str]:
    """Prompts from a file: .txt (one a line), or the `field` column of a table `load_table` reads."""
    path = Path(path)
    if path.suffix.lower() == ".txt" and path.is_file():
        out = [ln for ln in _read_text(path).splitlines() if ln.strip()]
        if not out:
            raise VasError(f"{str(path)!r} holds no prompts")
        return out
    ds = load_table(path)
    if len(ds) == 0:
        raise VasError(f"{str(path)!r} holds no prompts")
    if field not in ds.column_names:
        raise VasError(
            f"{str(path)!r} has no field {field!r} (fields: {', '.join(ds.column_names)}); set --prompt-field"
        )
    col = ds[field]
    missing = [i for i, x in enumerate(col) if x is None]
    if missing:
        raise VasError(f"{str(path)!r}: row {missing[0] + 1} has no {field!r} value")
    bad = [i for i, x in enumerate(col) if not isinstance(x, str)]
    if bad:  # a number or a list would become its repr, silently
        raise VasError(
            f"{str(path)!r}: the {field!r} column holds {type(col[bad[0]]).__name__} values (row {bad[0] + 1}), "
            "not text; prompts are strings"
        )
    return col


def pad_rows(rows, length: int, pad_id: int = 0, side: str = "right"):
    """Token lists -> (ids int32[N, length], mask bool[N, length]), padded on `side` ("left" or
    "right") with `pad_id`: the one place sequences become arrays."""
    ids = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), bool)
    for i, r in enumerate(rows):
        n = len(r)
        sl = slice(length - n, length) if side == "left" else slice(0, n)
        ids[i, sl] = r
        mask[i, sl] = True
    return ids, mask


def encode_prompts(tok, texts: list[str], *, chat_template: bool = False) -> list[list[int]]:
    """Token ids of each prompt (optionally in the tokenizer's chat template); empty ones are refused."""
    if chat_template:
        if not getattr(tok, "chat_template", None):
            raise VasError("--chat-template given, but the tokenizer has no chat template")
        ids = [chat_ids(tok, [{"role": "user", "content": t}]) for t in texts]
    else:
        ids = [tok(t)["input_ids"] for t in texts]
    for i, x in enumerate(ids):
        if not x:
            raise VasError(f"prompt {i} ({texts[i]!r}) encodes to no tokens; remove it or add text")
    return ids


def chat_ids(tok, messages: list[dict], *, continue_final: bool = False) -> list[int]:
    """The token ids of a conversation in the tokenizer's chat template, ready for the assistant's
    turn; or, with continue_final, ending inside the last (assistant) message, to continue it."""
    if not getattr(tok, "chat_template", None):
        raise VasError("the tokenizer has no chat template")
    if continue_final:
        x = tok.apply_chat_template(messages, continue_final_message=True, tokenize=True)
    else:
        x = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return [int(i) for i in (x["input_ids"] if hasattr(x, "keys") else x)]
