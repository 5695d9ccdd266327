"""Why gradients through a chaotic simulator fail: Lyapunov exponents, Jacobian spectra, gradient
variance against horizon, and loss-landscape slices, for any task, open or closed loop.

The gradient study follows Metz et al. (2021): the loss is minus the rewards summed over the unroll,
episodes may be kept from terminating inside it (`without_termination`), the policy's weights can be
scaled (`scale_weights`) to move the closed loop between stable and chaotic, and the signal-to-noise
ratio of each estimator comes with a standard error (`signal_to_noise`).

The dynamical system studied is one control step of the env on the state x = (qpos, qvel):
x_{t+1} = F(x_t), with a fixed action (open loop; zero = unforced) or a_t = policy(obs(x_t))
(closed loop). The physics step recomputes every derived quantity of `mjx.Data` (body positions,
contacts) from x; the policy's observation, read before the step, sees x through `qpos` and
`qvel` only, so the closed-loop Jacobian is exact when the observation is built from those (as in
every built-in task). The solver's warm start is carried along, not differentiated. A free joint's
quaternion is renormalised every step, so its norm direction has an exponent of -inf; it sits at
the bottom of the spectrum and leaves the top exponents alone.

Everything here is pure JAX and batched with `vmap`; the loops over estimators (each a separate
compile) and over chunks of the work (states, parameter points, stretches of a Lyapunov run) are
Python, so that a `Progress` can say what compiles and how far a long computation has got.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
import threading
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
from tqdm.auto import tqdm

from chaosgym._mjx import mjx
from chaosgym.functional.gradients import ESTIMATORS, EstimatorConfig, combine, es_gradient, highest_precision
from chaosgym.functional.env import Env, State
from chaosgym.functional.rollout import Policy, rollout
from chaosgym.measured import MEASURED

# (carry, x) -> (next carry, next x); differentiable in x. The carry holds whatever else the map
# needs (for the env: the rest of `mjx.Data`).
Transition = Callable[[Any, jax.Array], tuple[Any, jax.Array]]


def state_vector(data: mjx.Data) -> jax.Array:
    """The dynamical state x = (qpos, qvel) of one `mjx.Data`."""
    return jnp.concatenate([data.qpos, data.qvel])


def control_step_map(env: Env, policy: Policy | None = None) -> Transition:
    """One control step of `env` as a map on x = (qpos, qvel).

    The carry is `(data, control)`: the rest of `mjx.Data`, and the policy's params (closed loop,
    when `policy` is given) or the fixed action (open loop). Keeping the params in the carry, not
    in a closure, lets one compiled function serve every policy of the same shape.
    """
    nq = env.mj_model.nq

    def transition(carry, x: jax.Array):
        data, control = carry
        data = data.replace(qpos=x[:nq], qvel=x[nq:])
        action = control if policy is None else policy(control, env.task.observation(data))
        next_data = env.physics_step(data, jnp.clip(action, -1.0, 1.0).astype(x.dtype))
        return (next_data, control), state_vector(next_data)

    return transition


def _control(env: Env, policy: Policy | None, params: Any, action: jax.Array | None):
    if policy is not None:
        return params
    return jnp.zeros(env.action_size) if action is None else jnp.asarray(action)


# ---- telling the user what runs --------------------------------------------------------------


ANNOUNCE_AFTER_S = 2.0  # a small program traced and read back from JAX's compilation cache takes about this long


class Progress:
    """What a long computation says on stderr while it runs, so that no stretch passes in silence:
    a line when a compile has taken `ANNOUNCE_AFTER_S` (what compiles, how long it typically takes)
    and one when it ends, and bars that count chunks of work. Bars, the compile's too, keep their
    elapsed time moving (redrawn every `refresh_s`) while a chunk runs. `bars=False` keeps the lines
    and drops the bars. The measures below take one as `progress`; None says nothing."""

    def __init__(self, bars: bool = True, refresh_s: float | None = None):
        self.bars = bars
        self.refresh_s = refresh_s or (1.0 if sys.stderr.isatty() else 5.0)  # a log file gets fewer redraws

    @staticmethod
    def say(text: str) -> None:
        tqdm.write(text, file=sys.stderr)  # above any bar, and out of piped tables on stdout

    @contextlib.contextmanager
    def _live(self, **bar) -> Iterator[tqdm]:
        """A tqdm bar redrawn every `refresh_s` from another thread until the body ends."""
        with tqdm(file=sys.stderr, disable=not self.bars, dynamic_ncols=True, **bar) as shown:
            stop = threading.Event()

            def redraw():
                while not stop.wait(self.refresh_s):
                    shown.refresh()

            ticker = threading.Thread(target=redraw, daemon=True)
            if self.bars:
                ticker.start()
            try:
                yield shown
            finally:
                stop.set()
                if self.bars:
                    ticker.join()

    @contextlib.contextmanager
    def compiling(self, what: str, typical: str) -> Iterator[None]:
        """Run the body, a compile of `what` that `typical`ly takes so long; said only if it takes
        longer than a read from the compilation cache."""
        start, done, announced = time.perf_counter(), threading.Event(), threading.Event()

        def watch():
            if done.wait(ANNOUNCE_AFTER_S):
                return
            announced.set()
            self.say(f"compiling {what} (on a 2-core CPU typically {typical} the first time; later runs "
                     "read XLA's part from the compilation cache, and only trace)")
            with self._live(desc="compiling", bar_format="{desc}: {elapsed}"):
                done.wait()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()
            if announced.is_set():
                self.say(f"compiled {what} in {time.perf_counter() - start:.0f} s")

    def steps(self, total: int, desc: str, unit: str) -> contextlib.AbstractContextManager[tqdm]:
        """A bar of `total` chunks of work (call `update(n)` after each)."""
        return self._live(total=total, desc=desc, unit=unit)

    _programs: dict = {}  # compiled programs by function and argument shapes, shared by every Progress

    def compiled(self, jitted: Callable, args: tuple, what: str, typical: str) -> Callable:
        """`jitted` compiled for the shapes of `args`, the compile announced (`compiling`); kept, so
        that running it again (another weight scale, another mode) neither traces nor compiles."""
        signature = (jitted, jax.tree.structure(args), tuple(map(jax.typeof, jax.tree.leaves(args))))
        if signature not in self._programs:
            with self.compiling(what, typical):
                self._programs[signature] = jitted.lower(*args).compile()
        return self._programs[signature]


# How long each program took to compile with a cold cache on a shared 2-core CPU (`chaosgym diagnose`
# of the cart pole and the Ant, small sizes; the figures are chaosgym/measured.py's diagnose_*), for
# the compile notices; every estimator but ES backpropagates, and costs about what `full` does
TYPICAL_COMPILE = {kind: f"{MEASURED[f'diagnose_{kind}_cart_pole']} for the cart pole, "
                         f"{MEASURED[f'diagnose_{kind}_ant']} for the Ant"
                   for kind in ("lyapunov", "jacobian", "backprop", "landscape")}
TYPICAL_COMPILE["es"] = str(MEASURED["diagnose_es"])


def _compiled(jitted: Callable, args: tuple, progress: Progress | None, what: str, kind: str) -> Callable:
    if progress is None:
        return jitted
    return progress.compiled(jitted, args, what, TYPICAL_COMPILE.get(kind, TYPICAL_COMPILE["backprop"]))


@functools.partial(jax.jit, static_argnums=1)
def _padded_chunks(batched: Any, size: int) -> Any:
    """`batched` (leading axis N) as (ceil(N / size), size, ...), the last chunk padded with copies
    of the last item."""
    def split(x):
        chunks = -(-x.shape[0] // size)
        x = jnp.concatenate([x, jnp.repeat(x[-1:], chunks * size - x.shape[0], axis=0)])
        return x.reshape(chunks, size, *x.shape[1:])
    return jax.tree.map(split, batched)


_take = jax.jit(lambda tree, i: jax.tree.map(lambda x: x[i], tree))  # one program for every chunk's slices


def _in_chunks(fn: Callable, shared: tuple, batched: Any, size: int, progress: Progress | None, desc: str,
               unit: str, what: str, kind: str) -> Any:
    """`fn(*shared, chunk)` for consecutive chunks of `size` along the leading axis of the pytree
    `batched`, concatenated: one program for every chunk (the last is padded with copies of its
    last item, whose results are dropped), one bar step per chunk."""
    count = jax.tree.leaves(batched)[0].shape[0]
    size = min(size, count)
    chunks = -(-count // size)
    # sliced by one compiled program each: op by op, the ~100 arrays of an `mjx.Data` took seconds
    padded = _padded_chunks(batched, size) if chunks > 1 else None
    piece = lambda i: _take(padded, i) if chunks > 1 else batched
    run = _compiled(fn, (*shared, piece(0)), progress, what, kind)
    outputs = []
    with progress.steps(count, desc, unit) if progress else contextlib.nullcontext() as bar:
        for i in range(chunks):
            outputs.append(jax.block_until_ready(run(*shared, piece(i))))
            if bar is not None:
                bar.update(min(size, count - i * size))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:count], *outputs) if chunks > 1 else outputs[0]


# ---- Lyapunov exponents (Benettin's method) --------------------------------------------------


class LyapunovResult(NamedTuple):
    """Top-k Lyapunov exponents per unit time, largest first (leading batch axes under vmap).

    `stderr` is the standard error of each exponent from the means of `blocks` consecutive blocks
    of the run (batch means): small against the exponent means the estimate has converged.
    `running` has shape (num_steps, k): the estimate after each step, to plot convergence.
    `steps` counts the steps averaged: fewer than asked when the state became non-finite (the
    physics blew up), after which nothing is averaged; the estimate is then nan if none were.
    """

    exponents: jax.Array
    stderr: jax.Array
    running: jax.Array
    steps: jax.Array


def map_lyapunov_exponents(transition: Transition, carry: Any, x: jax.Array, num_steps: int,
                           k: int = 1, dt: float = 1.0, transient: int = 0, blocks: int = 10,
                           key: jax.Array | None = None) -> LyapunovResult:
    """Top-k Lyapunov exponents of any map by Benettin's method: push k tangent vectors through
    the map's JVP and re-orthonormalise them by QR every step; the exponents are the time
    averages of log |diag R|. The first `transient` steps align the tangents and are discarded.
    """
    tangents = _initial_tangents(key, x, k)
    _, (logs, finite) = _benettin_steps(transition, (carry, x, tangents), transient + num_steps)
    return _lyapunov_statistics(logs, finite, num_steps, dt, transient, blocks)


def _initial_tangents(key: jax.Array | None, x: jax.Array, k: int) -> jax.Array:
    key = jax.random.key(0) if key is None else key
    return jnp.linalg.qr(jax.random.normal(key, (x.shape[-1], k), x.dtype))[0]


def _benettin_steps(transition: Transition, state: tuple, length: int):
    """`length` steps of Benettin's method from `state` = (carry, x, orthonormal tangents):
    (the state after them, (log |diag R| per step, whether each step's x is finite))."""

    def step(state, _):
        carry, x, tangents = state
        carry, x_next, push = _linearize(transition, carry, x)
        q, r = jnp.linalg.qr(push(tangents))
        return (carry, x_next, q), (jnp.log(jnp.abs(jnp.diagonal(r))), jnp.all(jnp.isfinite(x_next)))

    return jax.lax.scan(step, state, None, length=length)


def _lyapunov_statistics(logs: jax.Array, finite: jax.Array, num_steps: int, dt: float, transient: int,
                         blocks: int) -> LyapunovResult:
    """The `LyapunovResult` of the per-step logs of `transient + num_steps` Benettin steps."""
    valid = jnp.cumprod(finite)[transient:].astype(bool)  # once blown up, always blown up
    logs = jnp.where(valid[:, None], logs[transient:], 0.0) / dt
    counts = jnp.cumsum(valid)
    running = jnp.cumsum(logs, axis=0) / jnp.where(counts > 0, counts, jnp.nan)[:, None]
    # batch means over `blocks` equal blocks of the valid steps
    block = jnp.minimum(jnp.arange(num_steps) * blocks // jnp.maximum(counts[-1], 1), blocks - 1)
    block_sums = jax.ops.segment_sum(logs, block, num_segments=blocks)
    block_sizes = jax.ops.segment_sum(valid.astype(logs.dtype), block, num_segments=blocks)
    block_means = block_sums / block_sizes[:, None]
    stderr = jnp.std(block_means, axis=0, ddof=1) / jnp.sqrt(blocks)
    return LyapunovResult(running[-1], stderr, running, counts[-1])


def _linearize(transition: Transition, carry, x):
    """(next carry, next x, push) where push maps a matrix of tangent columns through dF/dx."""
    swapped = lambda y: tuple(reversed(transition(carry, y)))
    x_next, jvp, carry = jax.linearize(swapped, x, has_aux=True)
    return carry, x_next, jax.vmap(jvp, in_axes=1, out_axes=1)


def mean_and_stderr(values) -> tuple[float, float]:
    """Mean of per-start estimates and its standard error across starts (nan for one start)."""
    values = jnp.asarray(values)
    stderr = jnp.std(values, ddof=1) / jnp.sqrt(values.size) if values.size > 1 else jnp.nan
    return float(jnp.mean(values)), float(stderr)


def lyapunov_exponents(env: Env, states: State, num_steps: int, k: int = 1,
                       policy: Policy | None = None, params: Any = None,
                       action: jax.Array | None = None, transient: int = 0, blocks: int = 10,
                       key: jax.Array | None = None, progress: Progress | None = None,
                       label: str = "lyapunov") -> LyapunovResult:
    """Top-k Lyapunov exponents (per second) of `env` from each of a batch of `states`.

    Closed loop under `policy(params, obs)` if given, else open loop with the fixed `action`
    (default zeros: unforced). Every field of the result has a leading batch axis.
    With a `progress`, the run goes in about `LYAPUNOV_CHUNKS` stretches of steps on a bar named
    `label` (the same numbers: each stretch continues the last exactly).
    """
    key = jax.random.key(0) if key is None else key
    keys = jax.random.split(key, states.reward.shape[0])
    control = _control(env, policy, params, action)
    total = transient + num_steps
    length = total if progress is None else -(-total // min(total, LYAPUNOV_CHUNKS))
    start, advance, statistics = _compiled_lyapunov(env, policy, k, length, num_steps, transient, blocks)
    state = start(states.data, keys)
    advance = _compiled(advance, (state, control), progress, f"{label}'s step", "lyapunov")
    pieces = []
    with progress.steps(total, label, "step") if progress else contextlib.nullcontext() as bar:
        for done in range(0, total, length):
            state, piece = advance(state, control)
            pieces.append(jax.block_until_ready(piece))
            if bar is not None:
                bar.update(min(length, total - done))
    logs, finite = (jnp.concatenate(parts, axis=1)[:, :total] for parts in zip(*pieces))
    return statistics(logs, finite)


LYAPUNOV_CHUNKS = 20  # stretches of a Lyapunov run shown on a bar


@functools.lru_cache(maxsize=None)
def _compiled_lyapunov(env, policy, k, length, num_steps, transient, blocks):
    """(start, advance, statistics) of a batch of Lyapunov runs in stretches of `length` steps."""
    transition = control_step_map(env, policy)

    def start(data, key):
        x = state_vector(data)
        return data, x, _initial_tangents(key, x, k)

    def advance(state, control):
        data, x, tangents = state
        ((data, _), x, tangents), out = _benettin_steps(transition, ((data, control), x, tangents), length)
        return (data, x, tangents), out

    statistics = functools.partial(_lyapunov_statistics, num_steps=num_steps, dt=env.dt, transient=transient,
                                   blocks=blocks)
    return jax.jit(jax.vmap(start)), jax.jit(jax.vmap(advance, in_axes=(0, None))), jax.jit(jax.vmap(statistics))


# ---- Jacobian spectra along a trajectory -----------------------------------------------------


class JacobianSpectrum(NamedTuple):
    """Along a trajectory of `horizon` control steps (leading batch axes under vmap):

    `eigenvalues` (horizon, n), complex, sorted by modulus, largest first, and `singular_values`
    (horizon, n), largest first, of each one-step Jacobian dx_{t+1}/dx_t; `log_norm_product`
    (horizon,): log of the spectral norm of J_t ... J_1, whose slope is the maximal Lyapunov
    exponent per step and whose exponential is the worst-case growth of a backpropagated gradient.
    Entries after the physics blows up (a non-finite state) are nan.
    """

    eigenvalues: jax.Array
    singular_values: jax.Array
    log_norm_product: jax.Array


def map_jacobian_spectrum(transition: Transition, carry: Any, x: jax.Array, horizon: int) -> JacobianSpectrum:
    """`JacobianSpectrum` of any map from (carry, x). The product is rescaled to unit Frobenius
    norm every step (the scales accumulate in log space), so long chaotic horizons do not
    overflow. The decompositions run once, batched, after the scan."""

    def step(state, _):
        carry, x, product = state
        carry, x_next, push = _linearize(transition, carry, x)
        jacobian = push(jnp.eye(x.shape[-1], dtype=x.dtype))
        product = jacobian @ product
        scale = jnp.linalg.norm(product)
        return (carry, x_next, product / scale), (jacobian, product / scale, jnp.log(scale))

    identity = jnp.eye(x.shape[-1], dtype=x.dtype)
    _, (jacobians, products, log_scales) = jax.lax.scan(step, (carry, x, identity), None, length=horizon)
    eigenvalues = jnp.linalg.eigvals(jacobians)
    order = jnp.argsort(-jnp.abs(eigenvalues), axis=-1)
    singular = jnp.linalg.svd(jacobians, compute_uv=False)
    product_norms = jnp.linalg.svd(products, compute_uv=False)[..., 0]
    return JacobianSpectrum(jnp.take_along_axis(eigenvalues, order, axis=-1), singular,
                            jnp.cumsum(log_scales) + jnp.log(product_norms))


def jacobian_spectrum(env: Env, states: State, horizon: int, policy: Policy | None = None,
                      params: Any = None, action: jax.Array | None = None, progress: Progress | None = None,
                      label: str = "jacobian") -> JacobianSpectrum:
    """`JacobianSpectrum` of `env`'s control step (closed or open loop, as in
    `lyapunov_exponents`) along `horizon` steps from each of a batch of `states`, one at a time
    (on the Ant, vmap over states x all n tangents stalled XLA's CPU runtime); `progress` counts them."""
    return _in_chunks(_compiled_jacobian(env, policy, horizon), (_control(env, policy, params, action),),
                      states.data, 1, progress, label, "state", f"{label}'s spectrum", "jacobian")


@functools.lru_cache(maxsize=None)
def _compiled_jacobian(env, policy, horizon):
    transition = control_step_map(env, policy)

    def one(control, data):
        return map_jacobian_spectrum(transition, (data, control), state_vector(data), horizon)

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


# ---- gradient variance against horizon -------------------------------------------------------


@functools.cache
def _never_terminating_class(cls: type) -> type:
    return type(f"{cls.__name__}WithoutTermination", (cls,),
                {"terminated": lambda self, data: jnp.array(False), "__module__": cls.__module__})


def without_termination(env: Env) -> Env:
    """`env` with a task whose episodes never end early (`terminated` is always false), so a rollout
    runs, and sums its loss over, the whole unroll, as in Metz et al.'s study. A physics step that
    produces a non-finite state still ends the episode (`Env.step`): there is nothing to step from."""
    task = copy.copy(env.task)
    task.__class__ = _never_terminating_class(type(env.task))
    return Env(task, env.episode_length)


def scale_weights(params: Any, scale: float) -> Any:
    """`params` with every weight matrix (every leaf of 2 or more dimensions) multiplied by `scale`
    and the biases left alone: Metz et al.'s initial-weight-scale knob, which moves a closed loop
    between stable and chaotic."""
    return jax.tree.map(lambda w: w * scale if w.ndim >= 2 else w, params)


def signal_to_noise(gram: np.ndarray) -> tuple[float, float]:
    """(SNR, its jackknife standard error) of a one-sample gradient g from the Gram matrix
    G_ij = g_i . g_j of N >= 3 samples: SNR = |E g|^2 / tr Cov g.

    |E g|^2 is estimated without bias by the mean of g_i . g_j over pairs i != j (|mean|^2 would
    overestimate it by tr Cov / N), tr Cov by the unbiased sample variance. The estimate is negative
    when the mean gradient is indistinguishable from noise; SNR > 2 stderr says it is measurably not.
    """
    gram = np.asarray(gram, np.float64)
    n = gram.shape[0]
    if gram.shape != (n, n) or n < 3:
        raise ValueError(f"signal_to_noise needs the Gram matrix of at least 3 samples, got shape {gram.shape}")

    def ratio(g):
        m, total, diagonal = g.shape[0], g.sum(), np.trace(g)
        with np.errstate(divide="ignore", invalid="ignore"):  # identical samples: no noise, SNR nan or inf
            return ((total - diagonal) / (m * (m - 1))) / ((diagonal - total / m) / (m - 1))

    keep = ~np.eye(n, dtype=bool)
    left_out = np.array([ratio(gram[keep[i]][:, keep[i]]) for i in range(n)])
    stderr = np.sqrt((n - 1) / n * np.sum(np.square(left_out - left_out.mean())))
    return float(ratio(gram)), float(stderr)


class GradientStats(NamedTuple):
    """One estimator's gradient from each of N initial states (one state per sample).

    `samples` (N, parameters) are the flattened gradients in float64; `losses` (N,) the rollout
    losses. Statistics use the finite samples only; a batch of B states averages B samples, so its
    variance is the per-sample variance / B.
    """

    samples: np.ndarray
    losses: np.ndarray

    @property
    def finite(self) -> np.ndarray:
        return np.all(np.isfinite(self.samples), axis=1)

    @property
    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.samples, axis=1)

    def summary(self) -> dict[str, float]:
        """Norm mean/median/max; `variance`, the mean over parameters of the variance across
        samples; `snr` and `snr_stderr` (see `signal_to_noise`); nan where fewer than 3 samples are
        finite."""
        finite = self.samples[self.finite]
        norms = np.linalg.norm(finite, axis=1)
        enough = finite.shape[0] >= 3
        snr, snr_stderr = signal_to_noise(finite @ finite.T) if enough else (np.nan, np.nan)
        return {
            "samples": int(self.samples.shape[0]),
            "finite_fraction": float(np.mean(self.finite)),
            "loss_mean": float(np.mean(self.losses)),
            "norm_mean": float(np.mean(norms)) if enough else np.nan,
            "norm_median": float(np.median(norms)) if enough else np.nan,
            "norm_max": float(np.max(norms)) if enough else np.nan,
            "variance": float(np.mean(np.var(finite, axis=0, ddof=1))) if enough else np.nan,
            "snr": snr,
            "snr_stderr": snr_stderr,
        }


def prefix_masks(horizons: Sequence[int], dtype) -> jax.Array:
    """(len(horizons), max(horizons)) rows of -1 on the first h steps: row @ rewards is the
    return loss of the unroll cut at h."""
    steps = jnp.arange(max(horizons))
    return -(steps[None, :] < jnp.asarray(horizons)[:, None]).astype(dtype)


def gradient_samples(env: Env, policy: Policy, params: Any, states: State, name: str, horizons: Sequence[int],
                     key: jax.Array, truncation: int | None = None, es_sigma: float = 0.05, es_pairs: int = 16,
                     remat: bool = False, chunk: int | None = None, es_rank_shaping: bool = False,
                     progress: Progress | None = None, label: str | None = None) -> dict[int, GradientStats]:
    """The gradient of estimator `name` (see `chaosgym.functional.gradients`) of the return loss (minus the
    rewards summed over the unroll) from each of a batch of N `states`, at every horizon in `horizons`.

    Every horizon comes from one unroll of the longest: the loss cut at h is a prefix sum of the
    rewards, and nothing in a rollout before step h depends on a later step, so the gradient at h
    (one backward pass per horizon, or one ES population for all) is the same number a rollout of
    h steps gives, for one compile and one forward pass. The estimators are those of
    `chaosgym.functional.gradients` (`es_*` as in `EstimatorConfig`); the ES noise of state i comes from
    `split(key, N)[i]`, as in `make_estimator`; `chunk` states run at once under `vmap` (default all),
    one bar step of `progress` (named `label`, default the estimator's name) per chunk.
    """
    label = label or name
    horizons = tuple(sorted(set(horizons)))
    config = EstimatorConfig(name=name, horizon=max(horizons), remat=remat, es_sigma=es_sigma, es_pairs=es_pairs,
                             es_rank_shaping=es_rank_shaping,
                             truncation=min(truncation, max(horizons)) if name == "truncated" else None)
    count = states.reward.shape[0]
    grads, losses = _in_chunks(_compiled_gradient_samples(env, policy, config, horizons), (params,),
                               (states, jax.random.split(key, count)), chunk or count, progress, label, "state",
                               f"{label}'s gradients", name)
    grads, losses = np.asarray(grads, np.float64), np.asarray(losses, np.float64)
    return {h: GradientStats(grads[:, i], losses[:, i]) for i, h in enumerate(horizons)}


@functools.lru_cache(maxsize=None)
def _compiled_gradient_samples(env, policy, config, horizons):
    """`(params, (states, keys)) -> (gradients, losses)`, each (N, len(horizons), ...), of N states."""
    flow = "full" if config.name in ("es", "combined") else config.name

    def rewards(params, state, flow):
        _, trajectory = rollout(env, policy, params, jax.tree.map(lambda x: x[None], state), config.horizon,
                                flow=flow, truncation=config.truncation, remat=config.remat)
        return trajectory.rewards[:, 0]

    def backprop(params, state, flow):
        rewards_, pull_back = jax.vjp(lambda p: rewards(p, state, flow), params)
        masks = prefix_masks(horizons, rewards_.dtype)
        grads = jax.vmap(lambda mask: ravel_pytree(pull_back(mask)[0])[0])(masks)
        return grads, masks @ rewards_

    def one(params, state, key):
        if config.name == "es":
            # one population for every horizon: under the vmap over the masks the rollouts, which do
            # not depend on the mask, are computed once
            def es(mask):
                grad, loss = es_gradient(lambda p: mask @ rewards(p, state, "full"), params, key, config.es_sigma,
                                         config.es_pairs, config.es_rank_shaping)
                return ravel_pytree(grad)[0], loss
            return jax.vmap(es)(prefix_masks(horizons, state.reward.dtype))
        if config.name == "combined":
            g_full, losses = backprop(params, state, "full")
            g_modified, _ = backprop(params, state, "modified")
            return combine(g_modified, g_full)[0], losses
        return backprop(params, state, flow)

    return jax.jit(highest_precision(jax.vmap(lambda params, batch: one(params, *batch), in_axes=(None, 0))))


def gradient_variance(env: Env, policy: Policy, params: Any, states: State, horizons: Sequence[int],
                      estimators: Sequence[str] = ("full", "es"), key: jax.Array | None = None,
                      truncation: int = 10, es_sigma: float = 0.05, es_pairs: int = 16,
                      remat: bool = False, chunk: int | None = None, progress: Progress | None = None,
                      es_rank_shaping: bool = False, label: str = "gradvar") -> dict[tuple[str, int], GradientStats]:
    """`GradientStats` of every estimator at every horizon from the same N `states` (see
    `gradient_samples`): the loss is minus the rewards summed over the unroll, so it grows with the
    horizon, as in Metz et al. Wrap `env` in `without_termination` to keep episodes from ending
    inside the unroll.

    Estimator names are those of `chaosgym.functional.gradients` (full, truncated, modified, stopped, combined,
    es); the truncated flow cuts every `min(truncation, max(horizons))` steps. `progress` shows
    each estimator's bar, named `label (estimator)`.
    """
    key = jax.random.key(0) if key is None else key
    results = {}
    for name in estimators:
        if name not in ESTIMATORS:
            raise ValueError(f"unknown gradient estimator {name!r}; valid: {', '.join(ESTIMATORS)}")
    for name in estimators:
        by_horizon = gradient_samples(env, policy, params, states, name, horizons, key, truncation, es_sigma,
                                      es_pairs, remat, chunk, es_rank_shaping, progress, f"{label} ({name})")
        results.update({(name, h): stats for h, stats in by_horizon.items()})
    return results


# ---- loss landscapes -------------------------------------------------------------------------


def filter_normalized_direction(key: jax.Array, params: Any) -> Any:
    """A random direction in parameter space scaled like `params`, unit by unit (Li et al., 2018):
    each output unit's incoming weights get the norm of that unit's weights; biases and other
    vectors are left out (zero), so the slice moves what the network computes, not its scale."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))

    def scaled(key, w):
        if w.ndim < 2:
            return jnp.zeros_like(w)
        d = jax.random.normal(key, w.shape, w.dtype)
        return d * jnp.linalg.norm(w, axis=-2, keepdims=True) / jnp.linalg.norm(d, axis=-2, keepdims=True)

    return jax.tree.unflatten(treedef, [scaled(k, w) for k, w in zip(keys, leaves)])


class LossLandscape(NamedTuple):
    """The rollout objective around `params`, per horizon (leading axis, in the order given):

    `line[h, i]` at params + offsets[i] d1, and `plane[h, i, j]` at
    params + plane_offsets[i] d1 + plane_offsets[j] d2, for two filter-normalised directions.
    """

    offsets: jax.Array
    line: jax.Array
    plane_offsets: jax.Array
    plane: jax.Array


def loss_landscape(env: Env, policy: Policy, params: Any, states: State, horizons: Sequence[int],
                   key: jax.Array | None = None, radius: float = 1.0, points: int = 41,
                   plane_points: int = 11, chunk: int | None = None,
                   progress: Progress | None = None) -> LossLandscape:
    """1-D (`points` offsets) and 2-D (`plane_points`^2; 0 to skip) slices of the return loss
    (minus the summed rewards, averaged over the batch `states`) for each horizon, all horizons from
    one unroll of the longest, over offsets in [-radius, radius] times the filter-normalised
    directions; `chunk` parameter points are evaluated at once (one bar step of `progress` each)."""
    key = jax.random.key(0) if key is None else key
    k1, k2 = jax.random.split(key)
    d1, d2 = filter_normalized_direction(k1, params), filter_normalized_direction(k2, params)
    offsets = jnp.linspace(-radius, radius, points)
    plane_offsets = jnp.linspace(-radius, radius, plane_points)
    a, b = (x.ravel() for x in jnp.meshgrid(plane_offsets, plane_offsets, indexing="ij"))
    coefficients = jnp.concatenate([jnp.stack([offsets, jnp.zeros_like(offsets)], 1), jnp.stack([a, b], 1)])
    horizons = tuple(horizons)
    losses = _in_chunks(_compiled_losses(env, policy, horizons), (params, d1, d2, states), coefficients,
                        chunk or coefficients.shape[0], progress, "landscape", "point", "the landscape's losses",
                        "landscape").T
    return LossLandscape(offsets, losses[:, :points], plane_offsets,
                         losses[:, points:].reshape(len(horizons), plane_points, plane_points))


@functools.lru_cache(maxsize=None)
def _compiled_losses(env, policy, horizons):
    """Return loss at every horizon (from one unroll of the longest, as in `gradient_samples`) at
    params + c[0] d1 + c[1] d2 for each row c of `coefficients`: shape (len(coefficients), len(horizons))."""

    def loss(params, d1, d2, states, c):
        moved = jax.tree.map(lambda p, u, v: p + c[0] * u + c[1] * v, params, d1, d2)
        rewards = rollout(env, policy, moved, states, max(horizons))[1].rewards
        return prefix_masks(horizons, rewards.dtype) @ jnp.mean(rewards, axis=1)

    return jax.jit(jax.vmap(loss, in_axes=(None, None, None, None, 0)))
