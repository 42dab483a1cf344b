"""Flag types shared by the `vas` subcommands, and the flags several of them take (parent parsers).

A bad number is refused while the flags are parsed: one line and exit code 2. (Output paths are
checked by the library, `vas_jax.outputs`, before any work.)
"""

from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    """A float that is neither NaN nor infinite."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return x


def positive_float(text: str) -> float:
    x = finite_float(text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return x


def nonnegative_float(text: str) -> float:
    x = finite_float(text)
    if x < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return x


def probability(text: str) -> float:
    x = finite_float(text)
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return x


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    x = _whole(text)
    if x < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return x


def power_of_two(text: str) -> int:
    """A power of two (Best-of-N runs N = 1, 2, 4, ...: another largest N would silently stop short)."""
    x = positive_int(text)
    if x & (x - 1):
        lo = 1 << (x.bit_length() - 1)
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a power of two (Best-of-N runs N = 1, 2, 4, ...): {lo} or {2 * lo}"
        )
    return x


def held_out_fraction(text: str) -> float:
    """A share in [0, 1): 0 holds nothing out; 1 would leave nothing to train on."""
    x = finite_float(text)
    if not 0 <= x < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 1): the share held out, the rest trained on")
    return x


def port(text: str) -> int:
    """A TCP port, 1-65535 (a larger number would wrap around to another port)."""
    x = _whole(text)
    if not 1 <= x <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: ports are 1 to 65535")
    return x


def nonnegative_int(text: str) -> int:
    x = _whole(text)
    if x < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return x


def block_setting(text: str):
    """K:L[:keep[:beta[:rule]]] -> a `vas_jax.blockwise.BlockSetting`."""
    from vas_jax.blockwise import BlockSetting
    from vas_jax.errors import VasError

    try:
        return BlockSetting.parse(text)
    except VasError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ---------------------------------------------------------------------- flags several commands share
# Each is defined once, as an argparse parent parser; a command names the ones it takes in its
# module's PARENTS, and `vas_jax.cli.build_parser` hands them to its parser. Flags that look alike
# but mean another thing stay with their command (`vas convert --dtype` is the saved dtype; `vas
# sample --top-k` is the sampler's filter).


def _parent(add) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    add(p)
    return p


def _dtype(p):
    from vas_jax.config import DTYPE_NAMES

    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="parameter and compute dtype")


def _max_new_tokens(p):
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest response, in tokens")


def _vas_top_k(p):
    p.add_argument("--top-k", type=positive_int, default=20, help="candidates the value models re-rank per step")


def _rule(p):
    p.add_argument(
        "--rule",
        choices=["mean", "soft"],
        default="mean",
        help="how values move the logits: mean (beta x each candidate's expected reward: VAS) or soft "
        "(log E[exp(beta x reward)], the KL-optimal tilt; needs distributional value heads)",
    )


SHARED = {"dtype": _dtype, "max_new_tokens": _max_new_tokens, "vas_top_k": _vas_top_k, "rule": _rule}


def parents(names) -> list[argparse.ArgumentParser]:
    """The parent parsers of these shared flags (keys of SHARED)."""
    return [_parent(SHARED[n]) for n in names]
