"""Deterministic MLP policies in plain JAX: params are a list of (weights, bias) layers.

Two kinds, chosen by name (`POLICIES`, `policy_functions`):

* ``tanh`` (the default): tanh hidden layers and a tanh output, so actions lie in [-1, 1];
  LeCun-normal weights and zero biases.
* ``paper``: Schnell & Thuerey's cart-pole controller as their code builds it (Keras defaults):
  tanh hidden layers with bias and a *linear* output, Glorot-uniform kernels, zero biases, and the
  output kernel zeroed, so the first action is 0 and the network's input Jacobian plays no part in
  the first update. Its output is a force in newtons; the action is that force divided by the
  task's `force_scale` (the cart pole's action unit).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from chaosgym.functional.settings import POLICIES  # defined JAX-free, for the command line

Params = list[tuple[jax.Array, jax.Array]]


def mlp_init(key: jax.Array, sizes: tuple[int, ...], dtype=None) -> Params:
    """LeCun-normal weights and zero biases for layer sizes `(in, hidden..., out)`."""
    dtype = dtype or jnp.zeros(()).dtype  # float64 when JAX x64 is on
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (n_in, n_out), dtype) / jnp.sqrt(n_in), jnp.zeros(n_out, dtype))
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp_policy(params: Params, obs: jax.Array) -> jax.Array:
    """tanh hidden layers and a tanh output, so actions lie in [-1, 1]."""
    x = obs
    for w, b in params:
        x = jnp.tanh(x @ w + b)
    return x


def init_policy(key: jax.Array, observation_size: int, action_size: int,
                hidden: tuple[int, ...] = (100, 100)) -> Params:
    """Params of the default policy: 2 hidden layers of 100 tanh units (Schnell & Thuerey)."""
    return mlp_init(key, (observation_size, *hidden, action_size))


def paper_init(key: jax.Array, observation_size: int, action_size: int,
               hidden: tuple[int, ...] = (100, 100), dtype=None) -> Params:
    """Glorot-uniform kernels, zero biases, and a zeroed output kernel (Schnell & Thuerey's code)."""
    dtype = dtype or jnp.zeros(()).dtype
    sizes = (observation_size, *hidden, action_size)
    keys = jax.random.split(key, len(sizes) - 1)
    glorot = jax.nn.initializers.glorot_uniform()
    params = [(glorot(k, (n_in, n_out), dtype), jnp.zeros(n_out, dtype))
              for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]
    w_out, b_out = params[-1]
    return params[:-1] + [(jnp.zeros_like(w_out), b_out)]


def linear_output_mlp(params: Params, obs: jax.Array) -> jax.Array:
    """tanh hidden layers, a linear output layer."""
    x = obs
    for w, b in params[:-1]:
        x = jnp.tanh(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def policy_functions(name: str, task: Any = None) -> tuple[Callable, Callable[[Params, jax.Array], jax.Array]]:
    """`(init(key, observation_size, action_size, hidden), policy(params, obs) -> action)` of a policy kind.

    The ``paper`` policy's output is in the task's physical units: the action is it divided by
    `task.force_scale` (1 for a task without one).
    """
    if name == "tanh":
        return init_policy, mlp_policy
    if name == "paper":
        scale = float(getattr(task, "force_scale", 1.0))
        return paper_init, lambda params, obs: linear_output_mlp(params, obs) / scale
    raise ValueError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}")
