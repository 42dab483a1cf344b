"""What a compiled decode program runs per step, read from XLA's optimised HLO; and compiling a
decode program for a device that is not attached (a described GPU), without running it.

The GPU-program comparisons (BENCHMARKS.md) and `benchmarks/gpu_compile.py` / `hlo_stats.py`
count with these; the suite checks them on this machine's CPU.
"""

from __future__ import annotations

import collections
import contextlib
import re

import jax
import jax.numpy as jnp

from . import decode as dec

_FREE = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "after-all", "opt-barrier"}
_HEAD = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")  # a computation starts at column 0
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*.*?\s([a-z][a-z0-9\-]*)\(")
_BODY = re.compile(r"body=%?([\w.\-]+)")


def loop_body(hlo: str) -> list[tuple[str, str]]:
    """Opcode counts of the decode step: the while body with the most instructions that launch work
    (the outer loop's body holds little but the inner loop; the random-number loops are small)."""
    comps, name, bodies = {}, None, []
    for line in hlo.splitlines():
        m = _HEAD.match(line)
        if m:
            name = m.group(1)
            comps[name] = []
            continue
        if name is None:
            continue
        m = _INSTR.match(line)
        if m:
            comps[name].append((m.group(1), line))
            b = _BODY.search(line)
            if m.group(1) == "while" and b:
                bodies.append(b.group(1))
    work = [[(op, ln) for op, ln in comps[b] if op not in _FREE] for b in bodies if b in comps]
    return max(work, key=len, default=[])


def loop_body_ops(hlo: str) -> collections.Counter:
    return collections.Counter(op for op, _ in loop_body(hlo))


def copied_shapes(hlo: str) -> collections.Counter:
    """Shapes of the arrays the decode step copies (a cache-sized copy per step is a bug to fix)."""
    return collections.Counter(
        ln.split("=", 1)[1].split(" copy(")[0].strip() for op, ln in loop_body(hlo) if op == "copy"
    )


@contextlib.contextmanager
def as_gpu():
    """The library picks GPU code paths (the attention kernel, the fused vocabulary pass) by the
    backend: while compiling, it is the described card's, not this machine's."""
    backend = jax.default_backend
    jax.default_backend = lambda: "gpu"
    try:
        yield
    finally:
        jax.default_backend = backend


def compile_for(device, call):
    """Compile for `device` the decode program of `call()` (see `lower_for`)."""
    with as_gpu():
        return lower_for(device, call).compile()


def lower_for(device, call):
    """Lower for `device` the decode program of `call()`: a `generate` / `vas_decode` call on
    abstract models with run=False (it returns its `DecodePlan`); every argument becomes an abstract
    array placed on that device."""
    sharding = jax.sharding.SingleDeviceSharding(device)
    with as_gpu():  # planning reads the backend (sampling.one_pass_pays), compiling targets the card
        plan = call()
        if not isinstance(plan, dec.DecodePlan):
            raise RuntimeError(
                "the call did not reach the decode program: give it run=False so that it returns its DecodePlan"
            )
        states, args = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype, sharding=sharding), (plan.states, plan.args)
        )
        return plan.lower(states, args)


def step_stats(compiled) -> dict:
    """Kernels in one decode step (the compiled loop body), by opcode; the shapes it copies; how many
    of them are the fused attention kernel (Triton custom calls)."""
    hlo = compiled.as_text()
    body = loop_body(hlo)
    return dict(
        ops=collections.Counter(op for op, _ in body),
        copies=copied_shapes(hlo),
        triton=sum("__gpu$xla.gpu.triton" in ln for _, ln in body),
    )
