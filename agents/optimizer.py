"""The one optimiser builder of every agent and of `reproduce`: clipping, Adam, non-finite skips.

    apply_if_finite(chain(clip(value) | identity, clip_by_global_norm(norm) | identity, Adam))

Clipping is owned here and nowhere else: an estimator returns the raw (combined) gradient. Every
chain has the same structure whatever is clipped (an unused clip is `optax.identity()`), so runs
with different clipping share one optimiser state layout and can be vmapped into one program
(`reproduce` switches between them per run). A step whose gradient, or whose result, is not finite
is skipped and counted in the state (`total_notfinite`, optax's name).

Adam comes in two forms. `"optax"`: optax's (the textbook's), eps added to sqrt(v) after the bias
correction. `"keras"`: Keras 2's, lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps), i.e. eps added
before the bias correction, which makes it eps / sqrt(1 - b2^t) in optax's form: 32x larger at the
first step, the same after a few thousand. That is the Adam Schnell & Thuerey's code ran.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from chaosgym.functional.settings import ADAM_FORMS  # defined JAX-free, for the command line
from chaosgym.validation import UserError
NEVER = 2**31 - 1  # apply_if_finite's limit of consecutive skips: skipping never gives up


def scale_by_keras_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7) -> optax.GradientTransformation:
    """Keras 2's Adam direction (before the learning rate): sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)

    def update(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.result_type(float))  # float64 when x64 is on
        scale = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        step = jax.tree.map(lambda m, v: (scale * m / (jnp.sqrt(v) + eps)).astype(m.dtype), mu, nu)
        return step, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(learning_rate: float | optax.Schedule, *, clip_value: float | None = None,
                   clip_norm: float | None = None, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   adam: str = "optax") -> optax.GradientTransformation:
    """Clip each component to +-`clip_value`, then the global norm to `clip_norm` (each if given),
    then Adam (`adam`: "optax" or "keras", see the module) at `learning_rate` (a number, or an optax
    schedule of the applied updates' count); non-finite steps are skipped and counted."""
    if adam not in ADAM_FORMS:
        raise UserError(f"adam must be one of {', '.join(ADAM_FORMS)}, got {adam!r}")
    direction = (optax.scale_by_adam(b1, b2, eps) if adam == "optax" else scale_by_keras_adam(b1, b2, eps))
    return optax.apply_if_finite(optax.chain(
        optax.identity() if clip_value is None else optax.clip(clip_value),
        optax.identity() if clip_norm is None else optax.clip_by_global_norm(clip_norm),
        direction, _step_size(learning_rate)), NEVER)


def _step_size(learning_rate: float | optax.Schedule) -> optax.GradientTransformation:
    if callable(learning_rate):
        return optax.scale_by_schedule(lambda count: -learning_rate(count))
    return optax.scale(-learning_rate)
