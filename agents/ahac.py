"""AHAC: adaptive-horizon actor-critic (Georgiev, Srinivasan, Xu, Heiden & Garg, ICML 2024).

SHAC (`shac`) with the length of the backpropagated piece learnt by a dual ascent on contact
stiffness, as the authors' published code does it (github.com/imgeorgiev/DiffRL,
`src/shac/algorithms/ahac.py` and `scripts/cfg/alg/ahac.yaml`). Many envs each carry one long
trajectory. An update unrolls a window of `window` steps (the maximum horizon) and cuts each env's
gradient every `round(H)` steps of its current piece: at a cut the state goes on as a constant
(stop_gradient) and the piece is closed by the critic, gamma^(k+1) V(s_{k+1}); an episode end
closes it too (a termination with nothing, a time-limit cut with the critic), and the window's
end. The actor loss is minus the discounted pieces' sum over envs and steps, divided by
`window * num_envs`, as in `shac`. The critic is fitted to TD(lambda) targets of the same pieces.

The horizon rule, the published one: with s_t the stiffness of step t of the window averaged over
the envs (for t < round(H)), the per-step duals and the horizon move as

    lambda_t <- lambda - beta (C - s_t),   H <- clip(H + beta sum_t lambda_t, min_window, window),

and the next update starts every lambda_t from lambda_0 (the published code refills its dual
vector with lambda[0] at each new horizon), so the state is the two scalars H and lambda. H starts
at `min_window`, lambda at 0; C = 500 (contact_threshold), beta = 5e-4 (lambd_lr of ahac.yaml).
So lambda integrates the first step's excess stiffness s_0 - C and H moves by beta times the sum
of the duals: as published, H grows while the stiffness has exceeded C on balance and falls back
towards `min_window` while it has stayed below (kept as published, though the paper's aim is
a horizon that avoids stiff contact).

The stiffness signal. The published code reads dflex's per-body contact forces divided by the
body accelerations (those below 1 raised to 1) and takes the norm. chaosgym's MJX state gives
the generalised constraint force `qfrc_constraint` (contacts, joint limits, equality
constraints: J^T of the solver's forces) and `qacc`, one entry per degree of freedom, so the signal
here is ||qfrc_constraint / max(|qacc|, 1)|| of the state after the step. On a task without
contacts or limits (the cart pole: no geom collides) it is 0, the dual only falls, and H stays
at `min_window`: AHAC is then SHAC with pieces of `min_window` steps, a double critic and no
target network. On the Ant it measures its contacts and joint limits: under random actions (8 envs, 60 steps)
50 on average, 130 at the 90th percentile, 222 at most, all below the published C = 500 (set in
dflex's units), so there too H stays at `min_window` unless `contact_threshold` is lowered.

Also as published: Adam with b1 = 0.7, b2 = 0.95 for actor and critic at 2e-3, the actor's
gradient norm clipped to 1, gamma = 0.99, lambda = 0.95, observations normalised by running
statistics, four critic minibatches, and critic epochs until the loss flattens (at most 64; stop
once the mean difference of the last five epoch losses is below 0.2 in absolute value) unless
`critic_iterations` fixes their number. There is no target critic: the critic bootstraps itself.

Where this differs, and why:
* The window is always `window` steps (a `lax.scan` has a fixed length, and chaosgym counts env
  steps per update in advance), cut into pieces of round(H); the published code simulates round(H)
  steps per epoch. One update here is thus one actor step over several pieces per env.
* The double critic is two independently initialised critics and bootstraps with their minimum, as
  the paper describes; in the published code both heads are built from one list of layers
  (`nn.Sequential(*modules)` twice), so they share their weights. Each critic is `shac.value`
  (tanh, LeCun-normal init), not the published ELU + LayerNorm MLP, so that one critic definition
  serves both agents.
* The published learning rates fall linearly to 1e-5 over a run whose length it knows; an update
  here does not know the run's length, so they stay constant.
* The published code divides the forces by max(a, 1), i.e. by 1 wherever a < 1, large negative
  accelerations included; here by max(|a|, 1), as the code's earlier form (clipping each sign away
  from 0) did.
* The policy is chaosgym's deterministic tanh MLP (`apg.policy`), not the published stochastic one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from chaosgym.agents.apg import (Normalizer, Window, init_mlp, normalizer_init, normalizer_update, policy,
                                 reset_batch)
from chaosgym.agents.optimizer import make_optimizer
from chaosgym.agents.shac import actor_objective, td_lambda, value
from chaosgym.agents.train import Carried, carried_trainer
from chaosgym.functional.env import Env, State
from chaosgym.functional.gradients import highest_precision
from chaosgym.functional.policies import mlp_init

__all__ = ["AHACConfig", "TrainState", "init", "make_update", "make_config", "policy", "inference_params",
           "stiffness", "adapt_horizon", "critic_targets", "with_cuts", "unroll_with_cuts"]

CRITIC_MAX_ITERATIONS = 64  # the published early-stopped critic fit: at most this many epochs,
CRITIC_FLAT = 0.2  # until the mean difference of the last five epoch losses is below this
CRITIC_FLAT_WINDOW = 5


@dataclass(frozen=True)
class AHACConfig:
    num_envs: int = 64
    window: int = 64  # the maximum horizon (steps_max)
    min_window: int = 8  # the minimum horizon (steps_min), where H starts
    contact_threshold: float = 500.0  # C
    dual_learning_rate: float = 5e-4  # beta, for the dual and the horizon alike
    gamma: float = 0.99
    lam: float = 0.95
    actor_learning_rate: float = 2e-3
    critic_learning_rate: float = 2e-3
    max_grad_norm: float = 1.0
    b1: float = 0.7
    b2: float = 0.95
    critic_iterations: int | None = None  # None: epochs until the critic's loss flattens (at most 64)
    critic_minibatches: int = 4
    num_critics: int = 2
    hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    init_output_scale: float = 0.01
    normalize_observations: bool = True

    def __post_init__(self):
        for name in ("num_envs", "window", "min_window", "critic_minibatches", "num_critics"):
            value_ = getattr(self, name)
            if isinstance(value_, bool) or not isinstance(value_, int) or value_ < 1:
                raise ValueError(f"{name} must be a positive integer, got {value_!r}")
        if self.critic_iterations is not None and (isinstance(self.critic_iterations, bool)
                                                   or not isinstance(self.critic_iterations, int)
                                                   or self.critic_iterations < 1):
            raise ValueError(f"critic_iterations must be a positive integer or None (early stopping), "
                             f"got {self.critic_iterations!r}")
        if self.min_window > self.window:
            raise ValueError(f"min_window ({self.min_window}) must not exceed window ({self.window})")
        if (self.num_envs * self.window) % self.critic_minibatches:
            raise ValueError(f"critic_minibatches ({self.critic_minibatches}) must divide num_envs x window "
                             f"({self.num_envs * self.window})")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ValueError(f"Adam's b1 and b2 must lie in [0, 1), got {self.b1!r}, {self.b2!r}")
        for name in ("actor_learning_rate", "critic_learning_rate", "max_grad_norm", "init_output_scale",
                     "dual_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.contact_threshold >= 0:
            raise ValueError(f"contact_threshold must be >= 0, got {self.contact_threshold!r}")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.window


class TrainState(NamedTuple):
    params: Any  # policy MLP
    critics: Any  # num_critics critics, stacked on a leading axis
    actor_opt_state: Any
    critic_opt_state: Any
    normalizer: Normalizer
    env_state: State
    env_steps: jax.Array
    horizon: jax.Array  # H, a float in [min_window, window]; pieces are round(H) steps
    dual: jax.Array  # lambda, the dual every step's lambda_t starts from

    @property
    def total_notfinite(self) -> jax.Array:
        """Actor updates skipped for a non-finite gradient (as optax.apply_if_finite's state names it)."""
        return self.actor_opt_state.total_notfinite


def stiffness(data) -> jax.Array:
    """||qfrc_constraint / max(|qacc|, 1)|| of an MJX state (or of each of a batch): the constraint forces per unit of
    acceleration (the published signal on dflex's contact forces), a constant to every gradient."""
    force, acc = jax.lax.stop_gradient((data.qfrc_constraint, data.qacc))
    return jnp.sqrt(jnp.sum(jnp.square(force / jnp.maximum(jnp.abs(acc), 1.0)), axis=-1))


def adapt_horizon(horizon: jax.Array, dual: jax.Array, stiffnesses: jax.Array, config: AHACConfig):
    """The published rule on one window's `stiffnesses` (window, envs): `(H, lambda)` after it.

    Only the first round(H) steps count (the published rollout is that long), each through
    lambda_t = lambda - beta (C - mean over envs of its stiffness); lambda_0 carries on."""
    used = jnp.round(horizon)
    beta = config.dual_learning_rate
    duals = dual - beta * (config.contact_threshold - jnp.mean(stiffnesses, axis=1))
    counted = jnp.arange(stiffnesses.shape[0]) < used
    horizon = jnp.clip(horizon + beta * jnp.sum(jnp.where(counted, duals, 0.0)), config.min_window, config.window)
    return horizon, duals[0]


def with_cuts(window: Window, cuts: jax.Array) -> Window:
    """The window with the horizon cuts closing pieces as a time limit does (bootstrapped by the critic)."""
    return window._replace(truncated=window.truncated | cuts)


def critic_targets(window: Window, cuts: jax.Array, bootstraps: jax.Array, gamma: float, lam: float) -> jax.Array:
    """TD(lambda) targets of the window's pieces (`shac.td_lambda`), a cut closing one like an episode end."""
    return td_lambda(with_cuts(window, cuts), bootstraps, gamma, lam)


def unroll_with_cuts(env: Env, params: dict, states: State, fresh: State, length: int, piece: jax.Array):
    """`length` steps of `policy` from the batch `states`; each env's gradient is cut after every
    `piece` steps of its current piece (the state goes on as a constant), an env whose episode ends
    restarts from its state in `fresh` and begins a new piece. The final states, the `Window`, where
    the cuts fell, and each step's stiffness, all time-major."""
    act = jax.vmap(policy, in_axes=(None, 0))
    step = jax.vmap(env.step)
    broadcast = lambda mask, x: mask.reshape((-1,) + (1,) * (x.ndim - 1))

    def one_step(carry, _):
        states, since = carry
        next_states = step(states, act(params, states.obs))
        done = next_states.terminated | next_states.truncated
        since = since + 1
        cut = (since >= piece) & ~done
        cut_states = jax.tree.map(lambda n: jnp.where(broadcast(cut, n), jax.lax.stop_gradient(n), n), next_states)
        carried = jax.tree.map(lambda f, n: jnp.where(broadcast(done, n), f, n), fresh, cut_states)
        since = jnp.where(done | cut, 0, since)
        window = Window(states.obs, next_states.reward, next_states.terminated, next_states.truncated,
                        next_states.obs)
        return (carried, since), (window, cut, stiffness(next_states.data))

    since = jnp.zeros(states.reward.shape, jnp.int32)
    (final, _), (window, cuts, stiffnesses) = jax.lax.scan(one_step, (states, since), None, length=length)
    return final, window, cuts, stiffnesses


def _adam(config: AHACConfig, learning_rate: float, clip_norm: float | None) -> optax.GradientTransformation:
    return make_optimizer(learning_rate, clip_norm=clip_norm, b1=config.b1, b2=config.b2)


def _actor_tx(config: AHACConfig) -> optax.GradientTransformation:
    return _adam(config, config.actor_learning_rate, config.max_grad_norm)


def _critic_tx(config: AHACConfig) -> optax.GradientTransformation:
    return _adam(config, config.critic_learning_rate, None)  # the published critic is not clipped


def init(env: Env, config: AHACConfig, key: jax.Array) -> TrainState:
    key_actor, key_critic, key_envs = jax.random.split(key, 3)
    params = init_mlp(key_actor, (env.observation_size, *config.hidden, env.action_size), config.init_output_scale)
    sizes = (env.observation_size, *config.critic_hidden, 1)
    critics = jax.vmap(lambda k: mlp_init(k, sizes))(jax.random.split(key_critic, config.num_critics))
    return TrainState(params, critics, _actor_tx(config).init(params), _critic_tx(config).init(critics),
                      normalizer_init(env.observation_size), reset_batch(env, key_envs, config.num_envs),
                      jnp.zeros((), jnp.int32), jnp.asarray(config.min_window, jnp.float32),
                      jnp.zeros((), jnp.float32))


def inference_params(state: TrainState) -> dict:
    return {"policy": state.params, "normalizer": state.normalizer}


def make_update(env: Env, config: AHACConfig):
    """The pure update `(TrainState, key) -> (TrainState, metrics)`; jit it yourself."""
    actor_tx, critic_tx = _actor_tx(config), _critic_tx(config)
    each_critic = jax.vmap(value, in_axes=(0, None, None))
    lowest = lambda critics, stats, obs: jnp.min(each_critic(critics, stats, obs))
    values = jax.vmap(jax.vmap(lowest, in_axes=(None, None, 0)), in_axes=(None, None, 0))  # (time, envs)
    h, n = config.window, config.num_envs

    def actor_loss(params, state: TrainState, fresh: State, piece):
        final, window, cuts, stiffnesses = unroll_with_cuts(
            env, {"policy": params, "normalizer": state.normalizer}, state.env_state, fresh, h, piece)
        # V(s_{t+1}) of the state each step ended in (0 after a termination), differentiable in the
        # state: the gradient of a piece flows through the critic at its cut into the simulator
        next_values = values(jax.lax.stop_gradient(state.critics), state.normalizer, window.next_obs)
        bootstraps = jnp.where(window.terminated, 0.0, next_values)
        loss = -actor_objective(with_cuts(window, cuts), bootstraps, config.gamma) / (h * n)
        return loss, (final, window, cuts, stiffnesses, bootstraps)

    def critic_loss(critics, stats, obs, targets):
        predictions = jax.vmap(each_critic, in_axes=(None, None, 0))(critics, stats, obs)  # (samples, critics)
        return jnp.mean(jnp.square(predictions - targets[:, None]))

    def epoch(carry, key, stats, obs, targets):
        size = h * n // config.critic_minibatches
        order = jax.random.permutation(key, h * n).reshape(config.critic_minibatches, size)

        def minibatch(carry, idx):
            critics, opt_state = carry
            loss, grad = jax.value_and_grad(critic_loss)(critics, stats, obs[idx], targets[idx])
            step, opt_state = critic_tx.update(grad, opt_state, critics)
            return (optax.apply_updates(critics, step), opt_state), loss

        carry, losses = jax.lax.scan(minibatch, carry, order)
        return carry, jnp.mean(losses)

    def fit_critic(state: TrainState, obs, targets, key):
        """(critics, opt_state), the last counted epoch's loss, the epochs run."""
        run_epoch = lambda carry, key: epoch(carry, key, state.normalizer, obs, targets)
        start = (state.critics, state.critic_opt_state)
        if config.critic_iterations is not None:
            carry, losses = jax.lax.scan(run_epoch, start, jax.random.split(key, config.critic_iterations))
            return carry, losses[-1], jnp.asarray(config.critic_iterations)

        def body(loop):
            carry, last, count, flat, loss = loop
            carry, new_loss = run_epoch(carry, jax.random.fold_in(key, count))
            # as published: after each epoch, stop if the five losses before it were flat (its
            # update is kept, its loss is not counted)
            flat = (count >= CRITIC_FLAT_WINDOW) & (
                jnp.abs((last[-1] - last[0]) / (CRITIC_FLAT_WINDOW - 1)) < CRITIC_FLAT)
            last = jnp.where(flat, last, jnp.roll(last, -1).at[-1].set(new_loss))
            return carry, last, count + 1, flat, jnp.where(flat, loss, new_loss)

        go_on = lambda loop: (loop[2] < CRITIC_MAX_ITERATIONS) & ~loop[3]
        carry, _, count, _, loss = jax.lax.while_loop(
            go_on, body, (start, jnp.zeros(CRITIC_FLAT_WINDOW), jnp.asarray(0), jnp.asarray(False), jnp.asarray(0.0)))
        return carry, loss, count

    def _update(state: TrainState, key: jax.Array):
        key_reset, key_critic = jax.random.split(key)
        fresh = reset_batch(env, key_reset, n)
        piece = jnp.round(state.horizon).astype(jnp.int32)
        (loss, (final, window, cuts, stiffnesses, bootstraps)), grad = jax.value_and_grad(actor_loss, has_aux=True)(
            state.params, state, fresh, piece)
        step, actor_opt_state = actor_tx.update(grad, state.actor_opt_state, state.params)
        params = optax.apply_updates(state.params, step)

        window, bootstraps = jax.lax.stop_gradient((window, bootstraps))
        targets = critic_targets(window, cuts, bootstraps, config.gamma, config.lam)
        obs, targets = window.obs.reshape(h * n, -1), targets.reshape(h * n)
        value_loss_before = critic_loss(state.critics, state.normalizer, obs, targets)
        (critics, critic_opt_state), value_loss, critic_epochs = fit_critic(state, obs, targets, key_critic)
        horizon, dual = adapt_horizon(state.horizon, state.dual, stiffnesses, config)
        normalizer = normalizer_update(state.normalizer, window.obs) if config.normalize_observations \
            else state.normalizer
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grad), "mean_reward": jnp.mean(window.rewards),
                   "horizon": piece, "next_horizon": horizon, "dual": dual, "stiffness": jnp.mean(stiffnesses),
                   "horizon_cuts": jnp.sum(cuts), "value_loss_before": value_loss_before, "value_loss": value_loss,
                   "critic_epochs": critic_epochs, "episodes_done": jnp.sum(window.terminated | window.truncated),
                   "skipped_updates": actor_opt_state.total_notfinite}
        new = TrainState(params, critics, actor_opt_state, critic_opt_state, normalizer, jax.lax.stop_gradient(final),
                         state.env_steps + config.steps_per_update, horizon, dual)
        return new, metrics

    return highest_precision(_update)


# ---- as a chaosgym agent ----------------------------------------------------------------------

def make_config(num_envs: int, window: int, learning_rate: float, hidden: tuple[int, ...]) -> AHACConfig:
    """chaosgym's shared settings: batch_size envs, estimator.horizon as the maximum horizon (the
    minimum is the published 8, or the window if shorter), actor and critic at the learning rate,
    the policy's hidden layers; the rest as published."""
    return AHACConfig(num_envs, window, min_window=min(AHACConfig.min_window, window),
                      actor_learning_rate=learning_rate, critic_learning_rate=learning_rate, hidden=hidden)


CARRIED = Carried(make_config, init, make_update, inference_params, policy)
TRAINER = carried_trainer(CARRIED)
