"""The XLA options chaosgym compiles its programs with, and `jit`: `jax.jit` with them.

On XLA's CPU backend, jaxlib 0.10's default code generator for fusions (its MLIR "fusion emitters")
compiles MJX programs markedly more slowly than XLA's older elemental emitters, and the programs run
no faster. Measured on a 2-core AMD EPYC CPU with jaxlib 0.10.2, cold: the Ant comparison's programs
(`python benchmarks/compile_budget.py --baseline cff8cfe --commands compare`) in 230 s of XLA time
against 381 s before; the cart pole's step in 6.45 s against 7.22 s and its 10-step training update
in 41.0 s against 64.0 s (`python benchmarks/compile_time.py --emitters --quick --rounds 1`). So
chaosgym's programs built by the trace cache's `CachedJit` (the Gymnasium, vector and SB3
environments, the agents' training updates and evaluations; not the `reproduce` grid's or the
diagnostics', whose recorded data were computed with jaxlib's default) are compiled with
`xla_cpu_use_fusion_emitters=False` where the installed jaxlib has that option. jaxlib 0.11 removed
it (XLA retires the elemental route: openxla/xla PR #48001), and there the option is left out, found
by compiling a one-line program with it once per process. The option is a compile option of each
program (`jax.jit(..., compiler_options=...)`), not a process-wide `XLA_FLAGS` entry: a flag unknown
to a child process's jaxlib would abort that child at start. JAX takes compile options only at the
top level (a `jax.jit` given them and called inside another trace raises), so a program called
inside another trace, where it is inlined into the outer program anyway, is a plain `jax.jit`
(`top_level`).

The two code generators may round some float32 operations differently, so results agree with a plain
`jax.jit` of the same function to rounding, not bit for bit. Set `CHAOSGYM_CPU_FUSION_EMITTERS=1`
(or give `--xla_cpu_use_fusion_emitters=...` in `XLA_FLAGS` yourself) to compile with jaxlib's default.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

try:  # private to JAX: whether no trace (jit, vmap, grad, eval_shape) is active
    from jax._src.core import trace_state_clean as top_level
except ImportError:  # a JAX without it: every program compiles with jaxlib's defaults
    def top_level() -> bool:
        return False

ELEMENTAL_EMITTERS = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def compiler_options() -> dict[str, Any]:
    """The compile options of every chaosgym program in this process (empty: jaxlib's defaults)."""
    if os.environ.get("CHAOSGYM_CPU_FUSION_EMITTERS") == "1" or "xla_cpu_use_fusion_emitters" in os.environ.get(
            "XLA_FLAGS", ""):
        return {}
    try:
        jax.jit(jnp.negative, compiler_options=ELEMENTAL_EMITTERS).lower(jnp.float32(0)).compile()
    except Exception:  # noqa: BLE001  (jaxlib without the option: "No such compile option")
        return {}
    return dict(ELEMENTAL_EMITTERS)


def jit(fn: Callable, **kwargs) -> Callable:
    """`jax.jit(fn, **kwargs)` compiled with chaosgym's `compiler_options()`: call it at the top level
    only (`top_level()`), and a plain `jax.jit` of `fn` inside other traces."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)
