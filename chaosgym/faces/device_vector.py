"""A batched face for agents written in JAX or PyTorch: every array stays on the device.

    env = DeviceVectorEnv("ChaosAnt-v0", num_envs=4096)
    obs, info = env.reset(seed=0)
    for _ in range(1000):
        obs, reward, terminated, truncated, info = env.step(policy(obs))   # jax arrays throughout
    obs_t = env.as_torch(obs)                                              # a torch view, no copy

No numpy, no transfers and no host decisions: seeding and autoreset happen inside the jitted
programs, so the host only dispatches, and a learner's own jitted update can follow without
waiting. Each step runs `ChaosVectorEnv`'s very step program, then one that begins a new episode
in every environment that finished, in a loop on the device over `chunk`s of them (on a GPU, XLA
reads the loop's condition back once per iteration, microseconds that the Gymnasium vector env,
deciding on the host from flags it returns anyway, does not spend). The convention is Brax's,
Gymnasium's same-step autoreset: the
returned `obs` is the new episode's first observation there, `info["final_obs"]` the last one of
the episode that ended, and `reward`, `terminated`, `truncated` and the other info values those
of the step taken. Episode e of environment i starts from `fold_in(fold_in(key(seed), i), e)`
(`chaosgym.faces.seeding.episode_key`), the draws of `ChaosVectorEnv`'s unseeded environments:
for the same key the two give the same numbers bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from chaosgym.faces.boundary import (check_batch_fits, check_num_envs, refuse_episode_length,
                                     refuse_if_forked_after_jax, spaces_of)
from chaosgym.faces.seeding import batch_key
from chaosgym.faces.vector import vector_functions
from chaosgym.functional.env import check_episode_length
from chaosgym.functional.trace_cache import cached_jit
from chaosgym.registry import make
from chaosgym.validation import SEED


class VectorStep(NamedTuple):
    """What `DeviceVectorEnv.step` returns, one row per environment, as jax arrays."""

    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    info: dict[str, jax.Array]


class DeviceVectorEnv:
    """`num_envs` copies of a task whose `reset` and `step` take and return jax arrays (see the module).

    `max_episode_steps` is the time limit (the task's own by default); task options are keywords.
    `single_observation_space` and `single_action_space` are the Gymnasium spaces of one environment;
    actions are clipped to [-1, 1] on the device, and not checked otherwise (a NaN action gives
    a non-finite state, which ends that episode with `info["nonfinite_state"]`).
    """

    def __init__(self, env_id: str, num_envs: int, max_episode_steps: int | None = None, **task_kwargs):
        refuse_if_forked_after_jax()
        num_envs = check_num_envs(num_envs)
        refuse_episode_length(task_kwargs)
        check_episode_length(max_episode_steps, "max_episode_steps")
        self.env = make(env_id, episode_length=max_episode_steps, **task_kwargs)
        check_batch_fits(self.env, num_envs)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = spaces_of(self.env)
        self._fns = vector_functions(self.env, num_envs)
        self._autoreset = _autoreset(self._fns)
        self._leaves: list[jax.Array] | None = None
        self._key: jax.Array | None = None

    def reset(self, seed: int) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Begin an episode in every environment, from `seed` (a non-negative int): `(obs, info)`."""
        SEED("seed", seed)
        self._key = jnp.asarray(batch_key(int(seed)))
        n = self.num_envs
        self._leaves, outputs = self._fns.reset(jnp.zeros(n, jnp.int32), jnp.zeros(n, jnp.uint32), jnp.ones(n, bool),
                                                self._key)
        out = self._autoreset.split(outputs)
        return out.obs, out.info

    def step(self, actions: jax.Array) -> VectorStep:
        """One step of every environment under `actions` (`(num_envs, action_size)`), finished ones
        beginning a new episode (see the module)."""
        if self._leaves is None:
            raise RuntimeError("call reset(seed) before step()")
        actions = jnp.asarray(actions, jnp.float32)
        if actions.shape != (self.num_envs, self.env.action_size):
            raise ValueError(f"expected actions of shape {(self.num_envs, self.env.action_size)}, got {actions.shape}")
        self._leaves, outputs = self._fns.step(self._leaves, actions)
        self._leaves, step = self._autoreset(self._leaves, outputs, self._key)
        return step

    @staticmethod
    def as_torch(x: Any) -> Any:
        """`x` (a jax array, or a tuple, dict or `VectorStep` of them) as torch tensors on the same
        device, sharing its memory through DLPack (no copy). The arrays stay valid: the env never
        donates what it returned."""
        import torch

        return jax.tree.map(torch.from_dlpack, x)


class _Autoreset:
    """The second program of a `DeviceVectorEnv` step: `(leaves, outputs, key) -> (leaves, VectorStep)`,
    a new episode in every environment whose episode ended, `chunk` at a time in a loop on the
    device; and `split(outputs)`, a step's flat outputs as a `VectorStep` (for `reset`)."""

    def __init__(self, fns):
        self.fns = fns
        key = (fns.env.cache_key, "vector", fns.num_envs, fns.chunk)
        self._program = cached_jit(self._run, (key, "autoreset"), donate_argnums=(0,))
        self.split = cached_jit(self._split, (key, "split"))

    def __call__(self, leaves, outputs, key) -> tuple[list[jax.Array], VectorStep]:
        return self._program(leaves, outputs, key)

    def _split(self, outputs: jax.Array) -> VectorStep:
        """`VectorFunctions._pack`'s flat array as arrays: the inverse of packing, on the device."""
        fns, n = self.fns, self.fns.num_envs
        size = n * fns.env.observation_size
        runs = outputs[size:].reshape(-1, n)
        info = {k: runs[i].astype(dtype) for i, (k, dtype) in enumerate(fns.info_dtypes.items(), start=3)}
        return VectorStep(outputs[:size].reshape(n, -1), runs[0], runs[1] != 0, runs[2] != 0, info)

    def _run(self, leaves, outputs, key):
        fns = self.fns
        no_seeds, keyed = jnp.zeros(fns.chunk, jnp.uint32), jnp.ones(fns.chunk, bool)

        def reset_chunk(carry):
            leaves, after, remaining = carry
            (index,) = jnp.nonzero(remaining, size=fns.chunk, fill_value=fns.num_envs)
            leaves, after = fns.begin_episodes(leaves, after, index, no_seeds, keyed, key)
            return leaves, after, remaining.at[index].set(False, mode="drop")

        step = self._split(outputs)
        leaves, after, _ = jax.lax.while_loop(lambda carry: jnp.any(carry[2]), reset_chunk,
                                              (leaves, outputs, step.terminated | step.truncated))
        return leaves, step._replace(obs=self._split(after).obs, info={**step.info, "final_obs": step.obs})


# one per `VectorFunctions`, so per task, options and batch size, as the programs it runs
_autoreset = functools.cache(_Autoreset)
