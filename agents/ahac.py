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
at `min_window`, lambda at 0; published: C = 500 (contact_threshold), beta = 5e-4 (lambd_lr of ahac.yaml).
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
target network. On the Ant it measures its contacts and joint limits, in MJX's units, far below
dflex's: its distribution (experiments/ahac_stiffness.py) sets the Ant preset's C and beta
(`chaosgym.presets.ANT_CONTACT_THRESHOLD`), so that the horizon adapts within [8, 64].

Also as published (the settings' defaults, `chaosgym.agents.settings.AHACSettings`, and the Ant's
preset): Adam with b1 = 0.7, b2 = 0.95, the actor's gradient norm clipped to 1 and the critic's not,
gamma = 0.99, lambda = 0.95, observations normalised by running statistics, four critic
minibatches, and critic epochs until the loss flattens (at most 64; `shac.fit_critic`) unless
`critic_iterations` fixes their number; on the Ant, ELU + LayerNorm MLPs of [400, 200, 100], a
Gaussian actor squashed by tanh, and learning rates falling linearly to 1e-5. There is no target
critic: the critic bootstraps itself.

Where this differs, and why:
* The window is always `window` steps (a `lax.scan` has a fixed length, and chaosgym counts env
  steps per update in advance), cut into pieces of round(H); the published code simulates round(H)
  steps per epoch. One update here is thus one actor step over several pieces per env.
* The double critic is two independently initialised critics and bootstraps with their minimum, as
  the paper describes; in the published code both heads are built from one list of layers
  (`nn.Sequential(*modules)` twice), so they share their weights.
* The dual step beta stays constant; the published code decays it with the learning rates.
* The published code divides the forces by max(a, 1), i.e. by 1 wherever a < 1, large negative
  accelerations included; here by max(|a|, 1), as the code's earlier form (clipping each sign away
  from 0) did.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from chaosgym.agents.carried import (Normalizer, Window, actions, actor_init, actor_optimizer, critic_init,
                                     critic_optimizer, normalizer_init, normalizer_update, policy_functions,
                                     policy_name, reset_batch, value)
from chaosgym.agents.interfaces import Carried
from chaosgym.agents.settings import AHACSettings
from chaosgym.agents.shac import (NOISE, actor_objective, fit_critic, init_env_key, td_lambda,  # shac's key layout
                                  update_env_key)
from chaosgym.functional.env import Env, State
from chaosgym.functional.gradients import highest_precision

__all__ = ["TrainState", "init", "make_update", "carried", "inference_params", "stiffness", "adapt_horizon",
           "critic_targets", "with_cuts", "unroll_with_cuts"]


class TrainState(NamedTuple):
    params: Any  # the actor
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


def adapt_horizon(horizon: jax.Array, dual: jax.Array, stiffnesses: jax.Array, settings: AHACSettings):
    """The published rule on one window's `stiffnesses` (window, envs): `(H, lambda)` after it.

    Only the first round(H) steps count (the published rollout is that long), each through
    lambda_t = lambda - beta (C - mean over envs of its stiffness); lambda_0 carries on."""
    used = jnp.round(horizon)
    beta = settings.dual_learning_rate
    duals = dual - beta * (settings.contact_threshold - jnp.mean(stiffnesses, axis=1))
    counted = jnp.arange(stiffnesses.shape[0]) < used
    horizon = jnp.clip(horizon + beta * jnp.sum(jnp.where(counted, duals, 0.0)), settings.min_window, settings.window)
    return horizon, duals[0]


def with_cuts(window: Window, cuts: jax.Array) -> Window:
    """The window with the horizon cuts closing pieces as a time limit does (bootstrapped by the critic)."""
    return window._replace(truncated=window.truncated | cuts)


def critic_targets(window: Window, cuts: jax.Array, bootstraps: jax.Array, gamma: float, lam: float) -> jax.Array:
    """TD(lambda) targets of the window's pieces (`shac.td_lambda`), a cut closing one like an episode end."""
    return td_lambda(with_cuts(window, cuts), bootstraps, gamma, lam)


def unroll_with_cuts(env: Env, sample, params: dict, states: State, fresh: State, length: int, piece: jax.Array,
                     key: jax.Array):
    """`length` steps of the training policy `sample` from the batch `states`; each env's gradient is
    cut after every `piece` steps of its current piece (the state goes on as a constant), an env
    whose episode ends restarts from its state in `fresh` and begins a new piece. The final states,
    the `Window`, where the cuts fell, and each step's stiffness, all time-major."""
    step = jax.vmap(env.step)
    broadcast = lambda mask, x: mask.reshape((-1,) + (1,) * (x.ndim - 1))

    def one_step(carry, step_key):
        states, since = carry
        next_states = step(states, actions(sample, params, states.obs, step_key))
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
    (final, _), (window, cuts, stiffnesses) = jax.lax.scan(one_step, (states, since), jax.random.split(key, length))
    return final, window, cuts, stiffnesses


