"""Gymnasium faces of a functional environment: one `gymnasium.Env` and one batched `VectorEnv`.

They convert to numpy at the boundary, validate their inputs, and add no physics of their own. The
pieces every face shares live here too: action checks, the per-environment seed streams
(`SeedStreams`) and the renderer of a task's states (`SceneRenderer`).
"""

from __future__ import annotations

import copy
import functools
import os
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

from chaosgym.functional.env import Env, State, check_episode_length
from chaosgym.faces.mujoco_backend import MujocoBackend
from chaosgym.registry import make
from chaosgym.functional.sharding import shard_batch
from chaosgym.functional.trace_cache import cached_jit


def check_actions(actions: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Validate an action (or a batch) and clip it to [-1, 1]; raise `ValueError` otherwise."""
    array = np.asarray(actions)
    if array.dtype.kind not in "fiu":  # floats and integers; booleans, complex, strings and objects are not
        raise ValueError(f"expected a real-valued action array of shape {shape} (float32), got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"expected action shape {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        # where, not the whole array: one line, also for a batch of thousands
        bad = np.argwhere(~np.isfinite(array))
        first = tuple(int(i) for i in bad[0])
        raise ValueError(f"action contains NaN or inf in {len(bad)} of {array.size} entries, the first "
                         f"{array[first]} at index {first}; nothing was stepped")
    # the ufuncs themselves: np.clip's Python layers cost twice as much, on every step
    return np.minimum(np.maximum(array, -1.0), 1.0).astype(np.float32, copy=False)


def _seed_to_key(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _is_seed(seed: Any) -> bool:
    return isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)) and seed >= 0


def vector_seeds(seed: Any, num_envs: int) -> list[int | None]:
    """One seed (or None) per environment from a vector `reset(seed=...)`, as Gymnasium's vector envs
    read it: None, an int s (environment i gets s + i), or a sequence of `num_envs` ints or Nones."""
    if seed is None:
        return [None] * num_envs
    if _is_seed(seed):
        return [int(seed) + i for i in range(num_envs)]
    if isinstance(seed, (list, tuple, np.ndarray)) and len(seed) == num_envs and all(s is None or _is_seed(s) for s in seed):
        return [None if s is None else int(s) for s in seed]
    raise ValueError(f"seed must be None, a non-negative int, or a list of {num_envs} non-negative ints or "
                     f"Nones (one per environment), got {seed!r}")


class SeedStreams:
    """The seed generator of each of `num_envs` environments, as each single Gymnasium env has its own
    `np_random`, with the seed of every environment's next reset drawn ahead (so that a step can
    reset an environment without a second device call). Each generator still yields one seed per
    reset, in the order a `ChaosEnv` would draw them. Shared by the Gymnasium vector env and the
    SB3 `VecEnv`.
    """

    def __init__(self, num_envs: int):
        self.generators = [np_random()[0] for _ in range(num_envs)]
        self.next = np.zeros(num_envs, np.uint32)
        self.advance(range(num_envs))

    def seed(self, seeds: list[int | None]) -> None:
        """Restart the generator of every environment given an int; one given None keeps its stream."""
        reseeded = [i for i, seed in enumerate(seeds) if seed is not None]
        for i in reseeded:
            self.generators[i] = np_random(seeds[i])[0]
        self.advance(reseeded)

    def advance(self, indices) -> None:
        """Draw the next reset seed of the environments at `indices` (ints, or a boolean mask)."""
        indices = np.flatnonzero(indices) if np.asarray(indices).dtype == np.bool_ else indices
        # a fresh array, never an in-place write: a dispatched (asynchronous) JAX call on CPU may
        # alias the old one instead of copying it, and still be reading it
        seeds = self.next.copy()
        for i in indices:
            seeds[i] = _seed_to_key(self.generators[i])
        self.next = seeds


class SceneRenderer:
    """RGB images of a task's states through MuJoCo's offscreen renderer, shared by every face
    (`ChaosEnv.render`, the SB3 `VecEnv`'s `get_images`, `chaosgym render`).

    The size is checked here, when a face is built: positive integers within the model's offscreen
    buffer (`<visual><global offwidth offheight>` in the MJCF). The GL context is made at the first frame.
    """

    def __init__(self, mj_model: mujoco.MjModel, width: int, height: int, camera: str | int = -1):
        limits = {"width": mj_model.vis.global_.offwidth, "height": mj_model.vis.global_.offheight}
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= limits[name]:
                raise ValueError(f"render {name} must be an integer in 1..{limits[name]} (the model's offscreen "
                                 f"buffer), got {value!r}")
        self.model, self.size, self.camera = mj_model, (int(height), int(width)), camera
        self._renderer: mujoco.Renderer | None = None

    def render(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """The image, `(height, width, 3)` uint8, of the state `(qpos, qvel)`."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, *self.size)
            self._data = mujoco.MjData(self.model)
        self._data.qpos[:], self._data.qvel[:] = qpos, qvel
        mujoco.mj_forward(self.model, self._data)
        self._renderer.update_scene(self._data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


# What one environment's seed stream holds on the host: a numpy Generator with its PCG64 (measured
# with tracemalloc, numpy 2)
_SEED_STREAM_BYTES = 900


def _available_memory() -> dict[str, int]:
    """Bytes free for a batch, by where it lives: the host (Linux's MemAvailable, else the free
    pages) and, when JAX runs on an accelerator, its devices together."""
    available = {}
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        available["host"] = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            available["host"] = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            pass
    if jax.default_backend() != "cpu":
        stats = [device.memory_stats() or {} for device in jax.devices()]
        if all("bytes_limit" in s for s in stats):
            available["device"] = sum(s["bytes_limit"] - s.get("bytes_in_use", 0) for s in stats)
    return available


def check_batch_fits(env: Env, num_envs: int) -> None:
    """Refuse, before allocating anything, a batch whose memory estimate exceeds what is available.

    The estimate is a lower bound: every environment's whole `mjx.Data` twice (a step's input and
    output, which XLA materialises; its temporaries come on top) and its seed stream on the host.
    """
    state = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(env.empty_data))
    device, host = 2 * state * num_envs, _SEED_STREAM_BYTES * num_envs
    available = _available_memory()
    if "device" not in available:  # JAX on the CPU: its arrays are host memory too
        host, device = host + device, 0
    for where, need in (("host", host), ("device", device)):
        if where in available and need > available[where]:
            gib = 2.0 ** 30
            raise ValueError(
                f"num_envs={num_envs:,} needs at least {need / gib:,.1f} GiB of {where} memory ({2 * state:,} bytes of "
                f"MJX state per environment, a step's input and output, and {_SEED_STREAM_BYTES} bytes of seed "
                f"stream), more than the {available[where] / gib:,.1f} GiB available; use fewer environments")


def parse_autoreset_mode(mode: str | AutoresetMode) -> AutoresetMode:
    """Gymnasium's `AutoresetMode` from itself, its value (`"SameStep"`) or its name in any case (`"same_step"`)."""
    if isinstance(mode, AutoresetMode):
        return mode
    spelling = mode.lower().replace("_", "").replace("-", "") if isinstance(mode, str) else None
    for member in AutoresetMode:
        if spelling == member.value.lower():
            return member
    valid = ", ".join(f"{m.name.lower()!r}" for m in AutoresetMode)
    raise ValueError(f"autoreset_mode must be one of {valid} (or a gymnasium.vector.AutoresetMode), got {mode!r}")


def spaces_of(env: Env) -> tuple[spaces.Box, spaces.Box]:
    """The Gymnasium observation and action spaces of one env of `env` (actions in [-1, 1])."""
    observation = spaces.Box(-np.inf, np.inf, (env.observation_size,), np.float32)
    action = spaces.Box(-1.0, 1.0, (env.action_size,), np.float32)
    return observation, action


def _info(info: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: v.item() for k, v in info.items()}


def check_reset_options(options: Any, accepted: tuple[str, ...]) -> dict:
    """`options` of a `reset` as a dict; refuse a non-dict, and keys outside `accepted`, naming them."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"options must be None or a dict, got {options!r}")
    unknown = sorted(map(repr, set(options) - set(accepted)))
    if unknown:
        known = f"the accepted ones: {', '.join(map(repr, accepted))}" if accepted else "this env accepts none"
        raise ValueError(f"unknown reset option(s) {', '.join(unknown)}; {known}")
    return options


def _refuse_if_closed(env: gymnasium.Env | gymnasium.vector.VectorEnv, call: str) -> None:
    if env.closed:
        raise gymnasium.error.ClosedEnvironmentError(f"{call}() on a closed {type(env).__name__}; make a new one")


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

    Out-of-range actions are clipped to [-1, 1]; actions of the wrong shape or dtype, or with NaN or
    inf, raise `ValueError` and step nothing. A non-finite state undoes the step and terminates the
    episode with `info["nonfinite_state"]`, on both backends. The time limit is Gymnasium's
    `TimeLimit` wrapper (added by `gymnasium.make` from the registered `max_episode_steps`).

    An env deep-copies, pickles and cloudpickles (SB3's `SubprocVecEnv` sends it so), mid-episode
    too: the copy is rebuilt from its arguments with its seed stream and simulation state, and steps
    on as the original would. A closed env refuses `step`, `reset` and `render`.
    """

    metadata = {"render_modes": ["rgb_array"]}
    # rebuilt from the arguments, not pickled: they hold device handles and jitted functions
    _REBUILT = ("env", "_scene", "_engine", "_state")

    def __init__(self, env_id: str, render_mode: str | None = None, width: int = 480,
                 height: int = 480, backend: str = DEFAULT_BACKEND, **task_kwargs):
        self._args = {"env_id": env_id, "render_mode": render_mode, "width": width, "height": height,
                      "backend": backend, **task_kwargs}
        if backend not in ("mujoco", "mjx"):
            raise ValueError(f"backend must be 'mujoco' or 'mjx', got {backend!r}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.env = make(env_id, **task_kwargs)
        if backend == "mujoco" and self.env.task.physics_override is not None:
            raise ValueError(f"physics={self.env.task.physics_override!r} integrates its own equations on MJX; "
                             "MuJoCo's C engine would step MuJoCo's physics instead: pass backend='mjx'")
        self._scene = SceneRenderer(self.env.mj_model, width, height, self.env.task.render_camera)
        # the C engine keeps its state in its own MjData; the MJX path keeps it in `_state`
        self._engine = MujocoBackend(self.env) if backend == "mujoco" else None
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.env.dt))}
        self.observation_space, self.action_space = spaces_of(self.env)
        self._state: State | None = None
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
        _refuse_if_closed(self, "reset")
        check_reset_options(options, accepted=())
        super().reset(seed=seed)
        episode_seed = _seed_to_key(self.np_random)
        self._needs_reset = False
        if self._engine is not None:
            return self._engine.reset(episode_seed, self._upcoming_seeds)
        self._state = self.env.jit_reset(jax.random.key(episode_seed))
        obs, info = jax.device_get((self._state.obs, self._state.info))
        return np.asarray(obs, np.float32), _info(info)

    def _upcoming_seeds(self, n: int) -> list[int]:
        """The seeds the next `n` resets draw, unless something else draws from `np_random` first."""
        rng = copy.deepcopy(self.np_random)
        return [_seed_to_key(rng) for _ in range(n)]

    def step(self, action):
        _refuse_if_closed(self, "step")
        if self._needs_reset:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        action = check_actions(action, self.action_space.shape)
        if self._engine is not None:
            obs, reward, terminated, info = self._engine.step(action)
            return obs, reward, terminated, False, info
        self._state = self.env.jit_step(self._state, action)
        s = self._state
        obs, reward, terminated, info = jax.device_get((s.obs, s.reward, s.terminated, s.info))
        return np.asarray(obs, np.float32), float(reward), bool(terminated), False, _info(info)

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without render_mode='rgb_array'")
            return None
        _refuse_if_closed(self, "render")
        if self._needs_reset:
            raise gymnasium.error.ResetNeeded("call reset() before render()")
        if self._engine is not None:
            qpos, qvel = self._engine.data.qpos, self._engine.data.qvel
        else:
            qpos, qvel = jax.device_get((self._state.data.qpos, self._state.data.qvel))
        return self._scene.render(qpos, qvel)

    def close(self):
        self._scene.close()
        self.closed = True


