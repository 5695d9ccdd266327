"""The device programs behind every batched face: Gymnasium's vector env, the SB3 `VecEnv` and
`DeviceVectorEnv`, built once per functional `Env` and batch size (`vector_functions`) and shared.

What a step costs beyond the physics is what this module keeps small, because on a GPU it is not
hidden behind the physics as it is on a CPU:

* A step is one program, `step`, and it resets nothing: a whole-batch reset and select would cost
  an MJX forward pass per environment on every step. The environments that finished are reset by
  a second program, `reset_at`, called only when some did, for `chunk` of them per call (the host
  knows which from the flags it has just returned); it writes their new episodes' rows into the
  step's outputs, so that the host still fetches one array.
* Between calls the state travels as a flat list of arrays, and its `data` as only the fields MJX
  steps from and the task reads (`Env.restored_fields`); the rest of `mjx.Data` is recomputed by
  every step. Flattening the whole `Data` in Python and passing its ~90 arrays in and out of every
  call cost the batched Ant 10-15% against a bare `mjx.step` loop.
* A step's outputs come back as one flat float32 array, one transfer, whose fields are contiguous
  runs (`VectorFunctions.unpack`): reading the columns of a 2-D array instead cost 0.4 ms per step
  on the host at 16,384 envs.
* Episode seeds come from the host only for environments given a seed (`chaosgym.faces.seeding`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from chaosgym.faces.seeding import ResetSeeds, batch_key, episode_key
from chaosgym.functional.env import Env, State
from chaosgym.functional.sharding import shard_batch
from chaosgym.functional.trace_cache import cached_jit


class Outputs(NamedTuple):
    """A batch's step results on the host, as Gymnasium's vector envs return them (info with masks)."""

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    info: dict[str, np.ndarray]


class VectorFunctions:
    """The jitted, vmapped programs of one `Env` at one batch size (see the module).

    The carried state is `(state, episodes)`: the `State` with its `data` cut to the carried
    fields (a dict), and each environment's count of episodes begun (an unseeded environment's
    next episode is drawn from it, `chaosgym.faces.seeding.episode_key`), as a flat list of leaves:

    * `reset(episodes, seeds, keyed, key) -> (leaves, outputs)`: every environment begins an episode.
    * `step(leaves, actions) -> (leaves, outputs)`: one control step of every environment, no reset.
    * `reset_at(leaves, outputs, index, seeds, keyed, key) -> (leaves, outputs)`: the environments
      at `index` (`chunk` ints; `num_envs` pads and is dropped) begin an episode, their rows of
      `outputs` replaced by the new episode's.
    * `observe(leaves) -> outputs`: the outputs of the carried state.

    `seeds` (uint32) and `keyed` (bool) say where each episode comes from, `key` is the batch's key
    data (`chaosgym.faces.seeding`); `outputs` is the flat float32 array `unpack` reads.
    `step` and `reset_at` donate the leaves they are given.
    """

    def __init__(self, env: Env, num_envs: int):
        self.env, self.num_envs = env, num_envs
        self.chunk = max(1, num_envs // 16)
        reset = jax.eval_shape(env.reset, jax.random.key(0))
        self.info_dtypes = {k: np.dtype(reset.info[k].dtype) for k in sorted(reset.info)}
        # what `full` fills the fields that are not carried with: `Env.empty_data`'s values in the
        # dtypes MJX's own steps give them (with jax_enable_x64 some of its integers turn int64)
        self._template = jax.tree.map(lambda x, like: np.asarray(x, like.dtype), env.empty_data, reset.data)
        per_env = lambda dtype: jax.ShapeDtypeStruct((num_envs,), dtype)  # noqa: E731
        key_data = jax.ShapeDtypeStruct(batch_key(0).shape, np.uint32)
        carry = jax.eval_shape(self._begin, per_env(np.int32), per_env(np.uint32), per_env(bool), key_data)
        self.treedef = jax.tree.structure(carry)
        self.leaf_specs = [(leaf.shape, np.dtype(leaf.dtype)) for leaf in jax.tree.leaves(carry)]
        key = (env.cache_key, "vector", num_envs, self.chunk)
        self.reset = cached_jit(self._reset, (key, "reset"))
        self.step = cached_jit(self._step, (key, "step"), donate_argnums=(0,))
        self.reset_at = cached_jit(self.begin_episodes, (key, "reset_at"), donate_argnums=(0,))
        self.observe = cached_jit(lambda leaves: self._pack(self._unflatten(leaves)[0]), (key, "observe"))

    # ---- the carried state -----------------------------------------------------------------------

    def carried(self, state: State) -> State:
        """`state` with only the carried fields in `data` (a dict)."""
        return state.replace(data={name: getattr(state.data, name) for name in self.env.restored_fields})

    def full(self, state: State) -> State:
        """A carried batch of states with a whole `mjx.Data`, the other fields from `Env.empty_data`."""
        template = jax.tree.map(lambda x: jnp.broadcast_to(x, (self.num_envs, *np.shape(x))), self._template)
        return state.replace(data=template.replace(**state.data))

    def state(self, leaves: list[jax.Array]) -> State:
        """The batched `State` the leaves hold (fields that are not carried are placeholders)."""
        return self.full(self._unflatten(leaves)[0])

    def leaves(self, state: State, like: list[jax.Array] | None) -> list[jax.Array]:
        """The leaves of `state`, with the episode counts of the leaves `like` (none begun without them)."""
        episodes = jnp.zeros(self.num_envs, jnp.int32) if like is None else self._unflatten(like)[1]
        return self._flat(self.carried(state), episodes)

    def episodes(self, leaves: list[jax.Array]) -> jax.Array:
        return self._unflatten(leaves)[1]

    def _unflatten(self, leaves) -> tuple[State, jax.Array]:
        return jax.tree.unflatten(self.treedef, leaves)

    @staticmethod
    def _flat(state: State, episodes: jax.Array) -> list[jax.Array]:
        return jax.tree.leaves(shard_batch((state, episodes)))  # spread over all devices (a no-op with one)

    # ---- the programs ----------------------------------------------------------------------------

    def _fresh(self, index, episodes, seeds, keyed, key) -> State:
        """New episodes of the environments at `index` (carried states)."""
        keys = jax.vmap(lambda *args: episode_key(key, *args))(index, episodes, seeds, keyed)
        return self.carried(jax.vmap(self.env.reset)(keys))

    def _begin(self, episodes, seeds, keyed, key) -> tuple[State, jax.Array]:
        """The carried state of a new episode in every environment."""
        return self._fresh(jnp.arange(self.num_envs), episodes, seeds, keyed, key), episodes + 1

    def _reset(self, episodes, seeds, keyed, key):
        state, episodes = self._begin(episodes, seeds, keyed, key)
        return self._flat(state, episodes), self._pack(state)

    def _step(self, leaves, actions):
        state, episodes = self._unflatten(leaves)
        state = self.carried(jax.vmap(self.env.step)(self.full(state), actions))
        return self._flat(state, episodes), self._pack(state)

    def begin_episodes(self, leaves, outputs, index, seeds, keyed, key):
        """`reset_at`, traced: the autoreset loop of `DeviceVectorEnv` runs it on the device too."""
        state, episodes = self._unflatten(leaves)
        safe = jnp.minimum(index, self.num_envs - 1)  # the padding computes a state that is dropped
        fresh = self._fresh(safe, episodes[safe], seeds, keyed, key)
        state = jax.tree.map(lambda old, new: old.at[index].set(new, mode="drop"), state, fresh)
        leaves = self._flat(state, episodes.at[index].add(1, mode="drop"))
        # `outputs` and `rows` as (environment, value) tables, the rows written in, packed again
        n, rows, size = self.num_envs, self._pack(fresh), self.chunk * self.env.observation_size
        obs = outputs[:n * self.env.observation_size].reshape(n, -1)
        obs = obs.at[index].set(rows[:size].reshape(self.chunk, -1), mode="drop")
        runs = outputs[obs.size:].reshape(-1, n).at[:, index].set(rows[size:].reshape(-1, self.chunk), mode="drop")
        return leaves, jnp.concatenate([obs.reshape(-1), runs.reshape(-1)])

    def _pack(self, state: State) -> jax.Array:
        """A batch's outputs as one flat float32 array: obs row-major, then reward, terminated,
        truncated and every info value, each a contiguous run of one value per environment.
        Booleans, float32 metrics and the step counts of an episode round-trip exactly."""
        # Gymnasium's TimeLimit truncates on the last step even when the episode also terminates there;
        # `Env.step` (as Brax does) then reports only the termination.
        truncated = state.truncated | (state.steps >= self.env.episode_length)
        runs = [state.reward, state.terminated, truncated, *(state.info[k] for k in self.info_dtypes)]
        return jnp.concatenate([state.obs.reshape(-1), *runs], dtype=jnp.float32)

    # ---- on the host -----------------------------------------------------------------------------

    def reset_all(self, episodes, streams: ResetSeeds, key) -> tuple[list, jax.Array]:
        """`reset` of every environment, with the seeds of `streams`."""
        return self.reset(episodes, *streams.take(np.arange(self.num_envs)), key)

    def reset_indices(self, leaves, outputs, indices: np.ndarray, streams: ResetSeeds, key) -> tuple[list, jax.Array]:
        """Begin an episode in the environments at `indices`, `chunk` at a time (`reset_at`): the new
        leaves and `outputs` with their rows replaced, both on the device."""
        for start in range(0, len(indices), self.chunk):
            part = indices[start:start + self.chunk]
            index = np.full(self.chunk, self.num_envs, np.int32)
            seeds, keyed = np.zeros(self.chunk, np.uint32), np.ones(self.chunk, bool)
            index[:len(part)] = part
            seeds[:len(part)], keyed[:len(part)] = streams.take(part)
            leaves, outputs = self.reset_at(leaves, outputs, index, seeds, keyed, key)
        return leaves, outputs

    def unpack(self, outputs: np.ndarray) -> Outputs:
        """`_pack`'s array as fresh, writable numpy arrays."""
        n = self.num_envs
        size = n * self.env.observation_size
        obs = outputs[:size].reshape(n, -1).copy()
        run = lambda i: outputs[size + i * n:size + (i + 1) * n]  # noqa: E731
        every = np.ones(n, bool)
        info = {}
        for i, (k, dtype) in enumerate(self.info_dtypes.items(), start=3):
            info[k], info["_" + k] = run(i).astype(dtype), every
        return Outputs(obs, run(0).astype(np.float64), run(1) != 0, run(2) != 0, info)

    def same_step(self, leaves, outputs: jax.Array, streams: ResetSeeds, key):
        """Gymnasium's same-step autoreset after `step`: `(leaves, final, after, finished)`, `final` the
        step's `outputs` on the host, `finished` the indices of the environments whose episode ended
        there, each of which begins a new one, and `after` the outputs with their rows replaced by
        their new episode's (None when none finished)."""
        final = self.unpack(np.asarray(outputs))
        finished = np.flatnonzero(final.terminated | final.truncated)
        if not finished.size:
            return leaves, final, None, finished
        leaves, after = self.reset_indices(leaves, outputs, finished, streams, key)
        return leaves, final, self.unpack(np.asarray(after)), finished


vector_functions = functools.cache(VectorFunctions)
