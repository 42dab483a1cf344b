"""Model arguments as users name them: a local path, or a Hugging Face hub id.

`resolve_model` is the one place a model argument becomes a local path: an existing path stays as
it is; `ORG/NAME` is a repository of safetensors checkpoints, and `ORG/NAME/FILE.gguf` one GGUF
file of a repository (such repositories hold many quantizations: the file is named, never all
downloaded). Both go through `huggingface_hub`, so its cache, `HF_HOME`, `HF_HUB_OFFLINE` and
`HF_ENDPOINT` mean what they mean to transformers. Pickled weights are refused, as in directories.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import VasError

# what a checkpoint needs besides its weights: configs, tokenizers, chat templates
_SIDE_FILES = ["*.json", "*.txt", "*.model", "*.jinja", "tokenizer*"]
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(/[^/]+\.gguf)?")


def resolve_model(name: str | os.PathLike) -> Path:
    """The local path of a model argument (see the module's docstring); one clear line when there is none."""
    path = Path(name)
    text = str(name)
    if path.exists() or not _HUB_ID.fullmatch(text) or text.startswith((".", "~")):
        return path  # a path (the caller says when it does not exist)
    parts = text.split("/")
    repo, filename = "/".join(parts[:2]), (parts[2] if len(parts) == 3 else None)
    try:
        if filename is not None:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repo, filename))
        files = _repo_files(repo)
        weights = [f for f in files if f.endswith(".safetensors")]
        if not weights:
            ggufs = sorted(f for f in files if f.endswith(".gguf"))
            if ggufs:
                shown = ", ".join(ggufs[:6]) + (", ..." if len(ggufs) > 6 else "")
                raise VasError(f"{repo} holds {len(ggufs)} GGUF file(s) ({shown}); name one: {repo}/FILE.gguf")
            pickled = [f for f in files if f.endswith(_PICKLES)]
            what = f"only pickled weights ({', '.join(pickled[:3])})" if pickled else "no safetensors or GGUF weights"
            raise VasError(f"{repo} holds {what}; vas-jax loads safetensors and GGUF checkpoints only")
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=_SIDE_FILES + ["*.safetensors"]))
    except VasError:
        raise
    except Exception as e:  # huggingface_hub's errors, and the HTTP client's beneath them
        raise VasError(_explain(text, e)) from None


def _repo_files(repo: str) -> list[str]:
    """The repository's file names: from the hub, or from the cache when offline."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo, local_files_only=True))
        return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
    from huggingface_hub import HfApi

    # one request (model_info), not list_repo_files' paginated calls, which retry a refused connection for ~20 s
    return [f.rfilename for f in HfApi().model_info(repo).siblings or []]


def _explain(name: str, e: Exception) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local = "pass a local checkpoint directory or GGUF file instead"
    if isinstance(e, GatedRepoError):
        return f"no directory {name!r}, and the hub's {name!r} is gated: log in (hf auth login) or {local}"
    if isinstance(e, RepositoryNotFoundError):
        return f"no directory {name!r}, and no model {name!r} on the hub (or it is private); {local}"
    if isinstance(e, (EntryNotFoundError, RevisionNotFoundError)) and not isinstance(e, LocalEntryNotFoundError):
        return f"no directory {name!r}, and the hub's repository has no such file; {local}"
    if constants.HF_HUB_OFFLINE or isinstance(e, LocalEntryNotFoundError):
        return (
            f"no directory {name!r}, and no model {name!r} in the hub cache ({constants.HF_HUB_CACHE}"
            f"{', HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else ''}); {local}"
        )
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return (
        f"no directory {name!r}, and the hub ({constants.ENDPOINT}) could not be reached to fetch it "
        f"({first[:160]}); without a network, {local}"
    )
