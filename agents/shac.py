"""SHAC: short-horizon actor-critic (Xu et al., ICLR 2022), with chaosgym's deterministic policy.

Many envs each carry one long trajectory (as in `apg`). An update unrolls a short window (h = 32)
from the carried states and backpropagates, through policy and simulator, the actor loss

    -(1 / (h * envs)) * sum over envs of [ sum_t gamma^t r_t  +  gamma^h V'(s_h) ]

where V' is the target critic. An episode that ends inside the window closes its sum there: a
termination adds nothing more, a time-limit cut adds gamma^(t+1) V'(s_{t+1}) of the state it was
cut in; the env restarts from a fresh state and its discounting starts again. The critic V is then
fitted to TD(lambda) targets computed from the same window with V' (constants to the fit), by Adam
over several epochs of minibatches, and V' moves toward V by Polyak averaging. Actor and critic see
observations normalised by the same running statistics (`apg.Normalizer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from chaosgym.agents.apg import (Normalizer, Window, init_mlp, normalize, normalizer_init, normalizer_update,
                                 policy, reset_batch, unroll)
from chaosgym.agents.optimizer import make_optimizer
from chaosgym.agents.train import Carried, carried_trainer
from chaosgym.functional.env import Env, State
from chaosgym.functional.gradients import highest_precision
from chaosgym.functional.policies import mlp_init

__all__ = ["SHACConfig", "TrainState", "init", "make_update", "policy", "inference_params", "value"]


@dataclass(frozen=True)
class SHACConfig:
    num_envs: int = 64
    window: int = 32
    gamma: float = 0.99
    lam: float = 0.95
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    b1: float = 0.7
    b2: float = 0.95
    critic_iterations: int = 8
    critic_minibatches: int = 4
    target_alpha: float = 0.2  # V' <- alpha V' + (1 - alpha) V after each update (SHAC's 0.2)
    hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    init_output_scale: float = 0.01
    normalize_observations: bool = True

    def __post_init__(self):
        for name in ("num_envs", "window", "critic_iterations", "critic_minibatches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if (self.num_envs * self.window) % self.critic_minibatches:
            raise ValueError(f"critic_minibatches ({self.critic_minibatches}) must divide num_envs x window "
                             f"({self.num_envs * self.window})")
        for name in ("gamma", "lam", "b1", "b2", "target_alpha"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("actor_learning_rate", "critic_learning_rate", "max_grad_norm", "init_output_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.window


class TrainState(NamedTuple):
    params: Any  # policy MLP
    critic: Any
    target_critic: Any
    actor_opt_state: Any
    critic_opt_state: Any
    normalizer: Normalizer
    env_state: State
    env_steps: jax.Array

    @property
    def total_notfinite(self) -> jax.Array:
        """Actor updates skipped for a non-finite gradient (as optax.apply_if_finite's state names it)."""
        return self.actor_opt_state.total_notfinite


def value(critic, stats: Normalizer, obs: jax.Array) -> jax.Array:
    """V(s) of one observation: tanh hidden layers, a linear output."""
    x = normalize(stats, obs)
    for w, b in critic[:-1]:
        x = jnp.tanh(x @ w + b)
    w, b = critic[-1]
    return (x @ w + b)[0]


def _adam(config: SHACConfig, learning_rate: float) -> optax.GradientTransformation:
    return make_optimizer(learning_rate, clip_norm=config.max_grad_norm, b1=config.b1, b2=config.b2)


def init(env: Env, config: SHACConfig, key: jax.Array) -> TrainState:
    key_actor, key_critic, key_envs = jax.random.split(key, 3)
    params = init_mlp(key_actor, (env.observation_size, *config.hidden, env.action_size), config.init_output_scale)
    critic = mlp_init(key_critic, (env.observation_size, *config.critic_hidden, 1))
    return TrainState(params, critic, critic, _adam(config, config.actor_learning_rate).init(params),
                      _adam(config, config.critic_learning_rate).init(critic), normalizer_init(env.observation_size),
                      reset_batch(env, key_envs, config.num_envs), jnp.zeros((), jnp.int32))


def inference_params(state: TrainState) -> dict:
    return {"policy": state.params, "normalizer": state.normalizer}


def actor_objective(window: Window, bootstraps: jax.Array, gamma: float) -> jax.Array:
    """Sum over envs of the discounted returns of the window's episode pieces, each closed by
    gamma^(k+1) V'(s_{k+1}) at its last step k (`bootstraps`, see `td_lambda`)."""
    done = window.terminated | window.truncated
    closes = done.at[-1].set(True)

    def step(carry, inputs):
        acc, discount = carry
        reward, bootstrap, close = inputs
        acc = acc + discount * reward
        total = jnp.where(close, acc + discount * gamma * bootstrap, 0.0)
        return (jnp.where(close, 0.0, acc), jnp.where(close, 1.0, discount * gamma)), total

    zeros = jnp.zeros(window.rewards.shape[1], window.rewards.dtype)
    _, totals = jax.lax.scan(step, (zeros, zeros + 1.0), (window.rewards, bootstraps, closes))
    return jnp.sum(totals)


def td_lambda(window: Window, bootstraps: jax.Array, gamma: float, lam: float) -> jax.Array:
    """TD(lambda) targets G_t = r_t + gamma [(1 - lam) V'(s_{t+1}) + lam G_{t+1}], with
    `bootstraps[t]` = V'(s_{t+1}) (0 after a termination); G_t = r_t + gamma V'(s_{t+1}) where an
    episode or the window ends."""
    done = window.terminated | window.truncated
    closes = done.at[-1].set(True)

    def step(following, inputs):
        reward, bootstrap, close = inputs
        target = reward + gamma * jnp.where(close, bootstrap, (1 - lam) * bootstrap + lam * following)
        return target, target

    _, targets = jax.lax.scan(step, jnp.zeros(window.rewards.shape[1], window.rewards.dtype),
                              (window.rewards, bootstraps, closes), reverse=True)
    return targets


def make_update(env: Env, config: SHACConfig):
    """The pure update `(TrainState, key) -> (TrainState, metrics)`; jit it yourself."""
    actor_tx = _adam(config, config.actor_learning_rate)
    critic_tx = _adam(config, config.critic_learning_rate)
    values = jax.vmap(jax.vmap(value, in_axes=(None, None, 0)), in_axes=(None, None, 0))  # (time, envs)
    h, n = config.window, config.num_envs

    def actor_loss(params, state: TrainState, fresh: State):
        final, window = unroll(env, {"policy": params, "normalizer": state.normalizer}, state.env_state, fresh, h)
        # V'(s_{t+1}) of the state each step ended in (before any restart; 0 after a termination),
        # differentiable in the state: the actor's gradient flows through V'(s_h) into the simulator
        next_values = values(jax.lax.stop_gradient(state.target_critic), state.normalizer, window.next_obs)
        bootstraps = jnp.where(window.terminated, 0.0, next_values)
        loss = -actor_objective(window, bootstraps, config.gamma) / (h * n)
        return loss, (final, window, bootstraps)

    def critic_loss(critic, stats, obs, targets):
        return jnp.mean(jnp.square(jax.vmap(value, in_axes=(None, None, 0))(critic, stats, obs) - targets))

    def fit_critic(state: TrainState, obs, targets, key):
        size = h * n // config.critic_minibatches

        def epoch(carry, key):
            critic, opt_state = carry
            order = jax.random.permutation(key, h * n).reshape(config.critic_minibatches, size)

            def minibatch(carry, idx):
                critic, opt_state = carry
                loss, grad = jax.value_and_grad(critic_loss)(critic, state.normalizer, obs[idx], targets[idx])
                step, opt_state = critic_tx.update(grad, opt_state, critic)
                return (optax.apply_updates(critic, step), opt_state), loss

            carry, losses = jax.lax.scan(minibatch, (critic, opt_state), order)
            return carry, jnp.mean(losses)

        keys = jax.random.split(key, config.critic_iterations)
        return jax.lax.scan(epoch, (state.critic, state.critic_opt_state), keys)

    def _update(state: TrainState, key: jax.Array):
        key_reset, key_critic = jax.random.split(key)
        fresh = reset_batch(env, key_reset, n)
        (loss, (final, window, bootstraps)), grad = jax.value_and_grad(actor_loss, has_aux=True)(
            state.params, state, fresh)
        step, actor_opt_state = actor_tx.update(grad, state.actor_opt_state, state.params)
        params = optax.apply_updates(state.params, step)

        window, bootstraps = jax.lax.stop_gradient((window, bootstraps))
        targets = td_lambda(window, bootstraps, config.gamma, config.lam)
        obs, targets = window.obs.reshape(h * n, -1), targets.reshape(h * n)
        value_loss_before = critic_loss(state.critic, state.normalizer, obs, targets)
        (critic, critic_opt_state), epoch_losses = fit_critic(state, obs, targets, key_critic)
        a = config.target_alpha
        target_critic = jax.tree.map(lambda t, c: a * t + (1 - a) * c, state.target_critic, critic)
        normalizer = normalizer_update(state.normalizer, window.obs) if config.normalize_observations \
            else state.normalizer
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grad), "mean_reward": jnp.mean(window.rewards),
                   "value_loss_before": value_loss_before, "value_loss": epoch_losses[-1],
                   "episodes_done": jnp.sum(window.terminated | window.truncated),
                   "skipped_updates": actor_opt_state.total_notfinite}
        new = TrainState(params, critic, target_critic, actor_opt_state, critic_opt_state, normalizer,
                         jax.lax.stop_gradient(final), state.env_steps + config.steps_per_update)
        return new, metrics

    return highest_precision(_update)


# ---- as a chaosgym agent ----------------------------------------------------------------------

def make_config(num_envs: int, window: int, learning_rate: float, hidden: tuple[int, ...]) -> SHACConfig:
    """chaosgym's shared settings; the critic steps at the actor's learning rate, the rest at SHAC's defaults."""
    return SHACConfig(num_envs, window, actor_learning_rate=learning_rate, critic_learning_rate=learning_rate,
                      hidden=hidden)


CARRIED = Carried(make_config, init, make_update, inference_params, policy)
TRAINER = carried_trainer(CARRIED)
