"""`vas`: the command-line front door. Each subcommand only parses flags and calls the library."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import VasError

# subcommand -> (module that defines `add_arguments(parser)` and `run(args)`, one-line help)
COMMANDS = {
    "info": ("vas_jax.cli.info", "show a checkpoint's architecture, head and size"),
    "convert": (
        "vas_jax.cli.convert",
        "write a GGUF (or Hugging Face) checkpoint as a Hugging Face safetensors directory",
    ),
    "decode": ("vas_jax.cli.decode", "value-guided decoding (VAS) or plain sampling; writes JSONL"),
    "sample": ("vas_jax.cli.sample", "sample N responses per prompt from the base model (resumable)"),
    "score": ("vas_jax.cli.score", "add a reward column to rollouts (Python function or reward model)"),
    "train": ("vas_jax.cli.train", "train a value model by TD(lambda) on scored rollouts (resumable)"),
    "demo": ("vas_jax.cli.demo", "align the shipped tiny model to two rewards, compare with Best-of-N (make demo)"),
    "bench": ("vas_jax.cli.bench", "VAS vs Best-of-N on your own base, value and reward: report and plots"),
    "serve": ("vas_jax.cli.serve", "an OpenAI-compatible server; each request sets its own betas (vas object)"),
}


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" once, where a flag has a default worth showing and its help doesn't name it."""

    def _get_help_string(self, action):
        h = action.help or ""
        # by identity: a default of 0 or 0.0 is worth showing (0 == False would hide it)
        d = action.default
        shown = not (d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, list) and not d))
        if shown and "default" not in h and action.option_strings:
            h += " (default: %(default)s)"
        return h


class _Parser(argparse.ArgumentParser):
    """Flag errors in one line, like every other input error, instead of the usage block first."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vas",
        description="Value Augmented Sampling: align a frozen language model to a reward at decode time.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'vas COMMAND --help' for the flags of one command.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    from .args import parents

    for name, (mod, help_) in COMMANDS.items():
        module = importlib.import_module(mod)
        sp = sub.add_parser(
            name,
            help=help_,
            description=help_[0].upper() + help_[1:] + ".",
            formatter_class=_HelpFormatter,
            parents=parents(getattr(module, "PARENTS", ())),  # the flags several commands share, defined once
        )
        sp.set_defaults(_module=mod)
        module.add_arguments(sp)
    return p


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # our own bars say what runs
    # transformers' advice that without PyTorch "models won't be available": ours are JAX models
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad flag (2, its one line already printed)
        return e.code if isinstance(e.code, int) else 2
    if not args.command:
        parser.print_help()
        return 2
    try:
        from ..distributed import initialize

        # a multi-host launch (tpu/launch.sh sets VAS_DISTRIBUTED=1; or VAS_COORDINATOR & co.)
        initialize(auto=os.environ.get("VAS_DISTRIBUTED") == "1")
        importlib.import_module(args._module).run(args)
    except VasError as e:
        print(f"vas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vas {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vas info --json | head`: the reader left; that is not an error
        _silence_stdout()
        return 0
    except Exception as e:  # a disk that fills or turns read-only mid-run (maybe in a background writer)
        disk = _disk_error(e, getattr(args, "out", None))
        if disk is None:
            raise
        print(f"vas {args.command}: error: {disk}", file=sys.stderr)
        return 2
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    return 0


_DISK_ERRNOS = {"ENOSPC": "no space left", "EROFS": "read-only file system", "EACCES": "permission denied",
                "EDQUOT": "disk quota exceeded"}  # fmt: skip


def _disk_error(e: BaseException, out=None) -> str | None:
    """One line for an OSError of a full, read-only or forbidden place, found in `e` or what caused
    it (Orbax's background writer wraps its own), naming the file or else the command's --out;
    None for anything else."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and errno.errorcode.get(e.errno) in _DISK_ERRNOS:
            where = f" writing {e.filename!r}" if e.filename else f" writing under --out {out!r}" if out else ""
            return f"{_DISK_ERRNOS[errno.errorcode[e.errno]]}{where}; free space or choose another --out, then resume"
        e = e.__cause__ or e.__context__
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit finds no closed pipe."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