def init(env: Env, settings: AHACSettings, key: jax.Array, env_state: State | None = None) -> TrainState:
    """The first train state; its envs' states are `env_state` where given (what `reset_batch` draws
    with `init_env_key(key)`), else drawn here."""
    key_actor, key_critic, _ = jax.random.split(key, 3)  # the third key is the envs' (`init_env_key`)
    env_state = reset_batch(env, init_env_key(key), settings.num_envs) if env_state is None else env_state
    params = actor_init(key_actor, env.observation_size, env.action_size, settings)
    critics = jax.vmap(lambda k: critic_init(k, env.observation_size, settings))(
        jax.random.split(key_critic, settings.num_critics))
    return TrainState(params, critics, actor_optimizer(settings).init(params), critic_optimizer(settings).init(critics),
                      normalizer_init(env.observation_size), env_state,
                      jnp.zeros((), jnp.int32), jnp.asarray(settings.min_window, jnp.float32),
                      jnp.zeros((), jnp.float32))


def inference_params(state: TrainState) -> dict:
    return {"policy": state.params, "normalizer": state.normalizer}


def make_update(env: Env, settings: AHACSettings):
    """The pure update `(TrainState, key, fresh=None) -> (TrainState, metrics)`; jit it yourself.
    `fresh`, the states that ended episodes restart from, is drawn with `update_env_key(key)` where
    not given."""
    actor_tx, critic_tx = actor_optimizer(settings), critic_optimizer(settings)
    sample = policy_functions(settings)[1]
    one_value = lambda critic, stats, obs: value(critic, stats, obs, settings.activation)
    each_critic = jax.vmap(one_value, in_axes=(0, None, None))
    lowest = lambda critics, stats, obs: jnp.min(each_critic(critics, stats, obs))
    values = jax.vmap(jax.vmap(lowest, in_axes=(None, None, 0)), in_axes=(None, None, 0))  # (time, envs)
    h, n = settings.window, settings.num_envs

    def actor_loss(params, state: TrainState, fresh: State, piece, key):
        final, window, cuts, stiffnesses = unroll_with_cuts(
            env, sample, {"policy": params, "normalizer": state.normalizer}, state.env_state, fresh, h, piece, key)
        # V(s_{t+1}) of the state each step ended in (0 after a termination), differentiable in the
        # state: the gradient of a piece flows through the critic at its cut into the simulator
        next_values = values(jax.lax.stop_gradient(state.critics), state.normalizer, window.next_obs)
        bootstraps = jnp.where(window.terminated, 0.0, next_values)
        loss = -actor_objective(with_cuts(window, cuts), bootstraps, settings.gamma) / (h * n)
        return loss, (final, window, cuts, stiffnesses, bootstraps)

    def _update(state: TrainState, key: jax.Array, fresh: State | None = None):
        _, key_critic = jax.random.split(key)  # the first key is the restarts' (`update_env_key`)
        fresh = reset_batch(env, update_env_key(key), n) if fresh is None else fresh
        piece = jnp.round(state.horizon).astype(jnp.int32)
        (loss, (final, window, cuts, stiffnesses, bootstraps)), grad = jax.value_and_grad(actor_loss, has_aux=True)(
            state.params, state, fresh, piece, jax.random.fold_in(key, NOISE))
        step, actor_opt_state = actor_tx.update(grad, state.actor_opt_state, state.params)
        params = optax.apply_updates(state.params, step)

        window, bootstraps = jax.lax.stop_gradient((window, bootstraps))
        targets = critic_targets(window, cuts, bootstraps, settings.gamma, settings.lam)
        obs, targets = window.obs.reshape(h * n, -1), targets.reshape(h * n)

        def critic_loss(critics, obs, targets):  # every critic against the targets
            predictions = jax.vmap(each_critic, in_axes=(None, None, 0))(critics, state.normalizer, obs)
            return jnp.mean(jnp.square(predictions - targets[:, None]))

        value_loss_before = critic_loss(state.critics, obs, targets)
        (critics, critic_opt_state), value_loss, critic_epochs = fit_critic(
            settings, critic_loss, critic_tx, state.critics, state.critic_opt_state, obs, targets, key_critic)
        horizon, dual = adapt_horizon(state.horizon, state.dual, stiffnesses, settings)
        normalizer = normalizer_update(state.normalizer, window.obs) if settings.normalize_observations \
            else state.normalizer
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grad), "mean_reward": jnp.mean(window.rewards),
                   "horizon": piece, "next_horizon": horizon, "dual": dual, "stiffness": jnp.mean(stiffnesses),
                   "horizon_cuts": jnp.sum(cuts), "value_loss_before": value_loss_before, "value_loss": value_loss,
                   "critic_epochs": critic_epochs, "episodes_done": jnp.sum(window.terminated | window.truncated),
                   "skipped_updates": actor_opt_state.total_notfinite}
        new = TrainState(params, critics, actor_opt_state, critic_opt_state, normalizer, jax.lax.stop_gradient(final),
                         state.env_steps + settings.steps_per_update, horizon, dual)
        return new, metrics

    return highest_precision(_update)


def carried(settings: AHACSettings) -> Carried:
    """AHAC as the loop drives it (`chaosgym.agents.loop.carried_core`)."""
    return Carried(init, make_update, inference_params, policy_functions(settings)[0],
                   policy_name(__name__, settings), init_env_key, update_env_key)
