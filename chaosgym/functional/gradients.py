"""Gradient estimators with one signature: `estimate(params, states, key) -> (grad, diagnostics)`.

* ``full``, ``truncated``, ``modified``, ``stopped``: backpropagation through `chaosgym.functional.rollout`
  with that gradient flow.
* ``combined``: Schnell & Thuerey's update: the modified gradient g_M where its sign agrees with
  the full gradient g_R, else 0, element-wise on the gradient summed over batch and time.
* ``es``: antithetic Gaussian smoothing of the rollout loss (forward passes only), optionally with
  centred-rank shaping of the losses.

Each is one entry of `chaosgym.functional.settings.ESTIMATOR_SPECS` and one function here
(`COMBINATIONS`, `FORWARD`); `register_estimator` adds one.

Optional clipping (global norm or value) is applied after combination; `grad_norm` in the
diagnostics is the norm before clipping.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import optax

from chaosgym.functional.env import Env, State
from chaosgym.functional.rollout import Policy, rollout
from chaosgym.functional.settings import (ESTIMATOR_SPECS, ESTIMATORS, FLOWS, EstimatorConfig,  # noqa: F401
                                         EstimatorSpec)  # ESTIMATORS re-exported
from chaosgym.functional.sharding import shard_batch

Estimator = Callable[[Any, State, jax.Array], tuple[Any, dict[str, jax.Array]]]


def _flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def cosine(a, b) -> jax.Array:
    """The cosine between two gradients (pytrees of the same structure)."""
    a, b = _flat(a), _flat(b)
    return jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-30)


def _centred_ranks(x: jax.Array) -> jax.Array:
    ranks = jnp.argsort(jnp.argsort(x)).astype(x.dtype)
    return ranks / (x.size - 1) - 0.5


def combine(g_modified, g_full):
    """Schnell & Thuerey's combined update: each component of `g_modified` whose sign equals that
    component of `g_full`, else 0; returns (combined gradient, fraction of components zeroed)."""
    agree = jax.tree.map(lambda m, r: jnp.sign(m) == jnp.sign(r), g_modified, g_full)
    combined = jax.tree.map(lambda m, keep: jnp.where(keep, m, 0.0), g_modified, agree)
    return combined, jnp.mean(~_flat(agree))


def es_gradient(loss_fn: Callable[[Any], jax.Array], params, key: jax.Array, sigma: float,
                pairs: int, rank_shaping: bool = False):
    """Antithetic Gaussian-smoothing estimate of grad loss_fn(params); returns (grad, mean loss).

    g = sum_i (L(p + s e_i) - L(p - s e_i)) e_i / (2 s n) with e_i ~ N(0, I): unbiased for the
    gradient of the smoothed loss E[L(p + s e)] (for a quadratic, of L itself). The 2n losses
    are evaluated with one `vmap`.
    """
    flat, unravel = ravel_pytree(params)
    eps = jax.random.normal(key, (pairs, flat.size), flat.dtype)
    # the population is the batch axis spread over all devices (a no-op with one device)
    population = shard_batch(jnp.concatenate([flat + sigma * eps, flat - sigma * eps]))
    losses = jax.vmap(lambda p: loss_fn(unravel(p)))(population)
    fitness = _centred_ranks(losses) if rank_shaping else losses
    plus, minus = jnp.split(fitness, 2)
    return unravel(((plus - minus) @ eps) / (2 * sigma * pairs)), jnp.mean(losses)


def highest_precision(fn: Callable) -> Callable:
    """`fn` with float32 matrix products at full precision: GPUs multiply them at lower precision by
    default, enough to make gradients through a chaotic rollout explode; on a CPU nothing changes."""
    @functools.wraps(fn)
    def at_highest_precision(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return at_highest_precision


# ---- one function per estimator -------------------------------------------------------------------
# An estimator that backpropagates gives its gradient from its flows' gradients, in the order of its
# spec's `flows`, with its own diagnostics (its spec's `metrics`); one without flows (forward passes
# only) gives its gradient and loss from the loss function itself.

def _one_flow(gradients: list) -> tuple[Any, dict]:
    (grad,) = gradients
    return grad, {}


def _combined(gradients: list) -> tuple[Any, dict]:
    g_modified, g_full = gradients
    grad, zeroed = combine(g_modified, g_full)
    return grad, {"cosine_modified_full": cosine(g_modified, g_full), "fraction_zeroed": zeroed}


def _es(loss_fn: Callable[[Any], jax.Array], params, key: jax.Array, config: EstimatorConfig):
    return es_gradient(loss_fn, params, key, config.es_sigma, config.es_pairs, config.es_rank_shaping)


COMBINATIONS: dict[str, Callable[[list], tuple[Any, dict]]] = {
    "full": _one_flow, "truncated": _one_flow, "modified": _one_flow, "stopped": _one_flow, "combined": _combined}
FORWARD: dict[str, Callable] = {"es": _es}


def register_estimator(spec: EstimatorSpec, function: Callable) -> None:
    """Add an estimator: its spec (`chaosgym.functional.settings.ESTIMATOR_SPECS`) and its function,
    `function(gradients) -> (grad, diagnostics)` of its flows' gradients when `spec.flows` is
    non-empty, else `function(loss_fn, params, key, config) -> (grad, loss)`. It is then an agent,
    a diagnostics estimator and a flag value like the built-in ones."""
    if spec.name in ESTIMATOR_SPECS:
        raise ValueError(f"an estimator named {spec.name!r} exists already")
    unknown = sorted(set(spec.flows) - set(FLOWS))
    if unknown:
        raise ValueError(f"{spec.name}: unknown flows {unknown}; flows: {', '.join(FLOWS)}")
    ESTIMATOR_SPECS[spec.name] = spec
    (COMBINATIONS if spec.flows else FORWARD)[spec.name] = function


def estimate_from_flows(name: str, value_and_grad: Callable[[str], tuple[jax.Array, Any]]):
    """`(grad, loss, diagnostics)` of the estimator `name` from `value_and_grad(flow) -> (loss,
    gradient)` of each of its flows (the loss of the last: every flow's forward pass is the same)."""
    passes = [value_and_grad(flow) for flow in ESTIMATOR_SPECS[name].flows]
    grad, diagnostics = COMBINATIONS[name]([g for _, g in passes])
    loss = passes[-1][0]
    return grad, loss, {k: jnp.asarray(v).astype(loss.dtype) for k, v in diagnostics.items()}


def make_estimator(env: Env, policy: Policy, config: EstimatorConfig) -> Estimator:
    """The gradient estimator `config.name` for `policy` on `env` (pure; jit it yourself).

    The loss is the task's objective `config.objective` (`Task.objectives`) averaged over the batch.
    Inside `jit` the batch of states is spread over all devices (ES spreads its population instead).
    """
    env.task.objective(config.objective)  # an unknown objective fails here, with the valid names
    spec = config.spec

    def loss_fn(params, states, flow):
        loss, _ = rollout(env, policy, params, states, config.horizon, flow=flow,
                          truncation=config.truncation, remat=config.remat, objective=config.objective)
        return loss

    def backprop(params, states, key):
        del key
        states = shard_batch(states)
        grad, loss, diagnostics = estimate_from_flows(
            config.name, lambda flow: jax.value_and_grad(loss_fn)(params, states, flow))
        return grad, {"loss": loss, **diagnostics}

    def forward(params, states, key):
        grad, loss = FORWARD[config.name](lambda p: loss_fn(p, states, "full"), params, key, config)
        return grad, {"loss": loss}

    estimate = highest_precision(backprop if spec.flows else forward)

    def estimator(params, states, key):
        grad, diagnostics = estimate(params, states, key)
        flat = _flat(grad)
        diagnostics["grad_norm"] = jnp.linalg.norm(flat)
        diagnostics["grad_finite"] = jnp.all(jnp.isfinite(flat))
        return grad, diagnostics

    return estimator
