"""APG with carried state (Brax's updated analytic policy gradient).

Each env runs one long trajectory. An update unrolls the policy for a short window (32 steps) from
where the previous update left every env, backpropagates the window's mean reward through policy
and simulator, and carries the final states to the next update as constants: the gradient is cut
at every window boundary. An env whose episode ends inside the window restarts, in the same step,
from a fresh initial state drawn with the update's key. The policy sees observations normalised by
running statistics of every observation seen so far, updated after the step and held constant
(stop_gradient) inside the gradient. The network, its output (deterministic or stochastic), the
clipping and the learning-rate schedule are the settings' (`chaosgym.agents.settings.APGSettings`;
Brax's own on the Ant: `chaosgym.presets.ANT`).

    state = init(env, settings, key)
    update = jax.jit(make_update(env, settings))
    state, metrics = update(state, jax.random.fold_in(key, i))

`inference_params(state)` is what the deterministic policy (`carried.policy_functions(settings)[0]`)
evaluates.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from chaosgym.agents.carried import (Normalizer, actor_init, actor_optimizer, normalizer_init, normalizer_update,
                                     policy_functions, policy_name, reset_batch, unroll)
from chaosgym.agents.interfaces import Carried
from chaosgym.agents.settings import APGSettings
from chaosgym.functional.env import Env, State
from chaosgym.functional.gradients import highest_precision

NOISE = 1  # fold_in(update key, NOISE): the key of a stochastic policy's samples


class TrainState(NamedTuple):
    params: Any  # the actor
    opt_state: Any
    normalizer: Normalizer
    env_state: State  # the batch of carried states, one per env
    env_steps: jax.Array

    @property
    def total_notfinite(self) -> jax.Array:
        """Updates skipped for a non-finite gradient (named as optax.apply_if_finite's state names it)."""
        return self.opt_state.total_notfinite


def init_env_key(key: jax.Array) -> jax.Array:
    return jax.random.split(key)[1]


def update_env_key(key: jax.Array) -> jax.Array:
    return key


def init(env: Env, settings: APGSettings, key: jax.Array, env_state: State | None = None) -> TrainState:
    """The first train state; its envs' states are `env_state` where given (what `reset_batch` draws
    with `init_env_key(key)`), else drawn here."""
    key_params, _ = jax.random.split(key)  # the second key is the envs' (`init_env_key`)
    params = actor_init(key_params, env.observation_size, env.action_size, settings)
    env_state = reset_batch(env, init_env_key(key), settings.num_envs) if env_state is None else env_state
    return TrainState(params, actor_optimizer(settings).init(params), normalizer_init(env.observation_size),
                      env_state, jnp.zeros((), jnp.int32))


def inference_params(state) -> dict:
    """What the policy takes: the actor and the normaliser's statistics."""
    return {"policy": state.params, "normalizer": state.normalizer}


def make_update(env: Env, settings: APGSettings):
    """The pure update `(TrainState, key, fresh=None) -> (TrainState, metrics)`; jit it yourself.
    `fresh`, the states that ended episodes restart from, is drawn with `update_env_key(key)` where
    not given."""
    tx = actor_optimizer(settings)
    sample = policy_functions(settings)[1]

    def loss_fn(params, state: TrainState, fresh: State, key):
        final, window = unroll(env, sample, {"policy": params, "normalizer": state.normalizer}, state.env_state,
                               fresh, settings.window, key)
        return -jnp.mean(window.rewards), (final, window)

    def _update(state: TrainState, key: jax.Array, fresh: State | None = None):
        fresh = reset_batch(env, update_env_key(key), settings.num_envs) if fresh is None else fresh
        (loss, (final, window)), grad = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state, fresh, jax.random.fold_in(key, NOISE))
        step, opt_state = tx.update(grad, state.opt_state, state.params)
        params = optax.apply_updates(state.params, step)
        normalizer = normalizer_update(state.normalizer, window.obs) if settings.normalize_observations \
            else state.normalizer
        done = window.terminated | window.truncated
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grad), "mean_reward": jnp.mean(window.rewards),
                   "episodes_done": jnp.sum(done), "terminations": jnp.sum(window.terminated),
                   "skipped_updates": opt_state.total_notfinite}
        new = TrainState(params, opt_state, normalizer, jax.lax.stop_gradient(final),
                         state.env_steps + settings.steps_per_update)
        return new, metrics

    return highest_precision(_update)


def carried(settings: APGSettings) -> Carried:
    """APG as the loop drives it (`chaosgym.agents.loop.carried_core`)."""
    return Carried(init, make_update, inference_params, policy_functions(settings)[0],
                   policy_name(__name__, settings), init_env_key, update_env_key)
