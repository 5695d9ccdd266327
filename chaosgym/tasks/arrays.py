"""The array module a task's functions compute in, so that one task module serves both backends.

On MJX (`jit`, `vmap`, `grad`) a task's `observation`, `reward` and `terminated` see an `mjx.Data`
of JAX arrays and must compute with `jax.numpy`; on MuJoCo's C engine (`chaosgym.faces.mujoco_backend`)
they see numpy arrays, and numpy computes them in a few microseconds where one jitted call costs
tens. A task written as

    def observation(self, data):
        xp = array_namespace(data)
        return xp.concatenate([data.qpos[2:], data.qvel])

runs as either. Use only what numpy and jax.numpy share, with the same meaning (`concatenate`,
`stack`, `where`, `maximum`, `sum`, `mean`, `cos`, ...). A task written with `jax.numpy` alone
still runs on the C engine, one JAX dispatch per operation (slower, not wrong).
"""

from __future__ import annotations

from types import ModuleType

import jax.numpy as jnp
import numpy as np


def array_namespace(data) -> ModuleType:
    """`numpy` where `data` (an `mjx.Data` or the C engine's host data) holds numpy arrays, else `jax.numpy`."""
    return np if isinstance(data.qpos, np.ndarray) else jnp
