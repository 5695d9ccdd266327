"""Gradient estimators with one signature: `estimate(params, states, key) -> (grad, diagnostics)`.

* ``full``, ``truncated``, ``modified``, ``stopped``: backpropagation through `chaosgym.functional.rollout`
  with that gradient flow.
* ``combined``: Schnell & Thuerey's update: the modified gradient g_M where its sign agrees with
  the full gradient g_R, else 0, element-wise on the gradient summed over batch and time.
* ``es``: antithetic Gaussian smoothing of the rollout loss (forward passes only), optionally with
  centred-rank shaping of the losses.

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
from chaosgym.functional.settings import ESTIMATORS, EstimatorConfig  # noqa: F401  (ESTIMATORS re-exported)
from chaosgym.functional.sharding import shard_batch

Estimator = Callable[[Any, State, jax.Array], tuple[Any, dict[str, jax.Array]]]


def _flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _cosine(a, b) -> jax.Array:
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


def make_estimator(env: Env, policy: Policy, config: EstimatorConfig) -> Estimator:
    """The gradient estimator `config.name` for `policy` on `env` (pure; jit it yourself).

    The loss is the task's objective `config.objective` (`Task.objectives`) averaged over the batch.
    Inside `jit` the batch of states is spread over all devices (ES spreads its population instead).
    """
    env.task.objective(config.objective)  # an unknown objective fails here, with the valid names

    def loss_fn(params, states, flow):
        loss, _ = rollout(env, policy, params, states, config.horizon, flow=flow,
                          truncation=config.truncation, remat=config.remat, objective=config.objective)
        return loss

    def backprop(params, states, key):
        del key
        states = shard_batch(states)
        loss, grad = jax.value_and_grad(loss_fn)(params, states, config.name)
        return grad, {"loss": loss}

    def combined(params, states, key):
        del key
        states = shard_batch(states)
        loss, g_full = jax.value_and_grad(loss_fn)(params, states, "full")
        g_mod = jax.grad(loss_fn)(params, states, "modified")
        grad, zeroed = combine(g_mod, g_full)
        return grad, {"loss": loss, "cosine_modified_full": _cosine(g_mod, g_full),
                      "fraction_zeroed": zeroed.astype(loss.dtype)}

    def es(params, states, key):
        grad, loss = es_gradient(lambda p: loss_fn(p, states, "full"), params, key, config.es_sigma,
                                 config.es_pairs, config.es_rank_shaping)
        return grad, {"loss": loss}

    estimate = highest_precision({"combined": combined, "es": es}.get(config.name, backprop))

    def estimator(params, states, key):
        grad, diagnostics = estimate(params, states, key)
        flat = _flat(grad)
        diagnostics["grad_norm"] = jnp.linalg.norm(flat)
        diagnostics["grad_finite"] = jnp.all(jnp.isfinite(flat))
        return grad, diagnostics

    return estimator
