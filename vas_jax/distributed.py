"""Multi-host start-up: JAX's own distributed runtime, nothing home-made.

On a TPU pod slice (or under SLURM / Open MPI) `jax.distributed.initialize()` discovers the
other processes by itself. Elsewhere set VAS_COORDINATOR=host:port, VAS_NUM_PROCESSES and
VAS_PROCESS_ID on every process. On CPU the cross-process collectives use gloo.
"""

from __future__ import annotations

import os

import jax


def initialize(auto: bool = False) -> bool:
    """Join the other processes if the environment says so (or `auto`); returns whether it did."""
    coord = os.environ.get("VAS_COORDINATOR")
    if not coord and not auto:
        return False
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu":
        try:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        except Exception:  # older JAX: collectives flag absent
            pass
    if coord:
        jax.distributed.initialize(
            coordinator_address=coord,
            num_processes=int(os.environ["VAS_NUM_PROCESSES"]),
            process_id=int(os.environ["VAS_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()
    return True
