"""Gymnasium faces of a functional environment: one `gymnasium.Env` and one batched `VectorEnv`.

They convert to numpy at the boundary, validate actions, and add no physics of their own.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.utils.seeding import np_random
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from chaosgym.env import Env, State
from chaosgym.registry import make


def check_actions(actions: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Validate an action (or a batch) and clip it to [-1, 1]; raise `ValueError` otherwise."""
    array = np.asarray(actions)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"expected a real-valued action array of shape {shape} (float32), got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"expected action shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"action contains NaN or inf: {array}; nothing was stepped")
    return np.clip(array, -1.0, 1.0).astype(np.float32)


def _seed_to_key(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _spaces(env: Env) -> tuple[spaces.Box, spaces.Box]:
    observation = spaces.Box(-np.inf, np.inf, (env.observation_size,), np.float32)
    action = spaces.Box(-1.0, 1.0, (env.action_size,), np.float32)
    return observation, action


def _info(info: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: v.item() for k, v in info.items()}


class ChaosEnv(gymnasium.Env):
    """A chaosgym task as a single Gymnasium environment, stepped by the jitted MJX `step`.

    Out-of-range actions are clipped to [-1, 1]; actions of the wrong shape or dtype, or with NaN or
    inf, raise `ValueError` and step nothing. The time limit is Gymnasium's `TimeLimit` wrapper
    (added by `gymnasium.make` from the registered `max_episode_steps`).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, env_id: str, render_mode: str | None = None, width: int = 480,
                 height: int = 480, **task_kwargs):
        self.env = make(env_id, **task_kwargs)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.env.dt))}
        self.observation_space, self.action_space = _spaces(self.env)
        self._size = (height, width)
        self._state: State | None = None
        self._renderer: mujoco.Renderer | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = self.env.jit_reset(jax.random.key(_seed_to_key(self.np_random)))
        obs, info = jax.device_get((self._state.obs, self._state.info))
        return np.asarray(obs, np.float32), _info(info)

    def step(self, action):
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        action = check_actions(action, self.action_space.shape)
        self._state = self.env.jit_step(self._state, action)
        s = self._state
        obs, reward, terminated, info = jax.device_get((s.obs, s.reward, s.terminated, s.info))
        return np.asarray(obs, np.float32), float(reward), bool(terminated), False, _info(info)

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without render_mode='rgb_array'")
            return None
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before render()")
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.env.mj_model, *self._size)
            self._mj_data = mujoco.MjData(self.env.mj_model)
        self._mj_data.qpos[:], self._mj_data.qvel[:] = jax.device_get((self._state.data.qpos, self._state.data.qvel))
        mujoco.mj_forward(self.env.mj_model, self._mj_data)
        self._renderer.update_scene(self._mj_data, camera=self.env.task.render_camera)
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _where(mask: jax.Array, new, old):
    """Per-environment select over a batched pytree."""
    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)
    return jax.tree.map(pick, new, old)


class ChaosVectorEnv(gymnasium.vector.VectorEnv):
    """`num_envs` copies of a task stepped in one jitted, vmapped MJX call.

    Sub-environment i seeded with s follows exactly the trajectory of `ChaosEnv` seeded with s.
    Autoreset follows Gymnasium 1.x: `next_step` (default) resets a finished environment on the
    following `step` call, ignoring its action and returning reward 0; `same_step` resets it at
    once and puts the last observation in `info["final_obs"]` (and its info in
    `info["final_info"]`); `disabled` leaves resets to `reset(options={"reset_mask": mask})`.
    """

    def __init__(self, env_id: str, num_envs: int = 1, max_episode_steps: int | None = None,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, **task_kwargs):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.env = make(env_id, episode_length=max_episode_steps, **task_kwargs)
        self.num_envs = int(num_envs)
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": []}
        self.single_observation_space, self.single_action_space = _spaces(self.env)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._step = jax.jit(jax.vmap(self.env.step), donate_argnums=0)
        self._reset = jax.jit(jax.vmap(self.env.reset))
        self._reset_where = jax.jit(lambda state, keys, mask: _where(mask, jax.vmap(self.env.reset)(keys), state),
                                    donate_argnums=0)
        self._rngs = [np_random()[0] for _ in range(self.num_envs)]
        self._state: State | None = None
        self._needs_reset = np.zeros(self.num_envs, bool)

    def _keys(self, mask: np.ndarray) -> jax.Array:
        seeds = np.array([_seed_to_key(rng) if m else 0 for rng, m in zip(self._rngs, mask)], np.uint32)
        return jax.vmap(jax.random.key)(seeds)

    def _infos(self, info: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        every = np.ones(self.num_envs, bool)
        out = {}
        for k, v in info.items():
            out[k], out["_" + k] = v, every
        return out

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if isinstance(seed, (int, np.integer)):
            seed = [int(seed) + i for i in range(self.num_envs)]
        if seed is not None:
            if len(seed) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seed)}")
            self._rngs = [np_random(s)[0] for s in seed]
        mask = (options or {}).get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},)")
        if mask is None or self._state is None:
            mask = np.ones(self.num_envs, bool)
            self._state = self._reset(self._keys(mask))
        else:
            self._state = self._reset_where(self._state, self._keys(mask), jnp.asarray(mask))
        self._needs_reset &= ~mask
        obs, info = jax.device_get((self._state.obs, self._state.info))
        return np.asarray(obs, np.float32), self._infos(info)

    def step(self, actions):
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        actions = check_actions(actions, self.action_space.shape)
        self._state = self._step(self._state, actions)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._needs_reset.any():
            self._state = self._reset_where(self._state, self._keys(self._needs_reset),
                                            jnp.asarray(self._needs_reset))
        s = self._state
        obs, reward, terminated, truncated, info = jax.device_get(
            (s.obs, s.reward, s.terminated, s.truncated, s.info))
        obs = np.asarray(obs, np.float32)
        infos = self._infos(info)
        done = terminated | truncated
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = obs[i]
            final_info = {k: (v & done if k.startswith("_") else v) for k, v in infos.items()}
            self._state = self._reset_where(s, self._keys(done), jnp.asarray(done))
            obs, info = jax.device_get((self._state.obs, self._state.info))
            obs = np.asarray(obs, np.float32)
            infos = {**self._infos(info), "final_obs": final_obs, "_final_obs": done,
                     "final_info": final_info, "_final_info": done}
        self._needs_reset = done
        return obs, np.asarray(reward, np.float64), terminated, truncated, infos
