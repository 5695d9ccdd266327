"""The C-engine backend of the single Gymnasium env: MuJoCo's `mj_step` for the physics, the task's
own functions, computed with numpy, for everything else.

A control step is `frame_skip` calls of `mujoco.mj_step` (float64) on the task's own `MjModel`, the
very model MJX runs (same MJCF, same options). Observation, reward and termination then come from
the task's functions called on `HostData`: the MjData fields in `FIELDS` that the task reads, cast
to float32 (the precision MJX runs in), as numpy arrays. A task written over
`chaosgym.tasks.arrays.array_namespace` computes them in numpy here, in microseconds (a jitted JAX call
costs more than the physics of a step); the task code exists once. A task that reads any other
field is refused when the backend is built (it would have nothing to read here).

The step semantics are those of `chaosgym.functional.env.Env.step` (`chaosgym.functional.env.finish_step`, here on the
host): the previous and the new data go to `Task.reward`, and a state that is not finite in float32
undoes the step, terminates the episode with reward 0 and sets `info["nonfinite_state"]`. MuJoCo's
C engine resets the simulation by itself when qpos, qvel or qacc turn NaN, inf or larger than 1e10
(its `mjWARN_BAD*` warnings); such a step counts as non-finite too. The warning counters are
cleared before every step, so every such reset is seen (MuJoCo's reset sets a counter back to 1,
so comparing counts missed the second one).

A reset starts from MJX's own reset state (`Env.reset`), so both backends start from the same state
bit for bit (its forward kinematics also normalises the quaternions in qpos). One jitted call
computes it for a batch of the seeds the next resets will draw (`START_BATCH`), so a reset costs
about what MuJoCo's `mj_forward` costs. How many seeds are drawn ahead follows how many of the last
batch's were used: a loop of `reset(seed=i)` draws few, a loop of `reset()` up to the whole batch.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from chaosgym.functional.env import Env, State, fields_read
from chaosgym.functional.trace_cache import cached_jit

# The MjData fields the task functions may read on this backend (see `Task`).
FIELDS = ("time", "qpos", "qvel", "act", "ctrl", "xpos", "xquat", "site_xpos", "sensordata")
# Initial states computed per call of MJX's reset (one program shape): for the seeds of this
# reset and of the next ones. 256 cost under twice what 32 cost, and a JAX call costs 0.1-1 ms.
START_BATCH = 256

# mjWARN_BADQPOS, mjWARN_BADQVEL, mjWARN_BADQACC: consecutive in mjtWarning (a slice indexes fastest)
_BLOW_UP_WARNINGS = slice(int(mujoco.mjtWarning.mjWARN_BADQPOS), int(mujoco.mjtWarning.mjWARN_BADQACC) + 1)
_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


class HostData:
    """The fields of an `MjData` that a task reads (`names`, among `FIELDS`), as float32 numpy arrays.

    What the task's functions see on this backend in place of an `mjx.Data`. Values beyond
    float32's range are inf, as MJX would hold them.
    """

    __slots__ = FIELDS

    def __init__(self, data: mujoco.MjData, names: Sequence[str]):
        for name in names:
            setattr(self, name, np.asarray(getattr(data, name), np.float32))


class _TaskOnHost:
    """What every `MujocoBackend` of one `Env` shares, built once per `Env` (`_task_on_host`): the
    fields its task reads, the dtypes of its info, and MJX's reset for a batch of seeds."""

    def __init__(self, env: Env):
        zero_action = jnp.zeros(env.action_size)
        read = fields_read(env.task, env.empty_data, zero_action)
        extra = read - set(FIELDS)
        if extra:
            raise ValueError(f"{type(env.task).__name__} reads mjx.Data field(s) {sorted(extra)}, which the "
                             f"mujoco backend does not provide (it provides {', '.join(FIELDS)}); "
                             "use backend='mjx' or add them to chaosgym.faces.mujoco_backend.FIELDS")
        self.fields = tuple(sorted(read | {"qpos", "qvel"}))  # qpos and qvel: the finiteness test
        # traced on the empty data, not through a reset: its forward kinematics would take seconds
        metrics = jax.eval_shape(lambda data: env.task.reward(data, zero_action, data)[1], env.empty_data)
        dtypes = {**{k: np.dtype(v.dtype) for k, v in metrics.items()}, "nonfinite_state": np.dtype(bool)}
        # sorted, as jax.device_get orders the MJX path's
        self.info_types = [(k, dtype.type) for k, dtype in sorted(dtypes.items())]
        self.zero_info = {k: cast(0).item() for k, cast in self.info_types}

        def starts(seeds):
            state = jax.vmap(lambda seed: env.reset(jax.random.key(seed)))(seeds)
            return state.data.qpos, state.data.qvel, state.obs

        self.starts = cached_jit(starts, (env.cache_key, "initial_states", START_BATCH))


_task_on_host = functools.cache(_TaskOnHost)


