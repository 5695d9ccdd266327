"""The device programs behind the batched faces: a step is one program that resets nothing and
accesses no more memory than a bare vmapped `mjx.step`; finished episodes cost calls only when they end."""

import jax
import numpy as np

from chaosgym.faces.seeding import ResetSeeds, batch_key
from chaosgym.faces.vector import vector_functions

CARTPOLE = "ChaosCartPole-v0"


def bytes_accessed(compiled) -> float:
    analysis = compiled.cost_analysis()
    return (analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["bytes accessed"]


def test_a_step_accesses_no_more_memory_than_a_bare_vmapped_mjx_step(cartpole):
    """XLA's cost analysis, what predicted the gap on a GPU (where a step selected the whole state to reset)."""
    fns = vector_functions(cartpole, 3)
    leaves, _ = fns.reset_all(np.zeros(3, np.int32), ResetSeeds(3), batch_key(0))
    actions = jax.ShapeDtypeStruct((3, cartpole.action_size), np.float32)
    ours = bytes_accessed(fns.step.lower(leaves, actions).compile())
    data = jax.vmap(cartpole.reset)(jax.random.split(jax.random.key(0), 3)).data
    bare = bytes_accessed(jax.jit(jax.vmap(cartpole.physics_step)).lower(data, actions).compile())
    assert ours <= 1.1 * bare, (ours, bare)


def test_resets_cost_calls_only_on_the_step_after_episodes_end(make_vector_env, monkeypatch):
    env = make_vector_env(CARTPOLE, 3)
    fns = env.unwrapped._fns
    calls, reset_at = [], fns.reset_at
    monkeypatch.setattr(fns, "reset_at", lambda *args: calls.append(args) or reset_at(*args))
    env.reset(seed=0)
    for t in range(1, 102):
        env.step(np.zeros((3, 1), np.float32))
        assert len(calls) == (0 if t <= 100 else 3), t  # all three at step 101, `chunk` (1) per call