def _outputs(state: State, episode_length: int) -> jax.Array:
    """What a vector `step` hands back, packed into one float32 array of shape (num_envs, width).

    One device-to-host transfer instead of one per field. Booleans and float32 metrics round-trip
    exactly; `VectorFunctions.unpack` splits the columns again. Info values are per-env scalars
    (the `Task.reward` contract), one column each.
    """
    # Gymnasium's TimeLimit truncates on the last step even when the episode also terminates there;
    # `Env.step` (as Brax does) then reports only the termination.
    truncated = state.truncated | (state.steps >= episode_length)
    scalars = [state.reward, state.terminated, truncated, *(state.info[k] for k in sorted(state.info))]
    return jnp.concatenate([state.obs, *(x[:, None].astype(state.obs.dtype) for x in scalars)], axis=1)


class VectorFunctions:
    """The jitted, vmapped functions behind `ChaosVectorEnv` (and the SB3 `VecEnv` in `agents`),
    built once per `Env` and batch size (`vector_functions`) and shared.

    Every step is one device call, autoreset included. Only the environments that finished are
    reset, in chunks of `chunk` (a vmapped reset of the whole batch would cost about one extra MJX
    forward pass per env on every step where any episode ended, which for the Ant is most steps).
    """

    def __init__(self, env: Env, num_envs: int):
        self.env, self.num_envs = env, num_envs
        self.chunk = max(1, num_envs // 16)
        info = jax.eval_shape(env.reset, jax.random.key(0)).info
        self.info_dtypes = {k: info[k].dtype for k in sorted(info)}
        # Between calls the state travels as a flat list of arrays, and its `data` as only the
        # fields MJX steps from and the task reads (`Env.restored_fields`): the rest of `mjx.Data`
        # is recomputed by every step. Flattening the whole `Data` pytree in Python, passing its
        # ~90 arrays in and out of every call and writing them all back cost the batched Ant
        # 10-15% against a bare `mjx.step` loop. Everything below works on such carried states.
        initial = jax.eval_shape(self._reset_all, jax.ShapeDtypeStruct((num_envs,), jnp.uint32))
        self.treedef = jax.tree.structure(initial)
        key = (env.cache_key, "vector", num_envs, self.chunk)
        self.reset = cached_jit(lambda seeds: self._flat(self._with_outputs(self._reset_all(seeds))),
                                (key, "reset"))
        self.reset_where = cached_jit(self._on_leaves(lambda state, seeds, mask: self._with_outputs(
            self._reset_some(state, seeds, mask))), (key, "reset_where"), donate_argnums=(0,))
        self.step = cached_jit(self._on_leaves(self._step), (key, "step"), donate_argnums=(0,))
        self.step_same = cached_jit(self._on_leaves(self._step_same), (key, "step_same"), donate_argnums=(0,))

    def carried(self, state: State) -> State:
        """`state` with only the carried fields in `data` (a dict)."""
        return state.replace(data={name: getattr(state.data, name) for name in self.env.restored_fields})

    def full(self, state: State) -> State:
        """A carried batch of states with a whole `mjx.Data`, the other fields from `Env.empty_data`."""
        template = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (self.num_envs, *np.shape(x))),
                                self.env.empty_data)
        return state.replace(data=template.replace(**state.data))

    def state(self, leaves: list[jax.Array]) -> State:
        return self.full(jax.tree.unflatten(self.treedef, leaves))

    @staticmethod
    def _flat(result):
        state, outputs = result
        return jax.tree.leaves(state), outputs

    def _on_leaves(self, fn):
        """`fn(carried state, ...) -> (carried state, outputs)` as a function of the state's leaves."""
        return lambda leaves, *args: self._flat(fn(jax.tree.unflatten(self.treedef, leaves), *args))

    def _reset_all(self, seeds: jax.Array) -> State:
        return self.carried(jax.vmap(lambda seed: self.env.reset(jax.random.key(seed)))(seeds))

    def _stepped(self, state: State, actions: jax.Array) -> State:
        return self.carried(jax.vmap(self.env.step)(self.full(state), actions))

    def _with_outputs(self, state: State) -> tuple[State, jax.Array]:
        state = shard_batch(state)  # the batch spread over all devices (a no-op with one)
        return state, _outputs(state, self.env.episode_length)

    def _reset_some(self, state: State, seeds: jax.Array, mask: jax.Array) -> State:
        """Reset the environments where `mask` is true, with their `seeds`; leave the rest as they are."""
        def reset_chunk(carry):
            state, remaining = carry
            (index,) = jnp.nonzero(remaining, size=self.chunk, fill_value=self.num_envs)  # fill: dropped below
            seed = seeds[jnp.minimum(index, self.num_envs - 1)]
            fresh = self.carried(jax.vmap(lambda s: self.env.reset(jax.random.key(s)))(seed))
            state = jax.tree.map(lambda old, new: old.at[index].set(new, mode="drop"), state, fresh)
            return state, remaining.at[index].set(False, mode="drop")

        return jax.lax.while_loop(lambda carry: jnp.any(carry[1]), reset_chunk, (state, mask))[0]

    def _step(self, state: State, actions: jax.Array, seeds: jax.Array, reset_mask: jax.Array):
        """next_step/disabled autoreset: environments in `reset_mask` are reset instead of stepped."""
        return self._with_outputs(self._reset_some(self._stepped(state, actions), seeds, reset_mask))

    def _step_same(self, state: State, actions: jax.Array, seeds: jax.Array):
        """same_step autoreset: returns the reset state and the outputs before and after the reset."""
        stepped = self._stepped(state, actions)
        state = shard_batch(self._reset_some(stepped, seeds, stepped.terminated | stepped.truncated))
        return state, jnp.stack([_outputs(stepped, self.env.episode_length), _outputs(state, self.env.episode_length)])

    def unpack(self, outputs: np.ndarray):
        """Split `_outputs` on the host into obs, reward, terminated, truncated and the info dict."""
        size = self.env.observation_size
        obs = outputs[:, :size].astype(np.float32)
        reward = outputs[:, size].astype(np.float64)
        terminated, truncated = outputs[:, size + 1] != 0, outputs[:, size + 2] != 0
        every = np.ones(self.num_envs, bool)
        info = {}
        for column, (k, dtype) in enumerate(self.info_dtypes.items(), start=size + 3):
            info[k], info["_" + k] = outputs[:, column].astype(dtype), every
        return obs, reward, terminated, truncated, info


