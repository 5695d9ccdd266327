"""Deterministic MLP policies in plain JAX: params are a list of (weights, bias) layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mlp_init(key: jax.Array, sizes: tuple[int, ...], dtype=None) -> list[tuple[jax.Array, jax.Array]]:
    """LeCun-normal weights and zero biases for layer sizes `(in, hidden..., out)`."""
    dtype = dtype or jnp.zeros(()).dtype  # float64 when JAX x64 is on
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (n_in, n_out), dtype) / jnp.sqrt(n_in), jnp.zeros(n_out, dtype))
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp_policy(params: list[tuple[jax.Array, jax.Array]], obs: jax.Array) -> jax.Array:
    """tanh hidden layers and a tanh output, so actions lie in [-1, 1] (the paper's network)."""
    x = obs
    for w, b in params:
        x = jnp.tanh(x @ w + b)
    return x


def init_policy(key: jax.Array, observation_size: int, action_size: int,
                hidden: tuple[int, ...] = (100, 100)):
    """Params of the default policy: 2 hidden layers of 100 tanh units (Schnell & Thuerey)."""
    return mlp_init(key, (observation_size, *hidden, action_size))
