"""The C-engine backend of the single Gymnasium env: MuJoCo's `mj_step` for the physics, the task's
own JAX functions for everything else.

A control step is `frame_skip` calls of `mujoco.mj_step` (float64) on the task's own `MjModel`, the
very model MJX runs (same MJCF, same options). Observation, reward and termination then come from
ONE jitted call of the task's functions on an `mjx.Data` built from the MjData fields in `FIELDS`
(cast to float32, the precision MJX runs in). The task code therefore exists once; a task that
reads any other field is refused when the backend is built (it would read placeholders here).

The step semantics are those of `chaosgym.env.Env.step`: the previous and the new data go to
`Task.reward`, and a state that is not finite in float32 undoes the step, terminates the episode
with reward 0 and sets `info["nonfinite_state"]`. MuJoCo's C engine resets the simulation by
itself when qpos, qvel or qacc turn NaN, inf or larger than 1e10 (its `mjWARN_BAD*` warnings);
such a step counts as non-finite too.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from chaosgym.env import Env, fields_read
from chaosgym.trace_cache import cached_jit

# The MjData fields the task functions may read on this backend (see `Task`).
FIELDS = ("time", "qpos", "qvel", "act", "ctrl", "xpos", "xquat", "site_xpos", "sensordata")

_BLOW_UP_WARNINGS = [int(w) for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                                      mujoco.mjtWarning.mjWARN_BADQACC)]
_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _TaskFunctions:
    """The task's functions on packed MjData fields, jitted once per `Env` and shared by its backends.

    The input is one float32 vector [previous fields | new fields | action | finite], the output
    one float32 vector [observation, reward, terminated, info...]: one transfer each way.
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
        """What `Env.step` computes after the physics, from the same task functions."""
        n, task = self.size, self.env.task
        data, next_data = self._unpack(vector[:n]), self._unpack(vector[n:2 * n])
        action, finite = vector[2 * n:-1], vector[-1] > 0
        reward, metrics = task.reward(data, action, next_data)
        reward = jnp.where(finite, reward, 0.0)
        terminated = task.terminated(next_data) | ~finite
        info = {**metrics, "nonfinite_state": ~finite}
        scalars = jnp.stack([jnp.asarray(x, jnp.float32) for x in [reward, terminated, *(info[k] for k in self.info_dtypes)]])
        return jnp.concatenate([task.observation(next_data), scalars])


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

    def _pack_new_fields(self) -> None:
        n = self._fns.size
        np.concatenate([np.ravel(getattr(self.data, f)) for f in FIELDS], out=self._input[n:2 * n],
                       casting="same_kind")

    def _results(self):
        out = np.asarray(self._fns.outputs(self._input))
        size = self.env.observation_size
        info = {k: dtype.type(v).item() for (k, dtype), v in zip(self._fns.info_dtypes.items(), out[size + 2:])}
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
        return obs, {k: type(v)(0) for k, v in info.items()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict]:
        model, data, n = self.model, self.data, self._fns.size
        mujoco.mj_getState(model, data, self._saved, _STATE)
        blow_ups = data.warning.number[_BLOW_UP_WARNINGS].sum()
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=self.env.frame_skip)
        finite = (data.warning.number[_BLOW_UP_WARNINGS].sum() == blow_ups
                  and np.all(np.abs(data.qpos) <= _FLOAT32_MAX) and np.all(np.abs(data.qvel) <= _FLOAT32_MAX))
        self._input[:n] = self._input[n:2 * n]
        if finite:
            self._pack_new_fields()
        else:  # undo the step: the state before it, whose fields are still the previous ones
            mujoco.mj_setState(model, data, self._saved, _STATE)
        self._input[2 * n:-1] = action
        self._input[-1] = float(finite)
        return self._results()
