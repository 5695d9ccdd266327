"""`chaosgym diagnose`: chaos diagnostics of a task under a policy, as CSV files and PNG plots.

    chaosgym diagnose --task ChaosDoublePendulum-v0 --what lyapunov,gradvar --out runs/diag

Without `--policy` the closed loop runs a randomly initialised MLP policy (`--hidden`, `--seed`);
with `--policy RUN_DIR` it runs the run's own trained policy, whatever its agent (read by
`chaosgym.agents.diagnose_command`, the command the CLI runs: the core reads no agent's files).
Outputs in --out (`OUTPUTS`): lyapunov.csv, lyapunov_running.csv, lyapunov_summary.csv,
jacobian.csv, gradvar.csv, weight_scales.csv, landscape_1d.csv, landscape_2d.csv and one PNG per
diagnostic. A folder that holds what this run would write (an earlier diagnose's results) is
refused unless `--overwrite`, and a `chaosgym train` run's folder always; every file is written
whole or not at all (`chaosgym.files.write_atomic`), never through a symbolic link.

Each quantity is computed once and shown the same everywhere: the closed loop's maximal Lyapunov
exponent at a weight scale (the `policy` mode of lyapunov is weight scale 1 of gradvar) comes from
one run, on the lyapunov diagnostic's initial states, and the console, the CSV files and the
figures' legends give its numbers. While it runs, diagnose says on stderr what it computes, how
long each compile typically takes, and how far each long computation has got (`measures.Progress`).

Metz et al.'s gradient study, on the Ant, with the loss summed over unrolls that never terminate and
the policy's initial weights scaled by 0.1, 1 and 3:

    chaosgym diagnose --task ChaosAnt-v0 --what gradvar --no-termination --weight-scales 0.1,1,3 \
        --horizons 10,30,100 --es-pairs 128 --out runs/metz

Every setting is a field of `DiagnoseConfig` (the flags are generated from it, `chaosgym.flags`);
from Python: `diagnose(DiagnoseConfig(task="ChaosAnt-v0", what=("gradvar",), out=Path("runs/metz")))`.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import chaosgym
from chaosgym.diagnostics import measures as diagnostics, plots as diagnostics_plots
# the settings and their flags, JAX-free for the command line; re-exported
from chaosgym.diagnostics.config import DIAGNOSTICS, DiagnoseConfig, add_arguments, config_from_args  # noqa: F401
from chaosgym.files import refuse_link, write_atomic
from chaosgym.functional.policies import init_policy, mlp_policy
from chaosgym.measured import MEASURED
from chaosgym.validation import UserError

class TrainedPolicy(NamedTuple):
    """A policy to study: `apply(params, obs) -> action` (differentiable, deterministic) with its
    parameters, and the task it was trained on. `chaosgym diagnose --policy RUN` reads a run's own
    (any agent's) through `chaosgym.agents.api.jax_policy`: the core reads no agent's files itself."""

    apply: Callable
    params: Any
    task: str
    task_kwargs: dict


def _task_and_policy(config: DiagnoseConfig, trained: TrainedPolicy | None):
    """`(env, apply, params, task, kwargs)`: the trained policy's, or a random tanh MLP's."""
    if config.policy and trained is None:
        raise UserError(f"--policy {config.policy}: a trained policy is read by chaosgym.agents; run "
                        "`chaosgym diagnose --policy RUN` or pass `trained=`, a TrainedPolicy of what "
                        "`chaosgym.agents.api.jax_policy(RUN)` returns")
    task = config.task or (trained.task if trained else None)
    if task is None:
        raise UserError("give --task (or a --policy whose config.json names it)")
    if trained is not None and trained.task != task:
        raise UserError(f"--task {task} differs from the policy's task {trained.task}")
    kwargs = config.task_kwargs if config.task_kwargs is not None else (trained.task_kwargs if trained else {})
    env = chaosgym.make(task, **kwargs)
    if trained is not None:
        return env, trained.apply, trained.params, task, kwargs
    params = init_policy(jax.random.key(config.seed), env.observation_size, env.action_size, config.hidden)
    return env, mlp_policy, params, task, kwargs


def describe(task: str, kwargs: dict, config: DiagnoseConfig) -> str:
    """The figures' title: the task with its options, the policy, and the study's options."""
    options = f" ({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else ""
    policy = (f"policy {config.policy}" if config.policy
              else f"random MLP {','.join(map(str, config.hidden))}, seed {config.seed}")
    termination = ", no termination" if config.no_termination else ""
    return f"{task}{options}: {policy}{termination}"


def check_start_qpos(env, start_qpos: tuple[float, ...] | None) -> None:
    """Refuse a `--start-qpos` whose length is not the task's number of joint coordinates."""
    if start_qpos is not None and len(start_qpos) != env.mj_model.nq:
        raise UserError(f"--start-qpos needs {env.mj_model.nq} values (the task's qpos), got {len(start_qpos)}")


# what each diagnostic writes into --out
OUTPUTS = {"lyapunov": ("lyapunov.csv", "lyapunov_running.csv", "lyapunov_summary.csv", "lyapunov.png"),
           "jacobian": ("jacobian.csv", "jacobian.png"),
           "gradvar": ("gradvar.csv", "weight_scales.csv", "gradvar.png"),
           "landscape": ("landscape_1d.csv", "landscape_2d.csv", "landscape.png")}


def check_out(config: DiagnoseConfig) -> None:
    """Refuse an --out that is a training run's folder, one holding a file this run would write
    (unless `overwrite`), or an output path that is a symbolic link: before anything is computed."""
    out = config.out
    if (out / "config.json").exists() and (out / "metrics.csv").exists():
        raise UserError(f"--out {out} is the folder of a `chaosgym train` run; give diagnose a folder of its own")
    names = [name for what in config.what for name in OUTPUTS[what]]
    for name in names:
        refuse_link(out / name)
    earlier = [name for name in names if (out / name).exists()]
    if earlier and not config.overwrite:
        raise UserError(f"--out {out} holds results of an earlier diagnose ({', '.join(earlier)}); give a new "
                         "folder, or --overwrite to replace them")


@functools.lru_cache(maxsize=None)
def _batched_reset(env):
    return jax.jit(jax.vmap(env.reset))  # compiled: MJX's reset run op by op took tens of seconds


def initial_states(env, key, count: int, start_qpos: tuple[float, ...] | None,
                   progress: diagnostics.Progress | None = None):
    """`count` states from the task's reset; with `start_qpos`, their qpos is replaced by it."""
    keys, reset = jax.random.split(key, count), _batched_reset(env)
    if progress is not None:
        reset = progress.compiled(reset, (keys,), "the task's reset", str(MEASURED["diagnose_reset"]))
    states = reset(keys)
    if start_qpos is None:
        return states
    check_start_qpos(env, start_qpos)
    qpos = jnp.asarray(start_qpos, states.data.qpos.dtype)
    return states.replace(data=states.data.replace(qpos=jnp.broadcast_to(qpos, states.data.qpos.shape)))


def _write_csv(path: Path, header: list[str], rows) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode())


