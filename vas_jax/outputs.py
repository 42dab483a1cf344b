"""Where results go, checked before any work: a bad output path must not cost a whole run."""

from __future__ import annotations

from pathlib import Path

from .errors import VasError


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """An output directory: absent or a directory (resumable runs write into it), never a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VasError(f"{flag} {str(path)!r} is an existing file; give a directory path (it is created)")
    parent = path.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise VasError(f"{flag} {str(path)!r}: {str(parent)!r} is a file, not a directory")
    where = path if path.is_dir() else next((p for p in path.absolute().parents if p.exists()), None)
    if where is not None:
        check_writable(where, flag)
    return path


def check_writable(directory: Path, flag: str = "--out") -> None:
    """Refuse, before any work, a directory that cannot take a new file (read-only, no permission,
    no space left): a probe file is written and removed."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".vas-probe-"):
            pass
    except OSError as e:
        raise VasError(
            f"{flag}: cannot write in {str(directory)!r} ({e.strerror or e}); choose another place"
        ) from None


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """An output file: not a directory, in a directory that exists."""
    path = Path(path)
    if path.is_dir():
        raise VasError(f"{flag} {str(path)!r} is a directory; give a file path, e.g. {str(path / 'out.jsonl')!r}")
    if not path.absolute().parent.is_dir():
        raise VasError(
            f"{flag} {str(path)!r}: the directory {str(path.absolute().parent)!r} does not exist; create it first"
        )
    if not path.exists() or path.is_file():  # (a device such as /dev/stdout is written as it is)
        check_writable(path.absolute().parent, flag)
    return path
