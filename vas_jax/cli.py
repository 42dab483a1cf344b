"""`vas`: the command-line front door. Each subcommand only parses flags and calls the library."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import VasError

# subcommand -> (module that defines `add_arguments(parser)` and `run(args)`, one-line help)
COMMANDS = {
    "info": ("vas_jax.cli_info", "show a checkpoint's architecture, head and size"),
    "decode": ("decode.decode", "value-guided decoding (VAS) or plain sampling; writes JSONL"),
    "sample": ("train.sample", "sample N responses per prompt from the base model (resumable)"),
    "score": ("train.score", "add a reward column to rollouts (Python function or reward model)"),
    "train": ("train.train_value", "train a value model by TD(lambda) on scored rollouts (resumable)"),
    "demo": ("vas_jax.cli_demo", "align the shipped tiny model to two rewards, compare with Best-of-N (make demo)"),
    "bench": ("decode.vas_bench", "VAS vs Best-of-N on your own base, value and reward: report and plots"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vas",
        description="Value Augmented Sampling: align a frozen language model to a reward at decode time.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'vas COMMAND --help' for the flags of one command.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sp.set_defaults(_module=mod)
        importlib.import_module(mod).add_arguments(sp)
    return p


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        from .distributed import initialize

        # a multi-host launch (tpu/launch.sh sets VAS_DISTRIBUTED=1; or VAS_COORDINATOR & co.)
        initialize(auto=os.environ.get("VAS_DISTRIBUTED") == "1")
        importlib.import_module(args._module).run(args)
    except VasError as e:
        print(f"vas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vas {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
