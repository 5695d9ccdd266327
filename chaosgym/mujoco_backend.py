"""The C-engine backend of the single Gymnasium env: MuJoCo's `mj_step` for the physics, the task's
own JAX functions for everything else.

A control step is `frame_skip` calls of `mujoco.mj_step` (float64) on the task's own `MjModel`, the
very model MJX runs (same MJCF, same options). Observation, reward and termination then come from
ONE jitted call of the task's functions on an `mjx.Data` built from the MjData fields in `FIELDS`
(cast to float32, the precision MJX runs in). The task code therefore exists once; a task that
reads any other field is refused when the backend is built (it would read placeholders here).

The step semantics are those of `chaosgym.env.Env.step`, by the same function
(`chaosgym.env.finish_step`): the previous and the new data go to `Task.reward`, and a state that
is not finite in float32 undoes the step, terminates the episode with reward 0 and sets
`info["nonfinite_state"]`. MuJoCo's C engine resets the simulation by itself when qpos, qvel or
qacc turn NaN, inf or larger than 1e10 (its `mjWARN_BAD*` warnings); such a step counts as
non-finite too. The warning counters are cleared before every step, so every such reset is seen
(MuJoCo's reset sets a counter back to 1, so comparing counts missed the second one).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from chaosgym.env import Env, State, all_finite, fields_read, finish_step
from chaosgym.trace_cache import cached_jit

# The MjData fields the task functions may read on this backend (see `Task`).
FIELDS = ("time", "qpos", "qvel", "act", "ctrl", "xpos", "xquat", "site_xpos", "sensordata")

_BLOW_UP_WARNINGS = [int(w) for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                                      mujoco.mjtWarning.mjWARN_BADQACC)]
_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


class _TaskFunctions:
    """The task's functions on packed MjData fields, jitted once per `Env` and shared by its backends.

    The input is one float32 vector [previous fields | new fields | action | no blow-up warning],
    the output one float32 vector [observation, reward, terminated, info..., undone new fields]:
    one transfer each way. Values beyond float32's range arrive as inf, as MJX would hold them.
    """

    def __init__(self, env: Env):
        self.env = env
        self.template = env.empty_data  # numpy: bound to no device
        extra = fields_read(env.task, self.template, jnp.zeros(env.action_size)) - set(FIELDS)
        if extra:
            raise ValueError(f"{type(env.task).__name__} reads mjx.Data field(s) {sorted(extra)}, which the "
                             f"mujoco backend does not provide (it provides {', '.join(FIELDS)}); "
                             "use backend='mjx' or add them to chaosgym.mujoco_backend.FIELDS")
        self.shapes = [np.shape(getattr(self.template, f)) for f in FIELDS]
        self.size = sum(int(np.prod(s)) for s in self.shapes)
        metrics = jax.eval_shape(env.reset, jax.random.key(0)).info
        self.info_dtypes = {k: metrics[k].dtype for k in sorted(metrics)}  # sorted, as jax.device_get gives
        # MJX's own reset, so both backends start from the same state bit for bit (its forward
        # kinematics also normalises the quaternions in qpos); XLA drops the rest of it
        self.initial_state = cached_jit(lambda key: (lambda data: (data.qpos, data.qvel))(env.reset(key).data),
                                        (env.cache_key, "initial_state"))
        # on the host, next to the C engine, also where JAX's default device is an accelerator
        cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
        self.outputs = jax.jit(self._outputs, in_shardings=cpu, out_shardings=cpu)

    def _unpack(self, vector: jax.Array) -> mjx.Data:
        fields, offset = {}, 0
        for name, shape in zip(FIELDS, self.shapes):
            size = int(np.prod(shape))
            fields[name] = vector[offset:offset + size].reshape(shape)
            offset += size
        return self.template.replace(**fields)

    def _outputs(self, vector: jax.Array) -> jax.Array:
        """What `Env.step` computes after the physics, by the same rule (`finish_step`)."""
        n = self.size
        data, next_data = self._unpack(vector[:n]), self._unpack(vector[n:2 * n])
        action, finite = vector[2 * n:-1], (vector[-1] > 0) & all_finite(next_data)
        next_data, obs, reward, terminated, info = finish_step(self.env.task, data, action, next_data, finite, FIELDS)
        scalars = jnp.stack([jnp.asarray(x, jnp.float32) for x in [reward, terminated, *(info[k] for k in self.info_dtypes)]])
        fields = [jnp.ravel(getattr(next_data, name)).astype(jnp.float32) for name in FIELDS]
        return jnp.concatenate([obs, scalars, *fields])


_task_functions = functools.cache(_TaskFunctions)


class MujocoBackend:
    """One environment of `env`'s task stepped on MuJoCo's C engine.

    `reset(key)` starts from exactly the state `env.reset(key)` starts from; `step(action)` takes
    a clipped float32 action. Both return numpy observations and Python-scalar info, like the MJX
    path of `ChaosEnv`.
    """

    def __init__(self, env: Env):
        self.env, self.model = env, env.mj_model
        self.data = mujoco.MjData(self.model)
        self._fns = _task_functions(env)
        self._saved = np.empty(mujoco.mj_stateSize(self.model, _STATE))
        # Only the new fields are packed per step; the previous ones are the last step's new ones.
        self._input = np.zeros(2 * self._fns.size + env.action_size + 1, np.float32)
        self._steps, self._last = 0, None  # the last (obs, reward, terminated, info)

    @property
    def state(self) -> State:
        """The current state as a functional `State`: the `FIELDS` of the MjData in MJX's precision
        (the other fields of `data` are `Env.empty_data`'s placeholders)."""
        template = self._fns.template
        data = template.replace(**{f: np.asarray(getattr(self.data, f), getattr(template, f).dtype) for f in FIELDS})
        obs, reward, terminated, info = self._last
        truncated = self._steps >= self.env.episode_length and not terminated
        return State(data, obs, np.float32(reward), np.bool_(terminated), np.bool_(truncated),
                     np.int32(self._steps), {k: np.asarray(v) for k, v in info.items()})

    @state.setter
    def state(self, state: State) -> None:
        """Set the simulation to `state.data`'s time, qpos, qvel, act and ctrl (what MuJoCo steps from)."""
        self.data.time = float(state.data.time)
        for name in ("qpos", "qvel", "act", "ctrl"):
            getattr(self.data, name)[:] = np.asarray(getattr(state.data, name))
        mujoco.mj_forward(self.model, self.data)
        self._pack_new_fields()

    def _pack_new_fields(self) -> None:
        n = self._fns.size
        with np.errstate(over="ignore"):  # beyond float32's range is inf, a blow-up as on MJX
            np.concatenate([np.ravel(getattr(self.data, f)) for f in FIELDS], out=self._input[n:2 * n],
                           casting="same_kind")

    def _results(self):
        out = np.asarray(self._fns.outputs(self._input))
        size, n = self.env.observation_size, self._fns.size
        # the new fields as the rule left them (the previous ones where it undid the step), which
        # the next step's reward reads as its previous data
        self._input[n:2 * n] = out[-n:]
        values = zip(self._fns.info_dtypes.items(), out[size + 2:-n])
        info = {k: dtype.type(v).item() for (k, dtype), v in values}
        return out[:size].copy(), float(out[size]), bool(out[size + 1]), info

    def reset(self, key: jax.Array) -> tuple[np.ndarray, dict]:
        return self.reset_to(*jax.device_get(self._fns.initial_state(key)))

    def reset_to(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, dict]:
        """Start an episode from the given `qpos` and `qvel` (time 0, controls 0)."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:], self.data.qvel[:] = qpos, qvel
        mujoco.mj_forward(self.model, self.data)
        self._pack_new_fields()
        # the observation of the reset state, from a step that changed nothing (reward unused)
        n = self._fns.size
        self._input[:n] = self._input[n:2 * n]
        self._input[2 * n:] = 0.0
        self._input[-1] = 1.0
        obs, _, _, info = self._results()
        info = {k: type(v)(0) for k, v in info.items()}
        self._steps, self._last = 0, (obs, 0.0, False, info)
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict]:
        model, data, n = self.model, self.data, self._fns.size
        mujoco.mj_getState(model, data, self._saved, _STATE)
        data.warning.number[_BLOW_UP_WARNINGS] = 0
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=self.env.frame_skip)
        self._input[:n] = self._input[n:2 * n]
        self._pack_new_fields()
        self._input[2 * n:-1] = action
        self._input[-1] = float(not data.warning.number[_BLOW_UP_WARNINGS].any())
        obs, reward, terminated, info = self._results()
        if info["nonfinite_state"]:  # undone: back to the state before the step
            mujoco.mj_setState(model, data, self._saved, _STATE)
        self._steps, self._last = self._steps + 1, (obs, reward, terminated, info)
        return obs, reward, terminated, info
