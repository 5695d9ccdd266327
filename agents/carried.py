"""What the carried-state agents (apg, shac, ahac) share: running observation statistics, their
networks, the windowed rollout along carried trajectories, and the optimiser with its schedule.

The networks cover what each agent's authors published, chosen by the agent's settings
(`chaosgym.agents.settings.CarriedSettings`):

* hidden layers with an activation (tanh, ELU, ReLU, swish), each optionally followed by a
  LayerNorm with a learnt scale and offset (DiffRL's actors and critics, Brax APG's policy);
  LeCun-normal weights, zero biases, the output layer scaled by `init_output_scale`;
* the actor's output, `policy`: "deterministic" (tanh of the network's output); "gaussian"
  (DiffRL's ActorStochasticMLP: tanh of a sample around the output with a learnt,
  state-independent log std); "normal_tanh" (Brax's NormalTanhDistribution: the network outputs a
  location and a scale, (softplus + 0.001) x 0.1). Training samples by reparameterisation, so the
  gradient flows through the sample; evaluation acts on tanh of the location.

A policy's parameters are `{"policy": actor, "normalizer": Normalizer}` (`inference_params`);
the actor is `{"mlp": [(w, b), ...]}` plus "norms" with LayerNorm and "log_std" for "gaussian".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from chaosgym.agents.optimizer import make_optimizer
from chaosgym.agents.settings import CarriedSettings
from chaosgym.functional.env import Env, State
from chaosgym.functional.policies import mlp_init
from chaosgym.validation import InvalidSetting

STD_MIN = 1e-6  # floor on the normaliser's standard deviation (Brax's running_statistics)
LAYER_NORM_EPS = 1e-5  # torch's and flax's
# Brax's NormalTanhDistribution: scale = (softplus(x) + min_std) * var_scale (apg/networks.py's var_scale)
NORMAL_TANH_MIN_STD, NORMAL_TANH_VAR_SCALE = 0.001, 0.1
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh, "elu": jax.nn.elu, "relu": jax.nn.relu, "swish": jax.nn.swish}


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


# ---- networks ---------------------------------------------------------------------------------------

def network_init(key: jax.Array, sizes: tuple[int, ...], output_scale: float = 1.0, layer_norm: bool = False) -> dict:
    """An MLP of layer sizes `(in, hidden..., out)`: LeCun-normal weights, zero biases, the output
    layer's weights times `output_scale` (a small scale starts a policy near zero action), and a
    LayerNorm (scale 1, offset 0) after each hidden layer if asked."""
    layers = mlp_init(key, sizes)
    w, b = layers[-1]
    params = {"mlp": layers[:-1] + [(w * output_scale, b)]}
    if layer_norm:
        params["norms"] = [(jnp.ones(n, w.dtype), jnp.zeros(n, w.dtype)) for n in sizes[1:-1]]
    return params


def network(params: dict, x: jax.Array, activation: str) -> jax.Array:
    """The MLP's output (linear) for one input."""
    act = ACTIVATIONS[activation]
    *hidden, (w_out, b_out) = params["mlp"]
    for i, (w, b) in enumerate(hidden):
        x = act(x @ w + b)
        if "norms" in params:
            scale, offset = params["norms"][i]
            mean = jnp.mean(x, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
            x = (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * scale + offset
    return x @ w_out + b_out


def actor_init(key: jax.Array, observation_size: int, action_size: int, settings: CarriedSettings) -> dict:
    """The actor's parameters (see the module)."""
    outputs = 2 * action_size if settings.policy == "normal_tanh" else action_size
    params = network_init(key, (observation_size, *settings.hidden, outputs), settings.init_output_scale,
                          settings.layer_norm)
    if settings.policy == "gaussian":
        params["log_std"] = jnp.full(action_size, settings.log_std_init, params["mlp"][0][0].dtype)
    return params


@functools.cache
def policy_functions(settings: CarriedSettings) -> tuple[Callable, Callable]:
    """`(act, sample)` of the settings' actor: `act(params, obs)` the deterministic action
    (evaluation), `sample(params, obs, key)` the training action (the same for "deterministic")."""
    activation, head = settings.activation, settings.policy

    def location(params, obs):
        out = network(params["policy"], normalize(params["normalizer"], obs), activation)
        return out[..., :out.shape[-1] // 2] if head == "normal_tanh" else out

    def act(params, obs):
        return jnp.tanh(location(params, obs))

    def sample(params, obs, key):
        if head == "deterministic":
            return act(params, obs)
        out = network(params["policy"], normalize(params["normalizer"], obs), activation)
        if head == "gaussian":
            loc, std = out, jnp.exp(params["policy"]["log_std"])
        else:
            loc, raw = jnp.split(out, 2, axis=-1)
            std = (jax.nn.softplus(raw) + NORMAL_TANH_MIN_STD) * NORMAL_TANH_VAR_SCALE
        return jnp.tanh(loc + std * jax.random.normal(key, loc.shape, loc.dtype))

    return act, sample


def policy_name(module: str, settings: CarriedSettings) -> str:
    """What a carried agent's compiled evaluation goes by: its module and the actor's settings
    (programs of different actors must never share a name)."""
    return f"{module}:{settings.activation}:{settings.layer_norm}:{settings.policy}"


def critic_init(key: jax.Array, observation_size: int, settings) -> dict:
    return network_init(key, (observation_size, *settings.critic_hidden, 1), 1.0, settings.layer_norm)


def value(critic: dict, stats: Normalizer, obs: jax.Array, activation: str) -> jax.Array:
    """V(s) of one observation: the critic MLP on the normalised observation, a linear output."""
    return network(critic, normalize(stats, obs), activation)[0]


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


def reset_batch(env: Env, key: jax.Array, num_envs: int) -> State:
    return jax.vmap(env.reset)(jax.random.split(key, num_envs))


def actions(sample: Callable, params: dict, obs: jax.Array, key: jax.Array) -> jax.Array:
    """A training action for each env of a batch, each with its own key."""
    return jax.vmap(sample, in_axes=(None, 0, 0))(params, obs, jax.random.split(key, obs.shape[0]))


def unroll(env: Env, sample: Callable, params: dict, states: State, fresh: State, length: int,
           key: jax.Array) -> tuple[State, Window]:
    """`length` steps of the training policy `sample` from the batch `states`; an env whose episode
    ends restarts from its state in `fresh` (differentiable through the steps, constant through the
    restarts)."""
    step = jax.vmap(env.step)

    def one_step(states, step_key):
        next_states = step(states, actions(sample, params, states.obs, step_key))
        done = next_states.terminated | next_states.truncated
        carried = jax.tree.map(lambda f, n: jnp.where(done.reshape((-1,) + (1,) * (n.ndim - 1)), f, n),
                               fresh, next_states)
        return carried, Window(states.obs, next_states.reward, next_states.terminated, next_states.truncated,
                               next_states.obs)

    return jax.lax.scan(one_step, states, jax.random.split(key, length))


# ---- the optimiser ---------------------------------------------------------------------------------

def learning_rate(settings: CarriedSettings, rate: float) -> float | optax.Schedule:
    """`rate` on the settings' schedule: constant, linear to `lr_final` over `decay_updates`
    updates (DiffRL's), or times `lr_decay` per update (Brax APG's)."""
    if settings.lr_schedule == "linear":
        if settings.decay_updates is None:  # `chaosgym.agents.config.for_task` sets the run's budget
            raise InvalidSetting("decay_updates", "must be given for the linear schedule")
        return optax.linear_schedule(rate, settings.lr_final, settings.decay_updates)
    if settings.lr_schedule == "exponential":
        return optax.exponential_decay(rate, transition_steps=1, decay_rate=settings.lr_decay)
    return rate


def actor_optimizer(settings: CarriedSettings) -> optax.GradientTransformation:
    """Clip (each component, then the global norm, as set), Adam(b1, b2) on the schedule; a
    non-finite gradient is skipped and counted in the state."""
    return make_optimizer(learning_rate(settings, settings.learning_rate), clip_value=settings.clip_value,
                          clip_norm=settings.max_grad_norm, b1=settings.b1, b2=settings.b2)


def critic_optimizer(settings) -> optax.GradientTransformation:
    return make_optimizer(learning_rate(settings, settings.critic_learning_rate),
                          clip_norm=settings.critic_max_grad_norm, b1=settings.b1, b2=settings.b2)
