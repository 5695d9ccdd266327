"""Gymnasium faces of a functional environment: one `gymnasium.Env` (`ChaosEnv`) and one batched
`VectorEnv` (`ChaosVectorEnv`), the entry points `chaosgym.register` gives Gymnasium.

They convert to numpy at the boundary, validate their inputs (`chaosgym.faces.boundary`), and add no
physics of their own; the batched one runs the device programs of `chaosgym.faces.vector`.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from chaosgym.faces.boundary import (check_actions, check_batch_fits, check_num_envs, check_reset_options,
                                     parse_autoreset_mode, refuse_episode_length, refuse_if_closed,
                                     refuse_if_forked_after_jax, spaces_of)
from chaosgym.faces.mujoco_backend import MujocoBackend, set_simulation
from chaosgym.faces.rendering import HumanViewer, SceneRenderer, display_available
from chaosgym.faces.seeding import ResetSeeds, batch_key, episode_seed, vector_seeds
from chaosgym.faces.vector import vector_functions
from chaosgym.functional.env import State, check_episode_length
from chaosgym.registry import make
from chaosgym.validation import one_of


def _info(info: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: v.item() for k, v in info.items()}


DEFAULT_BACKEND = "mujoco"  # of the single env; why: ChaosEnv


class ChaosEnv(gymnasium.Env):
    """A chaosgym task as a single Gymnasium environment, on MuJoCo's C engine or on MJX.

    `backend="mujoco"` (the default) steps the physics on MuJoCo's C engine (float64), `"mjx"` with
    the jitted MJX `Env.step` (float32). Both run the same MJCF with the same options, start from
    the same state for the same seed and compute observation, reward and termination with the
    task's own functions (`chaosgym.faces.mujoco_backend`). They agree to float32 rounding (about 1e-6)
    at first; on these chaotic tasks the difference then grows about as fast as the maximal
    Lyapunov exponent says, and on the Ant contacts add more (MJX orients the pyramidal friction
    cone differently from the C engine), see docs/benchmarks.md.

    The C engine is the default because a single environment steps about ten times faster on it
    (the Ant faster than Gymnasium's `Ant-v5`; on MJX several times slower), which is what a
    Gymnasium user stepping one environment wants. Pass `backend="mjx"` to follow the batched and
    differentiable faces: an "mjx" single env seeded with s gives the trajectory of a
    `ChaosVectorEnv` sub-environment seeded with s: the same resets bit for bit, the same steps to
    float32 rounding (XLA's batched program may round a value differently in the last bit, which
    these chaotic tasks then amplify over an episode).

    As Gymnasium's MuJoCo envs, the env has `dt` (seconds per step), `model` (MuJoCo's `MjModel`)
    and `data` (an `MjData`: the simulation itself on the C engine; on MJX a copy set from the
    state at each access) and renders `"rgb_array"` frames or, where a display exists, `"human"`
    through MuJoCo's viewer window (the instance's `metadata["render_modes"]` lists what works here).

    Out-of-range actions are clipped to [-1, 1]; actions of the wrong shape or dtype, or with NaN or
    inf, raise `ValueError` and step nothing. A non-finite state undoes the step and terminates the
    episode with `info["nonfinite_state"]`, on both backends. The time limit is Gymnasium's
    `TimeLimit` wrapper (added by `gymnasium.make` from the registered `max_episode_steps`, or
    the one passed to it); chaosgym's `episode_length` is refused here.

    An env deep-copies, pickles and cloudpickles (SB3's `SubprocVecEnv` sends it so), mid-episode
    too: the copy is rebuilt from its arguments with its seed stream and simulation state, and steps
    on as the original would. A closed env refuses `step`, `reset` and `render`. An env cannot be
    built in a process forked after JAX started (Gymnasium's `AsyncVectorEnv` with its default
    start method on Linux): it would hang at its first JAX call, so it is refused, naming the fix.
    """

    # what the class can render, for `gymnasium.make` (it hands "human" to a class listing it);
    # each instance lists what works where it runs
    metadata = {"render_modes": ["human", "rgb_array"]}
    # rebuilt from the arguments, not pickled: they hold device handles, jitted functions, GL and windows
    _REBUILT = ("env", "_scene", "_viewer", "_engine", "_state", "_mjdata")

    def __init__(self, env_id: str, render_mode: str | None = None, width: int = 480,
                 height: int = 480, backend: str = DEFAULT_BACKEND, **task_kwargs):
        refuse_if_forked_after_jax()
        refuse_episode_length(task_kwargs)
        self._args = {"env_id": env_id, "render_mode": render_mode, "width": width, "height": height,
                      "backend": backend, **task_kwargs}
        one_of("mujoco", "mjx")("backend", backend)
        one_of(None, *self.metadata["render_modes"])("render_mode", render_mode)
        self.env = make(env_id, **task_kwargs)
        if backend == "mujoco" and self.env.task.physics_override is not None:
            raise ValueError(f"physics={self.env.task.physics_override!r} integrates its own equations on MJX; "
                             "MuJoCo's C engine would step MuJoCo's physics instead: pass backend='mjx'")
        self._scene = SceneRenderer(self.env.mj_model, width, height, self.env.task.render_camera)
        fps = 1.0 / self.env.dt
        self._viewer = HumanViewer(self.env.mj_model, fps) if render_mode == "human" else None
        # the C engine keeps its state in its own MjData; the MJX path keeps it in `_state`
        self._engine = MujocoBackend(self.env) if backend == "mujoco" else None
        self.render_mode = render_mode
        self.metadata = {"render_modes": ["human", "rgb_array"] if display_available() else ["rgb_array"],
                         "render_fps": int(round(fps))}
        self.observation_space, self.action_space = spaces_of(self.env)
        self._state: State | None = None
        self._mjdata: mujoco.MjData | None = None  # the MJX path's `data`
        self._needs_reset = True
        self.closed = False  # as a Gymnasium VectorEnv says it

    def __getstate__(self) -> dict:
        """What `pickle`, `copy.deepcopy` and SB3's subprocesses carry: the arguments, the seed
        generator and the simulation's state; `__setstate__` rebuilds the rest, so a copy steps on
        exactly as the original would."""
        state = {k: v for k, v in vars(self).items() if k not in self._REBUILT}
        if not self._needs_reset:
            state["_simulation"] = self._engine.snapshot() if self._engine is not None else jax.device_get(self._state)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        simulation = state.pop("_simulation", None)
        self.__init__(**state["_args"])
        vars(self).update(state)
        if simulation is not None:
            if self._engine is not None:
                self._engine.restore(simulation)
            else:
                self._state = jax.device_put(simulation)

    @property
    def dt(self) -> float:
        """Seconds of simulated time per step: the model's timestep times the frame skip."""
        return self.env.dt

    @property
    def model(self) -> mujoco.MjModel:
        """MuJoCo's model of the task, the very one both backends run."""
        return self.env.mj_model

    @property
    def data(self) -> mujoco.MjData:
        """MuJoCo's `MjData` of the current state. On the C engine the simulation's own, as in
        Gymnasium's MuJoCo envs; on MJX one `MjData` set from the state's time, qpos, qvel, act and
        ctrl at each access (`mj_forward` computes the rest): writing to it changes nothing, set
        `state` for that."""
        if self._engine is not None:
            return self._engine.data
        if self._mjdata is None:
            self._mjdata = mujoco.MjData(self.env.mj_model)
        if self._state is not None:
            set_simulation(self.env.mj_model, self._mjdata, self._state.data)
        return self._mjdata

    @property
    def state(self) -> State | None:
        """The current functional `State` (None before the first reset).

        On MJX the state itself; on the C engine one built from its `MjData` (the fields the task
        reads there, `mujoco_backend.FIELDS`, in MJX's precision; the other fields are placeholders).
        Setting it sets the simulation (on the C engine its time, qpos, qvel, act and ctrl).
        """
        if self._needs_reset:
            return None
        return self._engine.state if self._engine is not None else self._state

    @state.setter
    def state(self, state: State) -> None:
        if self._needs_reset:
            raise gymnasium.error.ResetNeeded("call reset() before setting the state")
        if self._engine is not None:
            self._engine.state = state
        else:
            self._state = state

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        refuse_if_closed(self, "reset")
        check_reset_options(options, accepted=())
        super().reset(seed=seed)
        seed_of_episode = episode_seed(self.np_random)
        self._needs_reset = False
        if self._engine is not None:
            result = self._engine.reset(seed_of_episode, self._upcoming_seeds)
        else:
            self._state = self.env.jit_reset(jax.random.key(seed_of_episode))
            obs, info = jax.device_get((self._state.obs, self._state.info))
            result = np.asarray(obs, np.float32), _info(info)
        if self.render_mode == "human":
            self.render()
        return result

    def _upcoming_seeds(self, n: int) -> list[int]:
        """The seeds the next `n` resets draw, unless something else draws from `np_random` first."""
        rng = copy.deepcopy(self.np_random)
        return [episode_seed(rng) for _ in range(n)]

    def step(self, action):
        refuse_if_closed(self, "step")
        if self._needs_reset:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        action = check_actions(action, self.action_space.shape)
        if self._engine is not None:
            obs, reward, terminated, info = self._engine.step(action)
            result = obs, reward, terminated, False, info
        else:
            self._state = self.env.jit_step(self._state, action)
            s = self._state
            obs, reward, terminated, info = jax.device_get((s.obs, s.reward, s.terminated, s.info))
            result = np.asarray(obs, np.float32), float(reward), bool(terminated), False, _info(info)
        if self.render_mode == "human":
            self.render()
        return result

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode ('rgb_array' or 'human')")
            return None
        refuse_if_closed(self, "render")
        if self._needs_reset:
            raise gymnasium.error.ResetNeeded("call reset() before render()")
        if self._viewer is not None:
            return self._viewer.show(self.data)
        if self._engine is not None:
            qpos, qvel = self._engine.data.qpos, self._engine.data.qvel
        else:
            qpos, qvel = jax.device_get((self._state.data.qpos, self._state.data.qvel))
        return self._scene.render(qpos, qvel)

    def close(self):
        self._scene.close()
        if self._viewer is not None:
            self._viewer.close()
        self.closed = True


class ChaosVectorEnv(gymnasium.vector.VectorEnv):
    """`num_envs` copies of a task stepped in one jitted, vmapped MJX call.

    Sub-environment i seeded with s follows the trajectory of `ChaosEnv(backend="mjx")` seeded with s
    (resets bit for bit, steps to float32 rounding, see `ChaosEnv`). A sub-environment never seeded
    draws its episodes on the device from a key the env draws once from its `np_random`
    (`chaosgym.faces.seeding`); `DeviceVectorEnv.reset(seed=k)` uses the same draws for that key.
    Autoreset follows Gymnasium 1.x: `next_step` (default) resets a finished environment on the
    following `step` call, ignoring its action and returning reward 0; `same_step` resets it at
    once and puts the last observation in `info["final_obs"]` (and its info in
    `info["final_info"]`); `disabled` leaves resets to `reset(options={"reset_mask": mask})`.
    The time limit is `max_episode_steps` (Gymnasium's keyword; chaosgym's `episode_length` is refused).
    A `num_envs` whose state would not fit in memory is refused before anything is allocated
    (`check_batch_fits`); copies, pickles and closing behave as `ChaosEnv`'s.
    """

    _REBUILT = ("env", "_fns", "_leaves")  # see ChaosEnv

    def __init__(self, env_id: str, num_envs: int = 1, max_episode_steps: int | None = None,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, **task_kwargs):
        refuse_if_forked_after_jax()
        num_envs = check_num_envs(num_envs)
        refuse_episode_length(task_kwargs)
        check_episode_length(max_episode_steps, "max_episode_steps")
        self._args = {"env_id": env_id, "num_envs": num_envs, "max_episode_steps": max_episode_steps,
                      "autoreset_mode": autoreset_mode, **task_kwargs}
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.env = make(env_id, episode_length=max_episode_steps, **task_kwargs)
        check_batch_fits(self.env, num_envs)
        self.num_envs = num_envs
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": []}
        self.single_observation_space, self.single_action_space = spaces_of(self.env)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._fns = vector_functions(self.env, self.num_envs)
        self._seeds = ResetSeeds(self.num_envs)
        self._key: jax.Array | None = None  # of the unseeded environments, drawn at the first reset
        self._leaves: list[jax.Array] | None = None  # the batched state, flattened (see VectorFunctions)
        self._finished = np.zeros(0, np.int64)  # environments whose episode ended at the last step

    def __getstate__(self) -> dict:
        """Pickled and deep-copied as `ChaosEnv` is: arguments, seed streams and the batched state."""
        state = {k: v for k, v in vars(self).items() if k not in self._REBUILT}
        state["_leaves"] = jax.device_get(self._leaves)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        leaves = state.pop("_leaves")
        self.__init__(**state["_args"])
        vars(self).update(state)
        self._leaves = None if leaves is None else jax.device_put(leaves)

    @property
    def state(self) -> State | None:
        """The batched functional `State` of all sub-environments (None before the first reset).

        Its `data` holds the fields that carry the simulation from step to step and that the task
        reads (`Env.restored_fields`); the derived ones, recomputed by every step, are placeholders.
        """
        return None if self._leaves is None else self._fns.state(self._leaves)

    @state.setter
    def state(self, state: State) -> None:
        self._leaves = self._fns.leaves(state, like=self._leaves)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        refuse_if_closed(self, "reset")
        seeds = vector_seeds(seed, self.num_envs)
        mask = check_reset_options(options, accepted=("reset_mask",)).get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                                 f"got {mask.dtype} of shape {mask.shape}")
        self._seeds.seed(seeds)
        if self._key is None:
            self._key = jnp.asarray(batch_key(episode_seed(self.np_random)))
        if mask is None or self._leaves is None:
            episodes = np.zeros(self.num_envs, np.int32) if self._leaves is None else self._fns.episodes(self._leaves)
            self._leaves, outputs = self._fns.reset_all(episodes, self._seeds, self._key)
            self._finished = np.zeros(0, np.int64)
        else:
            self._leaves, outputs = self._fns.reset_indices(self._leaves, self._fns.observe(self._leaves),
                                                            np.flatnonzero(mask), self._seeds, self._key)
            self._finished = self._finished[~mask[self._finished]]
        out = self._fns.unpack(np.asarray(outputs))
        return out.obs, out.info

    def step(self, actions):
        refuse_if_closed(self, "step")
        if self._leaves is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        actions = check_actions(actions, self.action_space.shape)
        self._leaves, outputs = self._fns.step(self._leaves, actions)
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            return self._same_step(outputs)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._finished.size:
            # they begin a new episode instead of the step just taken (whose work is dropped)
            self._leaves, outputs = self._fns.reset_indices(self._leaves, outputs, self._finished, self._seeds,
                                                            self._key)
        out = self._fns.unpack(np.asarray(outputs))
        self._finished = np.flatnonzero(out.terminated | out.truncated)
        return tuple(out)

    def _same_step(self, outputs: jax.Array):
        self._leaves, final, after, finished = self._fns.same_step(self._leaves, outputs, self._seeds, self._key)
        if after is None:
            return tuple(final)
        done = np.zeros(self.num_envs, bool)
        done[finished] = True
        final_obs = np.full(self.num_envs, None, dtype=object)
        for i in finished:
            final_obs[i] = final.obs[i]
        final_info = {k: (v & done if k.startswith("_") else v) for k, v in final.info.items()}
        info = {**after.info, "final_obs": final_obs, "_final_obs": done,
                "final_info": final_info, "_final_info": done}
        return after.obs, final.reward, final.terminated, final.truncated, info