class MujocoBackend:
    """One environment of `env`'s task stepped on MuJoCo's C engine.

    `reset(seed)` starts from exactly the state `env.reset(jax.random.key(seed))` starts from;
    `step(action)` takes a clipped float32 action. Both return numpy observations and Python-scalar
    info, like the MJX path of `ChaosEnv`.
    """

    def __init__(self, env: Env):
        self.env, self.model = env, env.mj_model
        self.data = mujoco.MjData(self.model)
        self._task = _task_on_host(env)
        self._saved = np.empty(mujoco.mj_stateSize(self.model, _STATE))
        self._starts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._served = 0  # resets served from `_starts`
        self._fields: HostData | None = None  # of the current state: the next reward's previous data
        self._steps, self._last = 0, None  # the last (obs, reward, terminated, info)

    @property
    def state(self) -> State:
        """The current state as a functional `State`: the `FIELDS` of the MjData in MJX's precision
        (the other fields of `data` are `Env.empty_data`'s placeholders)."""
        template = self.env.empty_data
        data = template.replace(**{f: np.asarray(getattr(self.data, f), getattr(template, f).dtype) for f in FIELDS})
        obs, reward, terminated, info = self._last
        truncated = self._steps >= self.env.episode_length and not terminated
        return State(data, obs, np.float32(reward), np.bool_(terminated), np.bool_(truncated),
                     np.int32(self._steps), {k: np.asarray(v) for k, v in info.items()})

    @state.setter
    def state(self, state: State) -> None:
        """Set the simulation to `state.data`'s (see `set_simulation`)."""
        set_simulation(self.model, self.data, state.data)
        self._read_fields()

    def _read_fields(self) -> None:
        with np.errstate(over="ignore"):  # beyond float32's range is inf, a blow-up as on MJX
            self._fields = HostData(self.data, self._task.fields)

    def reset(self, seed: int, upcoming: Callable[[int], list[int]] = lambda n: []) -> tuple[np.ndarray, dict]:
        """Start the episode that MJX's `env.reset(jax.random.key(seed))` starts: the same state and
        observation. `upcoming(n)` gives the seeds the next `n` resets will likely draw: their
        initial states are computed in the same call, whenever `seed`'s is not ready."""
        start = self._starts.get(seed)
        if start is None:
            ahead = min(START_BATCH - 1, max(7, 2 * self._served))
            seeds = [seed, *upcoming(ahead)][:START_BATCH]
            seeds += [seed] * (START_BATCH - len(seeds))
            self._served = 0
            qpos, qvel, obs = jax.device_get(self._task.starts(np.asarray(seeds, np.uint32)))
            self._starts = dict(zip(seeds, zip(qpos, qvel, obs)))  # a repeated seed: the same start
            start = self._starts[seed]
        self._served += 1
        qpos, qvel, obs = start
        self._start(qpos, qvel)
        obs = obs.astype(np.float32)  # a copy; float64 under jax_enable_x64, as `step`'s never is
        info = dict(self._task.zero_info)
        self._last = (obs, 0.0, False, info)
        return obs, info

    def reset_to(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, dict]:
        """Start an episode from the given `qpos` and `qvel` (time 0, controls 0)."""
        self._start(qpos, qvel)
        with np.errstate(over="ignore", invalid="ignore"):
            obs = np.array(self.env.task.observation(self._fields), np.float32)
        info = dict(self._task.zero_info)
        self._last = (obs, 0.0, False, info)
        return obs, info

    def _start(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:], self.data.qvel[:] = qpos, qvel
        mujoco.mj_forward(self.model, self.data)
        self._read_fields()
        self._steps = 0

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict]:
        """One control step under `action` (float32), clipped to [-1, 1] as `Env.step` clips it."""
        model, data, task = self.model, self.data, self.env.task
        action = np.minimum(np.maximum(action, -1.0), 1.0)  # the ufuncs: np.clip's Python layers cost twice as much
        mujoco.mj_getState(model, data, self._saved, _STATE)
        warnings = data.warning.number
        warnings[_BLOW_UP_WARNINGS] = 0
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=self.env.frame_skip)
        # numpy's warnings off: XLA computes with inf and NaN silently, and so does the MJX path
        with np.errstate(over="ignore", invalid="ignore"):
            previous, fields = self._fields, HostData(data, self._task.fields)
            finite = not warnings[_BLOW_UP_WARNINGS].any() and np.isfinite(fields.qpos).all() \
                and np.isfinite(fields.qvel).all()
            if not finite:  # undone: back to the state before the step
                mujoco.mj_setState(model, data, self._saved, _STATE)
                fields = previous
            # `finish_step`'s rule, on the host
            reward, metrics = task.reward(previous, action, fields)
            terminated = not finite or bool(task.terminated(fields))
            obs = np.array(task.observation(fields), np.float32)
        values = {**metrics, "nonfinite_state": not finite}
        info = {k: cast(values[k]).item() for k, cast in self._task.info_types}
        reward = float(reward) if finite else 0.0
        self._fields, self._steps = fields, self._steps + 1
        self._last = (obs, reward, terminated, info)
        return obs, reward, terminated, info

    def snapshot(self) -> dict:
        """Everything the next steps depend on, as plain data (what a pickled `ChaosEnv` carries)."""
        physics = np.empty(mujoco.mj_stateSize(self.model, _STATE))
        mujoco.mj_getState(self.model, self.data, physics, _STATE)
        return {"physics": physics, "fields": self._fields, "steps": self._steps, "last": self._last}

    def restore(self, snapshot: dict) -> None:
        """Continue from a `snapshot()`, exactly as its backend would have."""
        mujoco.mj_setState(self.model, self.data, snapshot["physics"], _STATE)
        mujoco.mj_forward(self.model, self.data)
        self._fields, self._steps, self._last = snapshot["fields"], snapshot["steps"], snapshot["last"]


def set_simulation(model: mujoco.MjModel, data: mujoco.MjData, state_data) -> None:
    """Set `data` to the simulation of a `State`'s `data` (either backend's): its time, qpos, qvel,
    act and ctrl, what MuJoCo steps from; `mj_forward` computes the rest."""
    data.time = float(state_data.time)
    for name in ("qpos", "qvel", "act", "ctrl"):
        getattr(data, name)[:] = np.asarray(getattr(state_data, name))
    mujoco.mj_forward(model, data)
