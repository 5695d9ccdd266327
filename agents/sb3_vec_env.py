"""A Stable-Baselines3 `VecEnv` over a chaosgym task: every environment stepped in one MJX call.

It follows `DummyVecEnv` over `gymnasium.make(env_id, backend="mjx")` environments, the single env
on the same physics (its default backend, MuJoCo's C engine, agrees to float32 rounding):
environment i seeded with s (`seed(s)` seeds environment i with s + i) gives the same
observations, rewards, dones and infos, including `infos[i]["terminal_observation"]`,
`infos[i]["TimeLimit.truncated"]` and `reset_infos`, and a finished environment is reset within
the same `step` call. Resets match bit for bit; steps to float32 rounding: a batched and a single
MJX step may differ in the last bit (measured on the cart pole: 5e-7 in a velocity of 7), and the
chaotic dynamics (on the Ant also contacts) amplify it, so trajectories agree closely at first and
drift apart over an episode.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import chaosgym  # noqa: F401, I001  (first: it picks the headless GL backend before mujoco loads)
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from chaosgym.faces.boundary import (check_actions, check_batch_fits, check_num_envs, refuse_if_closed,
                                     refuse_if_forked_after_jax, spaces_of)
from chaosgym.faces.rendering import SceneRenderer
from chaosgym.faces.seeding import ResetSeeds, batch_key, episode_seed
from chaosgym.faces.vector import vector_functions
from chaosgym.registry import make


def _item_dicts(info: dict[str, np.ndarray], indices) -> list[dict[str, Any]]:
    """Per-environment info dicts of Python scalars, as `ChaosEnv` returns them."""
    return [{k: v[i].item() for k, v in info.items() if not k.startswith("_")} for i in indices]


class ChaosSB3VecEnv(VecEnv):
    """`num_envs` copies of a chaosgym task as one SB3 `VecEnv`, stepped by one jitted, vmapped call.

    The device calls are those of Gymnasium's vector env (`chaosgym.faces.vector.VectorFunctions`,
    in same-step autoreset mode): one per step, and one more per `chunk` of environments that
    finished there. `step_async` dispatches the step (JAX dispatch is asynchronous) and `step_wait`
    collects it. An environment never seeded draws its episodes on the device, as the vector env's
    do. The time limit is `episode_length` (SB3 has no wrapper of its own for it). The
    environments share one set of attributes (there are no per-environment Python objects):
    `get_attr` returns one entry per index from this object itself (e.g. `render_mode`, `spec`,
    `env` (the functional `chaosgym.Env`)), `env_method` calls this object's method once and
    repeats its result per index, `set_attr` changes the shared attribute and so must address
    every environment, and `env_is_wrapped` is always False. `get_state`/`set_state` carry the
    environments mid-episode to a twin (SB3 checkpoints, `chaosgym.agents.sb3.continuation`).
    A closed VecEnv refuses `reset` and `step` (`gymnasium.error.ClosedEnvironmentError`).
    """

    def __init__(self, env_id: str, num_envs: int = 1, episode_length: int | None = None,
                 render_mode: str | None = None, width: int = 480, height: int = 480, **task_kwargs):
        refuse_if_forked_after_jax()
        num_envs = check_num_envs(num_envs)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.env = make(env_id, episode_length=episode_length, **task_kwargs)
        check_batch_fits(self.env, num_envs)  # before anything of the batch is allocated
        self._scene = SceneRenderer(self.env.mj_model, width, height, self.env.task.render_camera)
        # the spec of one sub-environment: `gymnasium.make(vec_env.spec)` builds its single twin
        self.spec = dataclasses.replace(gymnasium.spec(env_id), max_episode_steps=self.env.episode_length,
                                        kwargs={"env_id": env_id, "backend": "mjx", **task_kwargs})
        self.render_mode = render_mode
        observation_space, action_space = spaces_of(self.env)
        super().__init__(num_envs, observation_space, action_space)
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.env.dt))}
        self._fns = vector_functions(self.env, self.num_envs)
        self._streams = ResetSeeds(self.num_envs)  # each environment's seed stream, as the vector env's
        self._key = jnp.asarray(batch_key(episode_seed(np.random.default_rng())))  # of the unseeded environments
        self._leaves = None  # the batched state, flattened (see `VectorFunctions`)
        self._pending = None
        self.closed = False

    def reset(self) -> np.ndarray:
        refuse_if_closed(self, "reset")
        self._streams.seed(self._seeds)  # those of `seed()`, or all None: every stream goes on
        # options are accepted for SB3's contract; chaosgym tasks take none
        self._reset_seeds()
        self._reset_options()
        episodes = np.zeros(self.num_envs, np.int32) if self._leaves is None else self._fns.episodes(self._leaves)
        self._leaves, outputs = self._fns.reset_all(episodes, self._streams, self._key)
        self._pending = None
        out = self._fns.unpack(np.asarray(outputs))
        self.reset_infos = _item_dicts(out.info, range(self.num_envs))
        return out.obs  # a fresh, writable array, as DummyVecEnv returns

    def step_async(self, actions: np.ndarray) -> None:
        refuse_if_closed(self, "step")
        if self._leaves is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        if self._pending is not None:
            raise RuntimeError("step_async() was called again before step_wait() collected the previous step")
        actions = check_actions(actions, (self.num_envs, *self.action_space.shape))
        self._leaves, self._pending = self._fns.step(self._leaves, actions)

    def step_wait(self) -> VecEnvStepReturn:
        refuse_if_closed(self, "step")
        if self._pending is None:
            raise RuntimeError("step_wait() needs a step_async(actions) before it (or call step(actions))")
        self._leaves, final, after, finished = self._fns.same_step(self._leaves, self._pending, self._streams,
                                                                   self._key)
        self._pending = None
        infos = _item_dicts(final.info, range(self.num_envs))
        for i, info in enumerate(infos):
            info["TimeLimit.truncated"] = bool(final.truncated[i] and not final.terminated[i])
        if after is None:
            return final.obs, final.reward.astype(np.float32), final.terminated | final.truncated, infos
        for i, reset_info in zip(finished, _item_dicts(after.info, finished)):
            infos[i]["terminal_observation"] = final.obs[i]
            self.reset_infos[i] = reset_info
        return after.obs, final.reward.astype(np.float32), final.terminated | final.truncated, infos

    def get_state(self) -> dict[str, Any]:
        """Everything the environments' continuation depends on, as picklable numpy data: the
        batched simulator state (mid-episode, step and episode counters included), each
        environment's seed stream with the seeds it drew ahead, the key of the unseeded ones, the
        pending `seed()` seeds and `reset_infos`.
        `set_state` on a twin (same task, options and `num_envs`) continues exactly from here."""
        if self._leaves is None:
            raise gymnasium.error.ResetNeeded("call reset() before get_state(): there is no state yet")
        if self._pending is not None:
            raise RuntimeError("get_state() between step_async() and step_wait(): collect the step first")
        return {"num_envs": self.num_envs,
                "leaves": [np.array(leaf) for leaf in jax.device_get(self._leaves)],
                "streams": self._streams.snapshot(),
                "key": np.array(self._key),
                "seeds": list(self._seeds),
                "reset_infos": copy.deepcopy(self.reset_infos)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a `get_state()` of a twin of this VecEnv; no reset is needed, nor done."""
        if not isinstance(state, dict) or state.keys() != {"num_envs", "leaves", "streams", "key", "seeds",
                                                           "reset_infos"}:
            raise ValueError("set_state expects a dict from ChaosSB3VecEnv.get_state()")
        if state["num_envs"] != self.num_envs:
            raise ValueError(f"the state is of {state['num_envs']} environments, this VecEnv has {self.num_envs}")
        expected = self._fns.leaf_specs
        found = [(np.shape(leaf), np.asarray(leaf).dtype) for leaf in state["leaves"]]
        if found != expected:
            raise ValueError(f"the state does not fit {self.spec.id} with these options (shapes and dtypes "
                             f"{found}, expected {expected})")
        self._streams.restore(state["streams"])
        self._key = jnp.asarray(state["key"], jnp.uint32)
        self._seeds, self.reset_infos = list(state["seeds"]), copy.deepcopy(state["reset_infos"])
        self._leaves, self._pending = [jnp.array(leaf) for leaf in state["leaves"]], None

    def close(self) -> None:
        self._scene.close()
        self.closed = True

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            gymnasium.logger.warn(f"render mode is {self.render_mode}; get_images needs 'rgb_array'")
            return [None] * self.num_envs
        if self._leaves is None:
            raise gymnasium.error.ResetNeeded("call reset() before render()")
        data = self._fns.state(self._leaves).data
        qpos, qvel = jax.device_get((data.qpos, data.qvel))
        return [self._scene.render(qpos[i], qvel[i]) for i in range(self.num_envs)]

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
