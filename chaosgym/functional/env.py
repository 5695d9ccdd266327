"""The functional environment: a task's MJX model with pure `reset` and `step`.

`Env.reset(key) -> State` and `Env.step(state, action) -> State` are pure functions of JAX arrays,
so `jax.jit`, `jax.vmap` and `jax.grad` all go through them. `step` does not auto-reset: the
Gymnasium adapters and the rollout decide what happens after an episode ends.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from chaosgym._mjx import mjx
from chaosgym.functional.sharding import uncommitted
from chaosgym.tasks.base import Task, asset_path  # noqa: F401  (re-exported)
from chaosgym.functional.trace_cache import UNCACHED, cached_jit, object_key
from chaosgym.validation import POSITIVE_INT, UserError


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["data", "obs", "reward", "terminated", "truncated", "steps", "info"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class State:
    """One environment state (or a batch of them under `vmap`).

    `steps` counts the control steps taken in the current episode; `info` holds the task's reward
    terms and metrics plus `nonfinite_state`, true on the step where the physics blew up.
    """

    data: mjx.Data
    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    steps: jax.Array
    info: dict[str, jax.Array]

    def replace(self, **changes: Any) -> State:
        return dataclasses.replace(self, **changes)


def all_finite(data: mjx.Data) -> jax.Array:
    """Whether the state is finite in its own precision (float32 on MJX): the non-finite-step rule's test."""
    return jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel))


def finish_step(task: Task, data: mjx.Data, action: jax.Array, next_data: mjx.Data, finite: jax.Array,
                fields: tuple[str, ...]):
    """The rule every backend follows after the physics: `(next_data, obs, reward, terminated, info)`.

    Where `finite` is false the step is undone (the `fields` of `next_data` are those of `data`),
    the reward is 0, the episode terminates and `info["nonfinite_state"]` is true.
    """
    def undo(name):  # a field may be a pytree (MJX keeps some in `_impl`)
        return jax.tree.map(lambda new, old: jnp.where(finite, new, old), getattr(next_data, name),
                            getattr(data, name))

    next_data = next_data.replace(**{name: undo(name) for name in fields})
    reward, metrics = task.reward(data, action, next_data)
    reward = jnp.where(finite, reward, 0.0)
    terminated = task.terminated(next_data) | ~finite
    return next_data, task.observation(next_data), reward, terminated, {**metrics, "nonfinite_state": ~finite}


def nonfinite_safe(physics: Callable[[mjx.Data, jax.Array], mjx.Data]):
    """`physics` returning `(next_data, finite)`, whose backward pass is 0 where `finite` is false.

    A blown-up step holds inf and NaN among its intermediates, and the backward pass multiplies them
    by the zero cotangent that the undo (`finish_step`'s `jnp.where`) sends to the discarded branch:
    0 * inf is NaN, and one blow-up makes the gradient of a whole batch NaN. The usual "double where"
    (sanitise the input before the risky function) cannot be used, because whether a step blows up
    is known only after taking it; the cotangents are selected after the backward pass instead.
    Forward-mode differentiation (`jax.jvp`) does not go through a `custom_vjp`: differentiate
    `Env.physics_step` forward instead, as `chaosgym.diagnostics.measures` does (a select's tangent is safe).
    """
    @jax.custom_vjp
    def step(data, action):
        next_data = physics(data, action)
        return next_data, all_finite(next_data)

    def forward(data, action):
        next_data, backward = jax.vjp(physics, data, action)
        finite = all_finite(next_data)
        return (next_data, finite), (backward, finite)

    def backward(residuals, cotangents):
        backward, finite = residuals
        keep = lambda ct: ct if ct.dtype == jax.dtypes.float0 else jnp.where(finite, ct, jnp.zeros_like(ct))
        return jax.tree.map(keep, backward(cotangents[0]))

    step.defvjp(forward, backward)
    return step


# What `mjx.step` advances from: every other `mjx.Data` field is either constant over a step
# (model inputs such as mocap poses and applied forces) or recomputed from these.
STEP_INPUTS = ("time", "qpos", "qvel", "act", "ctrl", "qacc_warmstart")


def fields_read(task: Task, data: mjx.Data, action: jax.Array) -> set[str]:
    """Names of the `mjx.Data` fields that the task's observation, reward, termination or objective use."""
    def outputs(data, next_data):
        objectives = [loss(jnp.zeros(1), next_data) for loss in task.objectives().values()]
        return task.observation(next_data), task.reward(data, action, next_data), task.terminated(next_data), objectives

    jaxpr = jax.make_jaxpr(outputs)(data, data).jaxpr
    used = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path((data, data))[0]]
    return {path[1].name for path, var in zip(paths, jaxpr.invars) if id(var) in used}


EPISODE_LENGTH = POSITIVE_INT.optional().saying("a positive integer, or None for the task's own")


def check_episode_length(value: Any, name: str = "episode_length") -> None:
    """Refuse a time limit that is not None (the task's own) or a positive integer."""
    EPISODE_LENGTH(name, value)


def run_substeps(task: Task, model: mjx.Model, data: mjx.Data, frame_skip: int, *, remat: bool) -> mjx.Data:
    """`frame_skip` physics steps (`task.mjx_step`) from `data`, each rematerialised for a gradient
    (`jax.checkpoint`) where `remat`; `Env.physics_step` sets it when there are several."""
    substep = functools.partial(task.mjx_step, model)
    if remat:
        substep = jax.checkpoint(substep)
    return jax.lax.scan(lambda d, _: (substep(d), None), data, None, length=frame_skip)[0]


