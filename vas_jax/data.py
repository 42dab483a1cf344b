"""Prompt files and rollout datasets: reading them, with clear errors."""

from __future__ import annotations

from pathlib import Path

from .errors import VasError


def load_table(path: str | Path):
    """A local JSONL/JSON, CSV or Parquet file, or a `datasets.save_to_disk` directory, as a Dataset."""
    import datasets

    path = Path(path)
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
        kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(suffix)
        if kind is None:
            raise VasError(f"unsupported file type {suffix!r} for {str(path)!r}; use .jsonl, .csv, .parquet or a datasets directory")
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    except VasError:
        raise
    except Exception as e:  # datasets/arrow raise many types for malformed files
        raise VasError(f"could not read {str(path)!r}: {str(e).splitlines()[0]}") from None


def read_prompts(path: str | Path, field: str = "prompt") -> list[str]:
    """The `field` column of a prompt table, as strings; errors if missing or empty."""
    ds = load_table(path)
    if len(ds) == 0:
        raise VasError(f"{str(path)!r} holds no prompts")
    if field not in ds.column_names:
        raise VasError(f"{str(path)!r} has no field {field!r} (fields: {', '.join(ds.column_names)}); set --prompt-field")
    out = [str(x) for x in ds[field]]
    return out


def encode_prompts(tok, texts: list[str], *, chat_template: bool = False) -> list[list[int]]:
    """Token ids of each prompt (optionally in the tokenizer's chat template); empty ones are refused."""
    if chat_template:
        if not getattr(tok, "chat_template", None):
            raise VasError("--chat-template given, but the tokenizer has no chat template")
        ids = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True)
               for t in texts]
        ids = [list(x["input_ids"]) if isinstance(x, dict) or hasattr(x, "keys") else list(x) for x in ids]
    else:
        ids = [tok(t)["input_ids"] for t in texts]
    for i, x in enumerate(ids):
        if not x:
            raise VasError(f"prompt {i} ({texts[i]!r}) encodes to no tokens; remove it or add text")
    return ids