STATE_COUNTS = {"lyapunov": "num_states", "jacobian": "num_states", "gradvar": "gradvar_samples",
                "landscape": "landscape_states"}


@dataclass
class Diagnosis:
    """One `chaosgym diagnose`: the environment and policy studied, and what is computed once and
    shared: each diagnostic's initial states, and the Lyapunov exponents of the unforced loop (under
    None) and of the closed loop (by weight scale), reported with the same numbers everywhere."""

    env: chaosgym.Env
    policy: Callable
    params: object
    config: DiagnoseConfig
    title: str
    progress: diagnostics.Progress
    exponents: dict = field(default_factory=dict)
    drawn: dict = field(default_factory=dict)  # initial states by diagnostic

    def states(self, name: str):
        """The initial states of diagnostic `name`: its own draw, the same on every run."""
        if name not in self.drawn:
            key = jax.random.fold_in(jax.random.key(self.config.seed), DIAGNOSTICS.index(name))
            self.drawn[name] = initial_states(self.env, key, self.count(name), self.config.start_qpos, self.progress)
        return self.drawn[name]

    def count(self, name: str) -> int:
        return getattr(self.config, STATE_COUNTS[name])

    def lyapunov(self, scale: float | None) -> diagnostics.LyapunovResult:
        """The top `lyapunov_k` exponents of the unforced loop (`scale` None) or of the closed loop
        under the policy with its weights times `scale`, from the lyapunov diagnostic's states;
        computed on first use, and its maximal exponent printed then."""
        if scale not in self.exponents:
            c = self.config
            name = "unforced" if scale is None else "policy" if scale == 1 else f"policy, weights ×{scale:g}"
            control = {} if scale is None else {
                "policy": self.policy, "params": self.params if scale == 1 else diagnostics.scale_weights(self.params, scale)}
            self.progress.say(f"lyapunov ({name}): the top {c.lyapunov_k} exponent(s) from {self.count('lyapunov')} "
                              f"states, {c.transient} + {c.lyapunov_steps} control steps each")
            result = jax.device_get(diagnostics.lyapunov_exponents(
                self.env, self.states("lyapunov"), c.lyapunov_steps, c.lyapunov_k, transient=c.transient,
                key=jax.random.key(c.seed), progress=self.progress, label=f"lyapunov ({name})", **control))
            self.exponents[scale] = result
            mean, stderr = diagnostics.mean_and_stderr(result.exponents[:, 0])
            tqdm.write(f"maximal Lyapunov exponent ({name}): {diagnostics_plots.exponent_text(mean, stderr)}")
        return self.exponents[scale]


