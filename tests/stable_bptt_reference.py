"""Schnell & Thuerey's cart-pole update written from the paper's equations in plain JAX: the reference.

Nothing here imports chaosgym: the physics is the paper's closed form (its `cartpole_simulator.py`,
as docs/stable_bptt.md states it), the network is its Keras model (2 x 100 tanh, linear output,
Glorot-uniform kernels, zero biases, the output kernel zeroed), the loss its final-state loss and the
optimiser Adam. `benchmarks/stable_bptt_cost.py` times it beside chaosgym's `reproduce` update, and
`tests/test_stable_bptt_reference.py` checks that both give the same loss and gradients.

State layout, as the paper's: `(batch, 1 + N, 2)`, row 0 the cart (x, x'), row i pole i (theta, theta').
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DT, G, M_POLE, M_TOTAL, HALF_LENGTH = 0.01, 9.8, 0.1, 1.1, 0.5
FLOWS = ("R", "M", "S", "C")


def physics_step(state: jax.Array, force: jax.Array) -> jax.Array:
    """One semi-implicit Euler step of the paper's system for one state `(1 + N, 2)` and force `()`."""
    x, x_dot = state[0]
    theta, theta_dot = state[1:, 0], state[1:, 1]
    sin, cos = jnp.sin(theta), jnp.cos(theta)
    a = (force + M_POLE * HALF_LENGTH * sin * theta_dot ** 2) / M_TOTAL
    b = HALF_LENGTH * (4.0 / 3.0 - M_POLE * cos ** 2 / M_TOTAL)
    theta_ddot = (G * sin - cos * a) / b
    c = jnp.sum(sin * theta_dot ** 2 - theta_ddot * cos)
    x_ddot = (force + M_POLE * HALF_LENGTH * c) / M_TOTAL
    theta_dot = theta_dot + DT * theta_ddot
    x_dot = x_dot + DT * x_ddot
    cart = jnp.stack([x + DT * x_dot, x_dot])
    return jnp.concatenate([cart[None], jnp.stack([theta + DT * theta_dot, theta_dot], -1)])


def init_params(key: jax.Array, num_poles: int, hidden=(100, 100), dtype=jnp.float32):
    """Keras' defaults for the paper's model: Glorot-uniform kernels, zero biases; output kernel zeroed."""
    sizes = (2 + 2 * num_poles, *hidden, 1)
    keys = jax.random.split(key, len(sizes) - 1)
    params = []
    for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:]):
        limit = jnp.sqrt(6.0 / (n_in + n_out))
        params.append((jax.random.uniform(k, (n_in, n_out), dtype, -limit, limit), jnp.zeros(n_out, dtype)))
    return params[:-1] + [(jnp.zeros_like(params[-1][0]), params[-1][1])]


def network(params, inputs: jax.Array) -> jax.Array:
    """Force in newtons for a batch of flattened states `(batch, 2 + 2N)`."""
    h = inputs
    for w, b in params[:-1]:
        h = jnp.tanh(h @ w + b)
    w, b = params[-1]
    return (h @ w + b)[:, 0]


def loss(params, states: jax.Array, flow: str = "R", steps: int = 100) -> jax.Array:
    """1 - mean cos theta after `steps` steps, averaged over the batch, with the flow's cuts:
    M stops the network's input, S its input and the state carried to the next step."""
    step = jax.vmap(physics_step)

    def one(state, _):
        if flow == "S":
            state = jax.lax.stop_gradient(state)
        inputs = state.reshape(state.shape[0], -1)
        if flow in ("M", "S"):
            inputs = jax.lax.stop_gradient(inputs)
        return step(state, network(params, inputs)), None

    final, _ = jax.lax.scan(one, states, None, length=steps)
    return jnp.mean(1.0 - jnp.mean(jnp.cos(final[:, 1:, 0]), axis=-1))


def gradient(params, states: jax.Array, flow: str, steps: int = 100):
    """(loss, gradient) of one flow; C keeps M's components whose sign equals R's, else 0."""
    if flow != "C":
        return jax.value_and_grad(loss)(params, states, flow, steps)
    value, g_r = jax.value_and_grad(loss)(params, states, "R", steps)
    g_m = jax.grad(loss)(params, states, "M", steps)
    return value, jax.tree.map(lambda m, r: jnp.where(jnp.sign(m) == jnp.sign(r), m, 0.0), g_m, g_r)


def clip(grad, mode: jax.Array, number: float = 1.0):
    """0 NONE, 1 VALUE (each element to +-number), 2 NORM (global norm to number)."""
    norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grad)))
    by_value = jax.tree.map(lambda g: jnp.clip(g, -number, number), grad)
    by_norm = jax.tree.map(lambda g: g * jnp.minimum(1.0, number / norm), grad)
    return jax.tree.map(lambda g, v, n: jnp.select([mode == 1, mode == 2], [v, n], g), grad, by_value, by_norm)


def adam_init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return zeros, zeros, jnp.zeros((), jnp.int32)


def adam(params, grad, opt, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, keras=False):
    """Adam's step. `keras=False`: the textbook form (eps after the bias correction, as optax);
    `keras=True`: Keras 2's, lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)."""
    m, v, t = opt
    t = t + 1
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grad)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grad)
    tf = t.astype(jnp.result_type(float))
    c1, c2 = 1 - b1 ** tf, 1 - b2 ** tf
    if keras:
        step = lambda m, v: lr * jnp.sqrt(c2) / c1 * m / (jnp.sqrt(v) + eps)
    else:
        step = lambda m, v: lr * (m / c1) / (jnp.sqrt(v / c2) + eps)
    params = jax.tree.map(lambda p, m, v: p - step(m, v).astype(p.dtype), params, m, v)
    return params, (m, v, t)


def make_epoch(flow: str, batches: jax.Array, test_states: jax.Array, steps: int = 100, keras: bool = False):
    """`epoch(params, opt, mode) -> (params, opt, test_loss)`: one pass over `batches`
    `(updates, batch, 1 + N, 2)` in order, then the test loss; vmap it over runs."""
    def update(carry, batch):
        params, opt, mode = carry
        _, grad = gradient(params, batch, flow, steps)
        params, opt = adam(params, clip(grad, mode), opt, keras=keras)
        return (params, opt, mode), None

    def epoch(params, opt, mode):
        (params, opt, _), _ = jax.lax.scan(update, (params, opt, mode), batches)
        return params, opt, loss(params, test_states, "R", steps)

    return epoch
