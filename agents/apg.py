"""APG with carried state (Brax's updated analytic policy gradient).

Each env runs one long trajectory. An update unrolls the deterministic policy for a short window
(32 steps) from where the previous update left every env, backpropagates the window's mean reward
through policy and simulator, and carries the final states to the next update as constants: the
gradient is cut at every window boundary. An env whose episode ends inside the window restarts, in
the same step, from a fresh initial state drawn with the update's key. The gradient's global norm
is clipped (1.0) and Adam steps with b1 = 0.7, b2 = 0.95. The policy sees observations normalised
by running statistics of every observation seen so far, updated after the step and held constant
(stop_gradient) inside the gradient.

    state = init(env, config, key)
    update = jax.jit(make_update(env, config))
    state, metrics = update(state, jax.random.fold_in(key, i))

`policy` evaluates `inference_params(state)` on any observation (what `chaosgym.evaluation`
scores). `shac` builds on the pieces here: the running normaliser and the windowed rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from chaosgym.agents.optimizer import make_optimizer
from chaosgym.agents.train import Carried, carried_trainer
from chaosgym.functional.env import Env, State
from chaosgym.functional.gradients import highest_precision
from chaosgym.functional.policies import mlp_init, mlp_policy

STD_MIN = 1e-6  # floor on the normaliser's standard deviation (Brax's running_statistics)


# ---- running observation statistics -----------------------------------------------------------

class Normalizer(NamedTuple):
    """Mean and summed squared deviation of every observation seen (Chan et al.'s parallel update)."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


def normalizer_init(size: int, dtype=jnp.float32) -> Normalizer:
    return Normalizer(jnp.zeros((), dtype), jnp.zeros(size, dtype), jnp.zeros(size, dtype))


def normalizer_update(stats: Normalizer, obs: jax.Array) -> Normalizer:
    """The statistics with a batch `(..., size)` of observations added."""
    x = jax.lax.stop_gradient(obs).reshape(-1, stats.mean.shape[0])
    n = x.shape[0]
    batch_mean = x.mean(axis=0)
    total = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.m2 + jnp.sum(jnp.square(x - batch_mean), axis=0) + jnp.square(delta) * stats.count * n / total
    return Normalizer(total, mean, m2)


def normalize(stats: Normalizer, obs: jax.Array) -> jax.Array:
    """(obs - mean) / std; identity until the first update. Gradients pass to `obs` only."""
    stats = jax.lax.stop_gradient(stats)
    std = jnp.where(stats.count > 0, jnp.sqrt(stats.m2 / jnp.maximum(stats.count, 1.0)), 1.0)
    return (obs - stats.mean) / jnp.maximum(std, STD_MIN)


# ---- the policy ---------------------------------------------------------------------------------

def init_mlp(key: jax.Array, sizes: tuple[int, ...], output_scale: float) -> list:
    """chaosgym's LeCun-normal MLP with the output layer's weights scaled by `output_scale`.

    A small scale starts the policy near zero action: on the cart pole an action of 0.05 is already
    50 N (force_scale 1000 N), and a full-size initial layer would slam the cart around.
    """
    params = mlp_init(key, sizes)
    w, b = params[-1]
    return params[:-1] + [(w * output_scale, b)]


def policy(params: dict, obs: jax.Array) -> jax.Array:
    """The deterministic tanh MLP of `chaosgym.functional.policies` on normalised observations.

    `params` is `{"normalizer": Normalizer, "policy": mlp params}`, as `inference_params` gives.
    """
    return mlp_policy(params["policy"], normalize(params["normalizer"], obs))


# ---- windows along carried trajectories ---------------------------------------------------------

class Window(NamedTuple):
    """One window of a batch of carried trajectories, time-major `(window, envs, ...)`.

    `obs` is what the policy saw; `next_obs` the observation after the step, before any reset
    (what a critic bootstraps from when the episode was cut by its time limit).
    """

    obs: jax.Array
    rewards: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array


def unroll(env: Env, params: dict, states: State, fresh: State, length: int) -> tuple[State, Window]:
    """`length` steps of `policy` from the batch `states`; an env whose episode ends restarts from
    its state in `fresh` (differentiable through the steps, constant through the restarts)."""
    act = jax.vmap(policy, in_axes=(None, 0))
    step = jax.vmap(env.step)

    def one_step(states, _):
        next_states = step(states, act(params, states.obs))
        done = next_states.terminated | next_states.truncated
        carried = jax.tree.map(lambda f, n: jnp.where(done.reshape((-1,) + (1,) * (n.ndim - 1)), f, n),
                               fresh, next_states)
        return carried, Window(states.obs, next_states.reward, next_states.terminated, next_states.truncated,
                               next_states.obs)

    return jax.lax.scan(one_step, states, None, length=length)


# ---- the agent ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class APGConfig:
    num_envs: int = 64
    window: int = 32
    learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    b1: float = 0.7
    b2: float = 0.95
    hidden: tuple[int, ...] = (64, 64)
    init_output_scale: float = 0.01
    normalize_observations: bool = True

    def __post_init__(self):
        for name in ("num_envs", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("learning_rate", "max_grad_norm", "init_output_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ValueError(f"Adam's b1 and b2 must lie in [0, 1), got {self.b1!r}, {self.b2!r}")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.window


class TrainState(NamedTuple):
    params: Any  # policy MLP
    opt_state: Any
    normalizer: Normalizer
    env_state: State  # the batch of carried states, one per env
    env_steps: jax.Array

    @property
    def total_notfinite(self) -> jax.Array:
        """Updates skipped for a non-finite gradient (named as optax.apply_if_finite's state names it)."""
        return self.opt_state.total_notfinite


def optimizer(config: APGConfig) -> optax.GradientTransformation:
    """Clip the global norm, then Adam; a non-finite gradient is skipped (counted in the state)."""
    return make_optimizer(config.learning_rate, clip_norm=config.max_grad_norm, b1=config.b1, b2=config.b2)


def reset_batch(env: Env, key: jax.Array, num_envs: int) -> State:
    return jax.vmap(env.reset)(jax.random.split(key, num_envs))


def init(env: Env, config: APGConfig, key: jax.Array) -> TrainState:
    key_params, key_envs = jax.random.split(key)
    params = init_mlp(key_params, (env.observation_size, *config.hidden, env.action_size), config.init_output_scale)
    return TrainState(params, optimizer(config).init(params), normalizer_init(env.observation_size),
                      reset_batch(env, key_envs, config.num_envs), jnp.zeros((), jnp.int32))


def inference_params(state) -> dict:
    """What `policy` takes: the policy MLP and the normaliser's statistics."""
    return {"policy": state.params, "normalizer": state.normalizer}


def make_update(env: Env, config: APGConfig):
    """The pure update `(TrainState, key) -> (TrainState, metrics)`; jit it yourself."""
    tx = optimizer(config)

    def loss_fn(params, state: TrainState, fresh: State):
        final, window = unroll(env, {"policy": params, "normalizer": state.normalizer}, state.env_state, fresh,
                               config.window)
        return -jnp.mean(window.rewards), (final, window)

    def _update(state: TrainState, key: jax.Array):
        fresh = reset_batch(env, key, config.num_envs)
        (loss, (final, window)), grad = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state, fresh)
        step, opt_state = tx.update(grad, state.opt_state, state.params)
        params = optax.apply_updates(state.params, step)
        normalizer = normalizer_update(state.normalizer, window.obs) if config.normalize_observations \
            else state.normalizer
        done = window.terminated | window.truncated
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grad), "mean_reward": jnp.mean(window.rewards),
                   "episodes_done": jnp.sum(done), "terminations": jnp.sum(window.terminated),
                   "skipped_updates": opt_state.total_notfinite}
        new = TrainState(params, opt_state, normalizer, jax.lax.stop_gradient(final),
                         state.env_steps + config.steps_per_update)
        return new, metrics

    return highest_precision(_update)


# ---- as a chaosgym agent ----------------------------------------------------------------------

def make_config(num_envs: int, window: int, learning_rate: float, hidden: tuple[int, ...]) -> APGConfig:
    """chaosgym's shared settings (batch_size envs, windows of estimator.horizon steps, the learning
    rate, the policy's hidden layers); the others at their defaults."""
    return APGConfig(num_envs, window, learning_rate, hidden=hidden)


CARRIED = Carried(make_config, init, make_update, inference_params, policy)
TRAINER = carried_trainer(CARRIED)