def run_lyapunov(d: Diagnosis) -> dict:
    config = d.config
    results = {mode: d.lyapunov(None if mode == "unforced" else 1.0) for mode in config.modes}
    rows, running_rows, summary_rows = [], [], []
    stride = max(1, config.lyapunov_steps // 200)
    for mode, result in results.items():
        for start in range(result.exponents.shape[0]):
            rows += [[mode, start, i + 1, result.exponents[start, i], result.stderr[start, i], result.steps[start]]
                     for i in range(config.lyapunov_k)]
            running_rows += [[mode, start, t + 1, (t + 1) * d.env.dt, *result.running[start, t]]
                             for t in range(stride - 1, config.lyapunov_steps, stride)]
        summary_rows += [[mode, i + 1, *diagnostics.mean_and_stderr(result.exponents[:, i]),
                          int(np.min(result.steps))] for i in range(config.lyapunov_k)]
    _write_csv(config.out / "lyapunov.csv", ["mode", "start", "index", "exponent", "stderr", "steps"], rows)
    _write_csv(config.out / "lyapunov_running.csv", ["mode", "start", "step", "time",
               *[f"exponent_{i + 1}" for i in range(config.lyapunov_k)]], running_rows)
    # the mean over starts, and its standard error across them: the numbers the console and figure show
    _write_csv(config.out / "lyapunov_summary.csv", ["mode", "index", "exponent", "stderr", "min_steps"],
               summary_rows)
    diagnostics_plots.plot_lyapunov(results, d.env.dt, config.out / "lyapunov.png", d.title)
    return results


def run_jacobian(d: Diagnosis) -> dict:
    config = d.config
    results = {}
    for mode in config.modes:
        d.progress.say(f"jacobian ({mode}): one-step Jacobians and their products along {config.jacobian_horizon} "
                       f"control steps from {d.count('jacobian')} states")
        control = {"policy": d.policy, "params": d.params} if mode == "policy" else {}
        results[mode] = jax.device_get(diagnostics.jacobian_spectrum(
            d.env, d.states("jacobian"), config.jacobian_horizon, progress=d.progress, label=f"jacobian ({mode})",
            **control))
    rows = []
    for mode, spectrum in results.items():
        radius = np.abs(spectrum.eigenvalues[..., 0])
        for start in range(radius.shape[0]):
            rows += [[mode, start, t + 1, (t + 1) * d.env.dt, radius[start, t], spectrum.singular_values[start, t, 0],
                      spectrum.singular_values[start, t, -1], spectrum.log_norm_product[start, t]]
                     for t in range(config.jacobian_horizon)]
    _write_csv(config.out / "jacobian.csv", ["mode", "start", "step", "time", "spectral_radius",
                                             "max_singular_value", "min_singular_value", "log_norm_product"], rows)
    diagnostics_plots.plot_jacobian(results, d.env.dt, config.out / "jacobian.png", d.title)
    return results


def run_gradvar(d: Diagnosis) -> dict:
    """Gradient statistics per weight scale, estimator and horizon, and the closed loop's maximal
    Lyapunov exponent at each weight scale (`Diagnosis.lyapunov`)."""
    config, e = d.config, d.config.estimator
    stats, exponents = {}, {}
    for scale in config.weight_scales:
        lyapunov = d.lyapunov(scale)
        exponents[scale] = (*diagnostics.mean_and_stderr(lyapunov.exponents[:, 0]), int(np.min(lyapunov.steps)))
        at = "" if len(config.weight_scales) == 1 else f", weights ×{scale:g}"
        d.progress.say(f"gradvar ({', '.join(config.estimators)}{at}): a gradient from each of "
                       f"{d.count('gradvar')} states at horizons {', '.join(map(str, config.horizons))}"
                       + (f", ES with {e.es_pairs} antithetic pairs" if "es" in config.estimators else ""))
        results = diagnostics.gradient_variance(
            d.env, d.policy, diagnostics.scale_weights(d.params, scale), d.states("gradvar"), config.horizons,
            config.estimators, jax.random.key(config.seed), truncation=e.truncation, es_sigma=e.es_sigma,
            es_pairs=e.es_pairs, remat=e.remat, chunk=config.chunk, progress=d.progress, label=f"gradvar{at}")
        stats.update({(name, horizon, scale): s for (name, horizon), s in results.items()})
    columns = ["samples", "finite_fraction", "loss_mean", "norm_mean", "norm_median", "norm_max", "variance",
               "snr", "snr_stderr"]
    _write_csv(config.out / "gradvar.csv", ["weight_scale", "estimator", "horizon", *columns],
               [[scale, name, horizon, *(s.summary()[c] for c in columns)]
                for (name, horizon, scale), s in stats.items()])
    _write_csv(config.out / "weight_scales.csv", ["weight_scale", "lyapunov", "lyapunov_stderr", "min_steps"],
               [[scale, *values] for scale, values in exponents.items()])
    diagnostics_plots.plot_gradient_variance(stats, exponents, config.out / "gradvar.png", d.title)
    return {"stats": stats, "exponents": exponents}


def run_landscape(d: Diagnosis):
    config, horizons = d.config, d.config.landscape_horizons
    d.progress.say(f"landscape: the loss at {config.landscape_points} + {config.landscape_plane}² parameter points "
                   f"around the policy, horizons {', '.join(map(str, horizons))}, {d.count('landscape')} states")
    landscape = jax.device_get(diagnostics.loss_landscape(
        d.env, d.policy, d.params, d.states("landscape"), horizons, jax.random.key(config.seed),
        radius=config.landscape_radius, points=config.landscape_points, plane_points=config.landscape_plane,
        chunk=config.landscape_chunk, progress=d.progress))
    _write_csv(config.out / "landscape_1d.csv", ["horizon", "offset", "loss"],
               [[h, a, landscape.line[i, j]] for i, h in enumerate(horizons) for j, a in enumerate(landscape.offsets)])
    offsets = landscape.plane_offsets
    _write_csv(config.out / "landscape_2d.csv", ["horizon", "offset_1", "offset_2", "loss"],
               [[h, a, b, landscape.plane[i, j, k]] for i, h in enumerate(horizons)
                for j, a in enumerate(offsets) for k, b in enumerate(offsets)])
    diagnostics_plots.plot_landscape(landscape, horizons, config.out / "landscape.png", d.title)
    return landscape


RUNNERS = {"lyapunov": run_lyapunov, "jacobian": run_jacobian, "gradvar": run_gradvar, "landscape": run_landscape}


def diagnose(config: DiagnoseConfig, trained: TrainedPolicy | None = None) -> dict:
    """Run the diagnostics of `config.what`, writing into `config.out`; return their results by name.
    The closed loop runs `trained` (a run's own policy, `chaosgym.agents.api.jax_policy`) or, without
    one, a random tanh MLP (`--hidden`, `--seed`)."""
    check_out(config)  # before anything is computed
    progress = diagnostics.Progress(not config.no_progress)
    progress.say(f"diagnose: {', '.join(config.what)} of {config.task or config.policy}, into {config.out}")
    env, policy, params, task, kwargs = _task_and_policy(config, trained)
    if config.no_termination:
        env = diagnostics.without_termination(env)
    check_start_qpos(env, config.start_qpos)  # before anything is written
    config.out.mkdir(parents=True, exist_ok=True)
    d = Diagnosis(env, policy, params, config, describe(task, kwargs, config), progress)
    return {name: RUNNERS[name](d) for name in config.what}


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    diagnose(config)
    written = [name for what in config.what for name in OUTPUTS[what]]
    print(f"wrote {', '.join(written)} to {config.out}")
    return 0
