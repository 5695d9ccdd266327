"""Differentiable rollouts: one `lax.scan` over (policy, env step), with the gradient flow as a parameter.

Gradient flows (see docs/design.md), for a policy a_t = pi(o_t) and dynamics s_{t+1} = f(s_t, a_t):

* ``full``: plain backpropagation through time.
* ``truncated``: the state is cut (`stop_gradient`) every `truncation` steps; every window still
  contributes its loss.
* ``modified``: the policy sees `stop_gradient(o_t)`; the simulator's Jacobian path stays
  (Schnell & Thuerey's M).
* ``stopped``: the policy input and the state carried to the next step are both cut: each action
  gets only the credit of the step it acts in (Schnell & Thuerey's S).

The combined update and ES are built from these in `chaosgym.functional.gradients`. `Cuts` states the
cuts of full, modified and stopped as arrays instead of a name, so that runs of different flows
can be vmapped into one program (`chaosgym reproduce` trains all of one grid's flows at once).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from chaosgym.functional import settings
from chaosgym.functional.env import Env, State
from chaosgym.functional.settings import FLOWS  # noqa: F401  (re-exported: defined JAX-free)
from chaosgym.validation import POSITIVE_INT

Policy = Callable[[Any, jax.Array], jax.Array]  # (params, one observation) -> one action


class Trajectory(NamedTuple):
    """What a rollout saw, time-major: `obs`, `actions`, `rewards` have shape (horizon, batch, ...).

    `rewards` are zero after an episode terminates inside the horizon; `alive` is 1 until then.
    `actions` are the policy's own, before the env clips them.
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    alive: jax.Array
    final_state: State

    @property
    def failed(self) -> jax.Array:
        """Per trajectory (batch,): whether the policy gave a non-finite action while the episode
        was alive. Actions after an episode ended are never taken, so they do not count."""
        nonfinite = ~jnp.all(jnp.isfinite(self.actions), axis=-1)
        return jnp.any(nonfinite & (self.alive > 0), axis=0)


class Cuts(NamedTuple):
    """The per-step gradient cuts of a flow as booleans that may be traced (one per vmapped run):
    `input` stops the policy's input, `state` the state carried into each step. full is
    `Cuts(False, False)`, modified `Cuts(True, False)`, stopped `Cuts(True, True)`."""

    input: jax.Array
    state: jax.Array

    @classmethod
    def of(cls, flow: str) -> Cuts:
        if flow not in ("full", "modified", "stopped"):
            raise ValueError(f"Cuts describe the flows full, modified and stopped, not {flow!r}")
        return cls(jnp.asarray(flow != "full"), jnp.asarray(flow == "stopped"))


def _cut_where(cut: jax.Array, tree):
    return jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x), tree)


def check_flow(flow: str | Cuts, truncation: int | None, horizon: int) -> None:
    if not isinstance(flow, Cuts):
        settings.check_flow(flow, truncation, horizon)


def _stop_every(state: State, t: jax.Array, truncation: int) -> State:
    cut = (t > 0) & (t % truncation == 0)
    return jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x), state)


def rollout(
    env: Env,
    policy: Policy,
    params: Any,
    states: State,
    horizon: int,
    flow: str | Cuts = "full",
    truncation: int | None = None,
    remat: bool = False,
    objective: str | Callable[[jax.Array, Any], jax.Array] = "return",
) -> tuple[jax.Array, Trajectory]:
    """Unroll `policy` for `horizon` steps from a batch of states; return (loss, trajectory).

    `states` is a batch (leading axis) of `State`s, e.g. `jax.jit(jax.vmap(env.reset))(keys)` (jit
    it: an unjitted `jax.vmap(env.reset)` runs MJX's reset op by op, 40-65 s on a 2-core CPU). The loss is
    the mean over the batch of the objective of each trajectory: one of the task's named
    objectives (`Task.objectives`; `return` by default) or a function `loss(rewards, final_data)`.
    A trajectory whose policy gave a non-finite action (`Trajectory.failed`) has a NaN loss, so the
    batch's loss and its gradient are NaN: the env ends such an episode with reward 0 (its rule for a
    non-finite state), and without this a policy that outputs NaN would score better than any working one.
    `flow` is a name of `FLOWS` or `Cuts` (whose cuts may differ between vmapped runs). With
    `remat`, the scan is split into about sqrt(horizon) checkpointed chunks, so the backward pass
    stores O(sqrt(horizon)) states instead of every intermediate of every step.
    """
    POSITIVE_INT("horizon", horizon)
    check_flow(flow, truncation, horizon)
    objective = env.task.objective(objective) if isinstance(objective, str) else objective
    if jnp.ndim(states.reward) != 1:
        raise ValueError("rollout needs a batch of states with a leading batch axis, e.g. "
                         f"jax.vmap(env.reset)(keys); got states of reward shape {jnp.shape(states.reward)}")
    act = jax.vmap(policy, in_axes=(None, 0))
    action_shape = jax.eval_shape(act, params, states.obs).shape[1:]
    if action_shape != (env.action_size,):
        raise ValueError(f"the policy must map one observation of shape {states.obs.shape[1:]} to one action of "
                         f"shape ({env.action_size},); it returned shape {action_shape}")
    step = jax.vmap(env.step)

    def one_step(carry, t):
        state, alive = carry
        if isinstance(flow, Cuts):
            state = _cut_where(flow.state, state)
            obs = _cut_where(flow.input, state.obs)
        elif flow == "truncated":
            state = _stop_every(state, t, truncation)
        elif flow == "stopped":  # cut at the start of each step, so the last step keeps its credit
            state = jax.lax.stop_gradient(state)
        if not isinstance(flow, Cuts):
            obs = jax.lax.stop_gradient(state.obs) if flow in ("modified", "stopped") else state.obs
        action = act(params, obs)
        next_state = step(state, action)
        reward = next_state.reward * alive
        next_alive = alive * (1.0 - next_state.terminated.astype(alive.dtype))
        return (next_state, next_alive), (state.obs, action, reward, alive)

    alive = jnp.ones(states.reward.shape, states.reward.dtype)
    steps = jnp.arange(horizon)
    if remat:
        chunk = max(1, math.isqrt(horizon))

        @jax.checkpoint
        def run_chunk(carry, ts):
            return jax.lax.scan(one_step, carry, ts)

        whole = horizon // chunk * chunk
        carry, outs = jax.lax.scan(run_chunk, (states, alive), steps[:whole].reshape(-1, chunk))
        outs = jax.tree.map(lambda x: x.reshape((whole,) + x.shape[2:]), outs)
        if whole < horizon:
            carry, rest = run_chunk(carry, steps[whole:])
            outs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outs, rest)
    else:
        carry, outs = jax.lax.scan(one_step, (states, alive), steps)
    final_state, _ = carry
    obs, actions, rewards, alive = outs
    trajectory = Trajectory(obs, actions, rewards, alive, final_state)
    losses = jax.vmap(objective, in_axes=(1, 0))(rewards, final_state.data)
    # multiplied, not selected: the backward pass carries the NaN too, so the gradient is NaN
    # (an update skipped by `apply_if_finite`) instead of the other trajectories' alone
    losses = losses * jnp.where(trajectory.failed, jnp.nan, 1.0).astype(losses.dtype)
    return jnp.mean(losses), trajectory
