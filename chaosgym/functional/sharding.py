"""Spread batches over every JAX device: a 1-D mesh on the batch (or population) axis.

`shard_batch(tree)` splits the leading axis of every leaf over all devices, inside `jit` (a
sharding constraint: XLA runs each device's part there and inserts the reductions across devices)
or outside (a placement, for arrays handed to a jitted function). With one device it changes nothing, so callers use it
unconditionally. A batch whose size is not a multiple of the device count is replicated instead:
every device then computes the whole batch, which gives the same results without the speed-up
(pad the batch to a multiple of `jax.device_count()` to get it back).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


@functools.cache
def _mesh(devices: tuple) -> Mesh:
    return Mesh(np.array(devices), (AXIS,))


def uncommitted(tree):
    """`tree`'s arrays as uncommitted copies: they go wherever a computation using them runs.

    For what every part of a sharded batch reads, like the MJX model (which `mjx.put_model` pins
    to the default device): one computation must have all its committed arrays on the same
    devices, and a sharded batch is on all of them.
    """
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x)) if isinstance(x, jax.Array) else x, tree)


def batch_sharding(size: int) -> NamedSharding | None:
    """How to lay out a leading axis of `size` over the devices; None with one device."""
    devices = tuple(jax.devices())
    if len(devices) == 1:
        return None
    split = size % len(devices) == 0
    return NamedSharding(_mesh(devices), PartitionSpec(AXIS) if split else PartitionSpec())


def replicated(tree):
    """`tree` committed whole to every device, where a jitted computation over sharded batches puts
    its unbatched outputs (parameters, optimiser state). Arrays placed so from the start make the
    same jit program as those outputs: uncommitted ones would compile a second one."""
    devices = tuple(jax.devices())
    sharding = devices[0] if len(devices) == 1 else NamedSharding(_mesh(devices), PartitionSpec())
    return jax.device_put(tree, sharding)


def shard_batch(tree):
    """`tree` with the leading axis of every leaf (all of one size) split over the devices."""
    leaves = jax.tree.leaves(tree)
    sharding = batch_sharding(leaves[0].shape[0]) if leaves else None
    return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)