vector_functions = functools.cache(VectorFunctions)


class ChaosVectorEnv(gymnasium.vector.VectorEnv):
    """`num_envs` copies of a task stepped in one jitted, vmapped MJX call.

    Sub-environment i seeded with s follows the trajectory of `ChaosEnv(backend="mjx")` seeded with s
    (to float32 rounding, see `ChaosEnv`).
    Autoreset follows Gymnasium 1.x: `next_step` (default) resets a finished environment on the
    following `step` call, ignoring its action and returning reward 0; `same_step` resets it at
    once and puts the last observation in `info["final_obs"]` (and its info in
    `info["final_info"]`); `disabled` leaves resets to `reset(options={"reset_mask": mask})`.
    A `num_envs` whose state would not fit in memory is refused before anything is allocated
    (`check_batch_fits`); copies, pickles and closing behave as `ChaosEnv`'s.
    """

    _REBUILT = ("env", "_fns", "_leaves")  # see ChaosEnv

    def __init__(self, env_id: str, num_envs: int = 1, max_episode_steps: int | None = None,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, **task_kwargs):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        check_episode_length(max_episode_steps, "max_episode_steps")
        self._args = {"env_id": env_id, "num_envs": num_envs, "max_episode_steps": max_episode_steps,
                      "autoreset_mode": autoreset_mode, **task_kwargs}
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.env = make(env_id, episode_length=max_episode_steps, **task_kwargs)
        check_batch_fits(self.env, int(num_envs))
        self.num_envs = int(num_envs)
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": []}
        self.single_observation_space, self.single_action_space = spaces_of(self.env)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._fns = vector_functions(self.env, self.num_envs)
        self._seeds = SeedStreams(self.num_envs)
        self._leaves: list[jax.Array] | None = None  # the batched State, flattened (see VectorFunctions)
        self._needs_reset = np.zeros(self.num_envs, bool)

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
        self._leaves = jax.tree.leaves(self._fns.carried(state))

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        _refuse_if_closed(self, "reset")
        seeds = vector_seeds(seed, self.num_envs)
        mask = check_reset_options(options, accepted=("reset_mask",)).get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                                 f"got {mask.dtype} of shape {mask.shape}")
        self._seeds.seed(seeds)
        if mask is None or self._leaves is None:
            mask = np.ones(self.num_envs, bool)
            self._leaves, outputs = self._fns.reset(self._seeds.next)
        else:
            self._leaves, outputs = self._fns.reset_where(self._leaves, self._seeds.next, mask)
        obs, _, _, _, info = self._fns.unpack(np.asarray(outputs))  # waits for the call to finish
        self._seeds.advance(mask)  # which used the seeds now being replaced
        self._needs_reset &= ~mask
        return obs, info

    def step(self, actions):
        _refuse_if_closed(self, "step")
        if self._leaves is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        actions = check_actions(actions, self.action_space.shape)
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            return self._step_same(actions)
        next_step = self.autoreset_mode == AutoresetMode.NEXT_STEP
        reset_mask = self._needs_reset if next_step else np.zeros(self.num_envs, bool)
        self._leaves, outputs = self._fns.step(self._leaves, actions, self._seeds.next, reset_mask)
        obs, reward, terminated, truncated, info = self._fns.unpack(np.asarray(outputs))
        self._seeds.advance(reset_mask)
        self._needs_reset = terminated | truncated
        return obs, reward, terminated, truncated, info

    def _step_same(self, actions: np.ndarray):
        self._leaves, outputs = self._fns.step_same(self._leaves, actions, self._seeds.next)
        final, after_reset = np.asarray(outputs)
        final_obs, reward, terminated, truncated, final_info = self._fns.unpack(final)
        done = terminated | truncated
        if not done.any():
            return final_obs, reward, terminated, truncated, final_info
        self._seeds.advance(done)
        obs, _, _, _, info = self._fns.unpack(after_reset)
        final_obs_by_env = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(done):
            final_obs_by_env[i] = final_obs[i]
        final_info = {k: (v & done if k.startswith("_") else v) for k, v in final_info.items()}
        info = {**info, "final_obs": final_obs_by_env, "_final_obs": done,
                "final_info": final_info, "_final_info": done}
        return obs, reward, terminated, truncated, info