class Env:
    """A task on MJX with frame skip, time limit and blow-up handling.

    Actions are clipped to [-1, 1] (every actuator's control range). When the physics produces a
    non-finite state, the step is undone, the episode terminates, the reward is 0 and
    `info["nonfinite_state"]` is true (`finish_step`, the rule of both backends); the gradient
    through such a step is 0, not NaN (`nonfinite_safe`). Undone means: the state MJX steps from (`STEP_INPUTS`) and
    every field the task reads (`restored_fields`) are those before the step, so the observation
    and any later step are too; the remaining, derived fields of `data` (contact and constraint
    arrays, inertias, ...) keep what the failed step computed. Restoring only these costs next to
    nothing, where restoring the whole `mjx.Data` cost about 6% of an Ant step on CPU.
    """

    def __init__(self, task: Task, episode_length: int | None = None):
        self.task = task
        self.mj_model = task.mj_model()
        task.bind(self.mj_model)
        # Bound to no device, so that batches can spread over all of them (chaosgym.functional.sharding):
        # mjx.put_model and mjx.make_data pin their arrays to the default device.
        self.model = uncommitted(mjx.put_model(self.mj_model))
        self.empty_data = jax.device_get(mjx.make_data(self.model))
        self.frame_skip = task.frame_skip
        check_episode_length(episode_length)
        self.episode_length = task.episode_length if episode_length is None else int(episode_length)
        self.dt = float(self.mj_model.opt.timestep) * self.frame_skip
        self.action_size = int(self.mj_model.nu)
        # traced on the empty data, not through a reset: MJX's forward kinematics take seconds to trace
        self.observation_size = int(jax.eval_shape(task.observation, self.empty_data).shape[-1])
        read = fields_read(task, self.empty_data, jnp.zeros(self.action_size))
        self.restored_fields = tuple(sorted(set(STEP_INPUTS) | read))

    def __repr__(self) -> str:
        return f"Env({type(self.task).__name__}, obs={self.observation_size}, act={self.action_size}, dt={self.dt})"

    def reset(self, key: jax.Array) -> State:
        return self.reset_to(*self.task.initial_state(key, self.mj_model))

    def reset_to(self, qpos: jax.Array, qvel: jax.Array) -> State:
        """The state of a new episode that starts at `(qpos, qvel)` (e.g. a fixed data set's)."""
        data = jax.tree.map(jnp.asarray, self.empty_data).replace(qpos=qpos, qvel=qvel)
        data = mjx.forward(self.model, data)
        zero_action = jnp.zeros(self.action_size, qpos.dtype)
        reward, metrics = self.task.reward(data, zero_action, data)
        info = {k: jnp.zeros_like(v) for k, v in metrics.items()}
        info["nonfinite_state"] = jnp.array(False)
        false = jnp.array(False)
        return State(data, self.task.observation(data), jnp.zeros_like(reward), false, false,
                     jnp.array(0, jnp.int32), info)

    def physics_step(self, data: mjx.Data, action: jax.Array) -> mjx.Data:
        """`frame_skip` physics steps (`Task.mjx_step`) under one control; no task logic.

        With more than one substep, each substep is rematerialised (`jax.checkpoint`): a gradient
        saves only the `mjx.Data` between substeps and recomputes each substep's intermediates in
        the backward pass, instead of stacking hundreds of them per substep and again per control
        step. The values are the same computation (a step without a gradient is unchanged, bit for
        bit); a gradient differs in the last bits, as any change to the compiled program can. On
        the Ant (5 substeps) it shrank apg's 32-step training update from 40,254 HLO instructions
        to 32,844, its cold compile from 45.2 s to 30.4 s, and its run from 1.20 s to 0.83 s on the
        2-core CPU; shac's and ahac's likewise (2026-12-05, `python benchmarks/substep_remat.py`;
        docs/gpu.md). A single substep (the cart pole, the double pendulum) has nothing to stack
        and is left as it was.
        """
        return run_substeps(self.task, self.model, data.replace(ctrl=action), self.frame_skip,
                            remat=self.frame_skip > 1)

    def step(self, state: State, action: jax.Array) -> State:
        """One control step. `action` has shape `(action_size,)` (under `vmap`, per environment)."""
        action = jnp.asarray(action)
        if action.shape != (self.action_size,):
            raise UserError(f"expected an action of shape ({self.action_size},) for one environment (a batch "
                             f"goes through jax.vmap(env.step)), got shape {action.shape}")
        action = jnp.clip(action.astype(state.data.qpos.dtype), -1.0, 1.0)
        next_data, finite = self._safe_physics_step(state.data, action)
        next_data, obs, reward, terminated, info = finish_step(self.task, state.data, action, next_data, finite,
                                                               self.restored_fields)
        steps = state.steps + 1
        truncated = (steps >= self.episode_length) & ~terminated
        return State(next_data, obs, reward, terminated, truncated, steps, info)

    @functools.cached_property
    def _safe_physics_step(self):
        return nonfinite_safe(self.physics_step)

    @functools.cached_property
    def cache_key(self) -> tuple | str:
        """What tells this environment's traced functions apart in the trace cache: the task's
        class, class and instance attributes (`trace_cache.object_key`), the compiled model (bit for
        bit) and the episode length; `trace_cache.UNCACHED` for a task whose code is not chaosgym's."""
        task = object_key(self.task)
        if task == UNCACHED:
            return UNCACHED
        model = np.zeros(mujoco.mj_sizeModel(self.mj_model), np.uint8)
        mujoco.mj_saveModel(self.mj_model, None, model)
        return task, hashlib.sha256(model.tobytes()).hexdigest(), self.episode_length

    @functools.cached_property
    def jit_reset(self):
        return cached_jit(self.reset, (self.cache_key, "reset"))

    @functools.cached_property
    def jit_step(self):
        return cached_jit(self.step, (self.cache_key, "step"))
