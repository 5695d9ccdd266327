"""SHAC: short-horizon actor-critic (Xu et al., ICLR 2022).

Many envs each carry one long trajectory (as in `apg`). An update unrolls a short window (h = 32)
from the carried states and backpropagates, through policy and simulator, the actor loss

    -(1 / (h * envs)) * sum over envs of [ sum_t gamma^t r_t  +  gamma^h V'(s_h) ]

where V' is the target critic. An episode that ends inside the window closes its sum there: a
termination adds nothing more, a time-limit cut adds gamma^(t+1) V'(s_{t+1}) of the state it was
cut in; the env restarts from a fresh state and its discounting starts again. The critic V is then
fitted to TD(lambda) targets computed from the same window with V' (constants to the fit), by Adam
over several epochs of minibatches, and V' moves toward V by Polyak averaging. Actor and critic see
observations normalised by the same running statistics (`carried.Normalizer`). The networks,
the actor's output (DiffRL's is a Gaussian squashed by tanh) and the learning-rate schedules are
the settings' (`chaosgym.agents.settings.SHACSettings`; DiffRL's own on the Ant:
`chaosgym.presets.ANT`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from chaosgym.agents.carried import (Normalizer, Window, actor_init, actor_optimizer, critic_init, critic_optimizer,
                                     normalizer_init, normalizer_update, policy_functions, policy_name, reset_batch,
                                     unroll, value)
from chaosgym.agents.interfaces import Carried
from chaosgym.agents.settings import CriticSettings, SHACSettings
from chaosgym.functional.env import Env, State
from chaosgym.functional.gradients import highest_precision

__all__ = ["TrainState", "init", "make_update", "inference_params", "carried", "actor_objective", "td_lambda",
           "fit_critic"]

NOISE = 1  # fold_in(update key, NOISE): the key of a stochastic policy's samples
CRITIC_MAX_ITERATIONS = 64  # an early-stopped critic fit (AHAC's): at most this many epochs,
CRITIC_FLAT = 0.2  # until the mean difference of the last five epoch losses is below this
CRITIC_FLAT_WINDOW = 5


class TrainState(NamedTuple):
    params: Any  # the actor
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


def init_env_key(key: jax.Array) -> jax.Array:
    return jax.random.split(key, 3)[2]


def update_env_key(key: jax.Array) -> jax.Array:
    return jax.random.split(key)[0]


def init(env: Env, settings: SHACSettings, key: jax.Array, env_state: State | None = None) -> TrainState:
    """The first train state; its envs' states are `env_state` where given (what `reset_batch` draws
    with `init_env_key(key)`), else drawn here."""
    key_actor, key_critic, _ = jax.random.split(key, 3)  # the third key is the envs' (`init_env_key`)
    env_state = reset_batch(env, init_env_key(key), settings.num_envs) if env_state is None else env_state
    params = actor_init(key_actor, env.observation_size, env.action_size, settings)
    critic = critic_init(key_critic, env.observation_size, settings)
    return TrainState(params, critic, critic, actor_optimizer(settings).init(params),
                      critic_optimizer(settings).init(critic), normalizer_init(env.observation_size),
                      env_state, jnp.zeros((), jnp.int32))


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


def fit_critic(settings: CriticSettings, loss: callable, tx: optax.GradientTransformation, critic, opt_state,
               obs: jax.Array, targets: jax.Array, key: jax.Array):
    """Adam on `loss(critic, obs, targets)` over shuffled minibatches: `critic_iterations` epochs,
    or (None) until the epoch losses flatten, at most 64 (AHAC's published early stopping: after
    each epoch, stop once the mean difference of the five losses before it is below 0.2 in absolute
    value; that epoch's update is kept, its loss not counted). Returns the new `(critic, opt_state)`,
    the last counted epoch's mean loss and the epochs run."""
    samples = obs.shape[0]
    size = samples // settings.critic_minibatches

    def epoch(carry, key):
        order = jax.random.permutation(key, samples).reshape(settings.critic_minibatches, size)

        def minibatch(carry, idx):
            critic, opt_state = carry
            value_loss, grad = jax.value_and_grad(loss)(critic, obs[idx], targets[idx])
            step, opt_state = tx.update(grad, opt_state, critic)
            return (optax.apply_updates(critic, step), opt_state), value_loss

        carry, losses = jax.lax.scan(minibatch, carry, order)
        return carry, jnp.mean(losses)

    start = (critic, opt_state)
    if settings.critic_iterations is not None:
        carry, losses = jax.lax.scan(epoch, start, jax.random.split(key, settings.critic_iterations))
        return carry, losses[-1], jnp.asarray(settings.critic_iterations)

    def body(loop):
        carry, last, count, flat, value_loss = loop
        carry, new_loss = epoch(carry, jax.random.fold_in(key, count))
        flat = (count >= CRITIC_FLAT_WINDOW) & (jnp.abs((last[-1] - last[0]) / (CRITIC_FLAT_WINDOW - 1)) < CRITIC_FLAT)
        last = jnp.where(flat, last, jnp.roll(last, -1).at[-1].set(new_loss))
        return carry, last, count + 1, flat, jnp.where(flat, value_loss, new_loss)

    go_on = lambda loop: (loop[2] < CRITIC_MAX_ITERATIONS) & ~loop[3]
    zero = jnp.zeros((), obs.dtype)
    carry, _, count, _, value_loss = jax.lax.while_loop(
        go_on, body, (start, jnp.zeros(CRITIC_FLAT_WINDOW, obs.dtype), jnp.asarray(0), jnp.asarray(False), zero))
    return carry, value_loss, count


def make_update(env: Env, settings: SHACSettings):
    """The pure update `(TrainState, key, fresh=None) -> (TrainState, metrics)`; jit it yourself.
    `fresh`, the states that ended episodes restart from, is drawn with `update_env_key(key)` where
    not given."""
    actor_tx, critic_tx = actor_optimizer(settings), critic_optimizer(settings)
    sample = policy_functions(settings)[1]
    one_value = lambda critic, stats, obs: value(critic, stats, obs, settings.activation)
    values = jax.vmap(jax.vmap(one_value, in_axes=(None, None, 0)), in_axes=(None, None, 0))  # (time, envs)
    h, n = settings.window, settings.num_envs

    def actor_loss(params, state: TrainState, fresh: State, key):
        final, window = unroll(env, sample, {"policy": params, "normalizer": state.normalizer}, state.env_state,
                               fresh, h, key)
        # V'(s_{t+1}) of the state each step ended in (before any restart; 0 after a termination),
        # differentiable in the state: the actor's gradient flows through V'(s_h) into the simulator
        next_values = values(jax.lax.stop_gradient(state.target_critic), state.normalizer, window.next_obs)
        bootstraps = jnp.where(window.terminated, 0.0, next_values)
        loss = -actor_objective(window, bootstraps, settings.gamma) / (h * n)
        return loss, (final, window, bootstraps)

    def _update(state: TrainState, key: jax.Array, fresh: State | None = None):
        _, key_critic = jax.random.split(key)  # the first key is the restarts' (`update_env_key`)
        fresh = reset_batch(env, update_env_key(key), n) if fresh is None else fresh
        (loss, (final, window, bootstraps)), grad = jax.value_and_grad(actor_loss, has_aux=True)(
            state.params, state, fresh, jax.random.fold_in(key, NOISE))
        step, actor_opt_state = actor_tx.update(grad, state.actor_opt_state, state.params)
        params = optax.apply_updates(state.params, step)

        window, bootstraps = jax.lax.stop_gradient((window, bootstraps))
        targets = td_lambda(window, bootstraps, settings.gamma, settings.lam)
        obs, targets = window.obs.reshape(h * n, -1), targets.reshape(h * n)
        critic_loss = lambda critic, obs, targets: jnp.mean(jnp.square(
            jax.vmap(one_value, in_axes=(None, None, 0))(critic, state.normalizer, obs) - targets))
        value_loss_before = critic_loss(state.critic, obs, targets)
        (critic, critic_opt_state), value_loss, _ = fit_critic(settings, critic_loss, critic_tx, state.critic,
                                                               state.critic_opt_state, obs, targets, key_critic)
        a = settings.target_alpha
        target_critic = jax.tree.map(lambda t, c: a * t + (1 - a) * c, state.target_critic, critic)
        normalizer = normalizer_update(state.normalizer, window.obs) if settings.normalize_observations \
            else state.normalizer
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grad), "mean_reward": jnp.mean(window.rewards),
                   "value_loss_before": value_loss_before, "value_loss": value_loss,
                   "episodes_done": jnp.sum(window.terminated | window.truncated),
                   "skipped_updates": actor_opt_state.total_notfinite}
        new = TrainState(params, critic, target_critic, actor_opt_state, critic_opt_state, normalizer,
                         jax.lax.stop_gradient(final), state.env_steps + settings.steps_per_update)
        return new, metrics

    return highest_precision(_update)


def carried(settings: SHACSettings) -> Carried:
    """SHAC as the loop drives it (`chaosgym.agents.loop.carried_core`)."""
    return Carried(init, make_update, inference_params, policy_functions(settings)[0],
                   policy_name(__name__, settings), init_env_key, update_env_key)
