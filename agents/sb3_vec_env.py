"""A Stable-Baselines3 `VecEnv` over a chaosgym task: every environment stepped in one MJX call.

It follows `DummyVecEnv` over `gymnasium.make(env_id, backend="mjx")` environments, the single env
on the same physics (its default backend, MuJoCo's C engine, agrees to float32 rounding):
environment i seeded with s (`seed(s)` seeds environment i with s + i) gives the same
observations, rewards, dones and infos, including `infos[i]["terminal_observation"]`,
`infos[i]["TimeLimit.truncated"]` and `reset_infos`, and a finished environment is reset within
the same `step` call. The smooth tasks match bit for
bit; on the Ant, contacts amplify the last-bit differences between a batched and a single MJX
step, so trajectories agree closely at first and drift apart over an episode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import chaosgym  # noqa: F401, I001  (first: it picks the headless GL backend before mujoco loads)
import gymnasium
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from gymnasium.utils.seeding import np_random
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from chaosgym.gym_adapters import _seed_to_key, _spaces, _where, check_actions
from chaosgym.registry import make


class _Packer:
    """Packs a pytree of `(num_envs, ...)` arrays into one `(num_envs, k)` array and back.

    Every device-to-host transfer costs tens of microseconds however small the array, so a step's
    outputs travel as a single array instead of one per observation, reward, flag and info entry.
    """

    def __init__(self, example):
        leaves, self.treedef = jax.tree.flatten(example)
        self.shapes = [leaf.shape[1:] for leaf in leaves]
        self.dtypes = [np.dtype(leaf.dtype) for leaf in leaves]
        self.dtype = jnp.result_type(*self.dtypes)
        widths = [int(np.prod(shape)) for shape in self.shapes]
        self.bounds = np.cumsum([0, *widths])

    def pack(self, tree) -> jax.Array:
        leaves = jax.tree.leaves(tree)
        return jnp.concatenate([leaf.reshape(leaf.shape[0], -1).astype(self.dtype) for leaf in leaves], axis=1)

    def unpack(self, packed: np.ndarray):
        n = packed.shape[0]
        leaves = [packed[:, lo:hi].reshape(n, *shape).astype(dtype)
                  for lo, hi, shape, dtype in zip(self.bounds[:-1], self.bounds[1:], self.shapes, self.dtypes)]
        return jax.tree.unflatten(self.treedef, leaves)


def _item_dicts(info: dict[str, np.ndarray], indices) -> list[dict[str, Any]]:
    """Per-environment info dicts of Python scalars, as `ChaosEnv` returns them."""
    return [{k: v[i].item() for k, v in info.items()} for i in indices]


class ChaosSB3VecEnv(VecEnv):
    """`num_envs` copies of a chaosgym task as one SB3 `VecEnv`, stepped by one jitted, vmapped call.

    `step_async` dispatches the device call (JAX dispatch is asynchronous) and `step_wait` collects
    it. The environments share one set of attributes (there are no per-environment Python
    objects): `get_attr` returns one entry per index from this object itself (e.g. `render_mode`,
    `spec`, `env` (the functional `chaosgym.Env`)), `env_method` calls this object's method once
    and repeats its result per index, `set_attr` changes the shared attribute and so must address
    every environment, and `env_is_wrapped` is always False.
    """

    def __init__(self, env_id: str, num_envs: int = 1, episode_length: int | None = None,
                 render_mode: str | None = None, width: int = 480, height: int = 480, **task_kwargs):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.env = make(env_id, episode_length=episode_length, **task_kwargs)
        # the spec of one sub-environment: `gymnasium.make(vec_env.spec)` builds its single twin
        self.spec = dataclasses.replace(gymnasium.spec(env_id), max_episode_steps=self.env.episode_length,
                                        kwargs={"env_id": env_id, "backend": "mjx", **task_kwargs})
        self.render_mode = render_mode
        observation_space, action_space = _spaces(self.env)
        super().__init__(int(num_envs), observation_space, action_space)
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.env.dt))}

        def reset(seeds):
            return jax.vmap(self.env.reset)(jax.vmap(jax.random.key)(seeds))

        initial = jax.eval_shape(reset, jax.ShapeDtypeStruct((self.num_envs,), jnp.uint32))
        self._packer = _Packer(self._outputs(initial, initial))
        self._info_packer = _Packer(initial.info)

        # the state travels as a flat list of arrays: flattening MJX's `Data` pytree in Python on
        # every call costs about a tenth of an Ant step
        treedef = jax.tree.structure(initial)

        def step(leaves, actions, reset_seeds):
            state = jax.tree.unflatten(treedef, leaves)
            stepped = jax.vmap(self.env.step)(state, actions)
            done = stepped.terminated | stepped.truncated
            # the reset runs only on steps where some episode ended (a cond outside the vmap)
            state = jax.lax.cond(jnp.any(done),
                                 lambda: _where(done, reset(reset_seeds), stepped),
                                 lambda: stepped)
            return jax.tree.leaves(state), self._packer.pack(self._outputs(stepped, state))

        def reset_with_info(seeds):
            state = reset(seeds)
            return jax.tree.leaves(state), state.obs, self._info_packer.pack(state.info)

        self._reset = jax.jit(reset_with_info)
        self._step = jax.jit(step, donate_argnums=0)
        self._rngs = [np_random()[0] for _ in range(self.num_envs)]
        # the seed of each environment's next reset, drawn ahead so a step can reset at once
        self._next_seeds = np.zeros(self.num_envs, np.uint32)
        self._draw_next_seeds(range(self.num_envs))
        self._treedef = treedef
        self._state = None  # the leaves of the batched `State`
        self._pending = None
        self._size = (height, width)
        self._renderer: mujoco.Renderer | None = None

    @staticmethod
    def _outputs(stepped, state) -> dict:
        return {"obs": state.obs, "terminal_obs": stepped.obs, "reward": stepped.reward,
                "terminated": stepped.terminated, "truncated": stepped.truncated,
                "info": stepped.info, "reset_info": state.info}

    def _draw_next_seeds(self, indices) -> None:
        # a fresh array, never an in-place write: JAX on CPU may still be reading the old one,
        # which a dispatched (asynchronous) call can alias instead of copying
        seeds = self._next_seeds.copy()
        for i in indices:
            seeds[i] = _seed_to_key(self._rngs[i])
        self._next_seeds = seeds

    def reset(self) -> np.ndarray:
        for i, seed in enumerate(self._seeds):
            if seed is not None:
                self._rngs[i] = np_random(seed)[0]
                self._draw_next_seeds([i])
        # options are accepted for SB3's contract; chaosgym tasks take none
        self._reset_seeds()
        self._reset_options()
        self._state, obs, info = self._reset(self._next_seeds)
        self._draw_next_seeds(range(self.num_envs))
        self._pending = None
        obs, info = jax.device_get((obs, info))
        self.reset_infos = _item_dicts(self._info_packer.unpack(info), range(self.num_envs))
        return np.array(obs, np.float32)  # a writable copy, as DummyVecEnv returns

    def step_async(self, actions: np.ndarray) -> None:
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        actions = check_actions(actions, (self.num_envs, *self.action_space.shape))
        self._state, self._pending = self._step(self._state, actions, self._next_seeds)

    def step_wait(self) -> VecEnvStepReturn:
        out = self._packer.unpack(np.asarray(self._pending))
        self._pending = None
        terminated, truncated = out["terminated"], out["truncated"]
        dones = terminated | truncated
        infos = _item_dicts(out["info"], range(self.num_envs))
        for i, info in enumerate(infos):
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        finished = np.flatnonzero(dones)
        for i, reset_info in zip(finished, _item_dicts(out["reset_info"], finished)):
            infos[i]["terminal_observation"] = out["terminal_obs"][i].astype(np.float32)
            self.reset_infos[i] = reset_info
        self._draw_next_seeds(finished)
        return out["obs"].astype(np.float32, copy=False), out["reward"].astype(np.float32, copy=False), dones, infos

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            gymnasium.logger.warn(f"render mode is {self.render_mode}; get_images needs 'rgb_array'")
            return [None] * self.num_envs
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before render()")
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.env.mj_model, *self._size)
            self._mj_data = mujoco.MjData(self.env.mj_model)
        data = jax.tree.unflatten(self._treedef, self._state).data
        qpos, qvel = jax.device_get((data.qpos, data.qvel))
        images = []
        for i in range(self.num_envs):
            self._mj_data.qpos[:], self._mj_data.qvel[:] = qpos[i], qvel[i]
            mujoco.mj_forward(self.env.mj_model, self._mj_data)
            self._renderer.update_scene(self._mj_data, camera=self.env.task.render_camera)
            images.append(self._renderer.render())
        return images

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError("the environments of a batched chaosgym VecEnv share their attributes; "
                             "set_attr must address all of them (indices=None)")
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gymnasium.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
