"""The gradient estimators as agents: a policy network, fresh initial states every update, Adam.

Each update draws `batch_size` fresh initial states, estimates the gradient of the rollout loss
(the settings' objective, the return by default) with the estimator (`chaosgym.functional.gradients`),
and applies the optimiser `optax.apply_if_finite(optax.chain(clip, clip_by_global_norm, adam))`
(`chaosgym.agents.optimizer`). A non-finite gradient, or one whose step would make the parameters
non-finite, is skipped; the optimiser state counts the skips. Every key is `fold_in(seed, update)`,
so a run resumed from its last checkpoint gives exactly the parameters of an uninterrupted one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

import chaosgym
from chaosgym.agents import optimizer
from chaosgym.agents.interfaces import Core
from chaosgym.agents.settings import EstimatorSettings
from chaosgym.functional.gradients import make_estimator
from chaosgym.functional.policies import policy_functions
from chaosgym.functional.settings import EstimatorConfig
from chaosgym.functional.trace_cache import cached_jit, keyed_by_arguments


@functools.lru_cache(maxsize=None)
def policy_of(env: chaosgym.Env, name: str):
    """`(init, apply)` of a policy kind on `env`; one `apply` per pair, so compiles are shared."""
    return policy_functions(name, env.task)


def make_optimizer(estimator: EstimatorConfig, learning_rate: float) -> optax.GradientTransformation:
    """Adam after the estimator's clipping; a step with a non-finite gradient is skipped and counted."""
    return optimizer.make_optimizer(learning_rate, clip_value=estimator.clip_value, clip_norm=estimator.clip_norm)


@functools.lru_cache(maxsize=None)
@keyed_by_arguments
def compiled_update(env, estimator: EstimatorConfig, batch_size: int, learning_rate: float, policy: str = "tanh",
                    *, key):
    """`(optimizer, update)`: one jitted update, shared by every seed of a configuration."""
    apply = policy_of(env, policy)[1]
    estimate = make_estimator(env, apply, estimator)  # the raw gradient: the optimiser clips it
    tx = make_optimizer(estimator, learning_rate)

    def update(params, opt_state, seed_key, index):
        key_states, key_estimate = jax.random.split(jax.random.fold_in(seed_key, index))
        states = jax.vmap(env.reset)(jax.random.split(key_states, batch_size))
        grad, diagnostics = estimate(params, states, key_estimate)
        # a step that would make the parameters non-finite is skipped as a non-finite gradient is
        step, _ = tx.update(grad, opt_state, params)
        lands_finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(p)) for p in
                                          jax.tree.leaves(optax.apply_updates(params, step))]))
        grad = jax.tree.map(lambda g: jnp.where(lands_finite, g, jnp.nan), grad)
        step, opt_state = tx.update(grad, opt_state, params)
        return optax.apply_updates(params, step), opt_state, diagnostics

    return tx, cached_jit(update, key)


def core(env: chaosgym.Env, settings: EstimatorSettings) -> Core:
    """An estimator agent on `env`: the policy network of `settings.policy`, its gradient by `settings.estimator`."""
    init_policy, apply = policy_of(env, settings.policy)
    tx, update = compiled_update(env, settings.estimator, settings.batch_size, settings.learning_rate,
                                 settings.policy)

    def init(key):
        params = init_policy(key, env.observation_size, env.action_size, settings.hidden)
        return params, tx.init(params)

    return Core(init, update, apply, settings.policy)
