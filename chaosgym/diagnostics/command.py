"""`chaosgym diagnose`: chaos diagnostics of a task under a policy, as CSV files and PNG plots.

    chaosgym diagnose --task ChaosDoublePendulum-v0 --what lyapunov,gradvar --out runs/diag

Without `--policy` the closed loop runs a randomly initialised MLP policy (`--hidden`, `--seed`);
with `--policy RUN_DIR` (or its checkpoint.pkl) it runs a policy trained by `chaosgym train`.
Outputs in --out: lyapunov.csv, lyapunov_running.csv, jacobian.csv, gradvar.csv, weight_scales.csv,
landscape_1d.csv, landscape_2d.csv and one PNG per diagnostic.

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
import json
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import chaosgym
from chaosgym.diagnostics import measures as diagnostics, plots as diagnostics_plots
# the settings and their flags, JAX-free for the command line; re-exported
from chaosgym.diagnostics.config import DIAGNOSTICS, DiagnoseConfig, add_arguments, config_from_args  # noqa: F401
from chaosgym.functional.policies import init_policy, mlp_policy

def load_policy(path: str) -> tuple[object, dict]:
    """(params, training config) of a `chaosgym train` run folder or its checkpoint.pkl."""
    path = Path(path)
    checkpoint = path / "checkpoint.pkl" if path.is_dir() else path
    if not checkpoint.exists():
        raise ValueError(f"no checkpoint at {checkpoint}")
    try:
        with open(checkpoint, "rb") as f:
            params = pickle.load(f)["params"]
    # a truncated, empty or foreign file: any of these, depending on where its bytes stop making sense
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError, ImportError, IndexError) as error:
        raise ValueError(f"{checkpoint} is not a readable checkpoint of `chaosgym train` "
                         f"({type(error).__name__}: {error})") from None
    config_path = checkpoint.parent / "config.json"
    try:
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error})") from None
    return jax.tree.map(jnp.asarray, params), config


def _task_and_params(config: DiagnoseConfig):
    trained, params = {}, None
    if config.policy:
        params, trained = load_policy(config.policy)
    task = config.task or trained.get("task")
    if task is None:
        raise ValueError("give --task (or a --policy whose config.json names it)")
    if trained.get("task", task) != task:
        raise ValueError(f"--task {task} differs from the policy's task {trained['task']}")
    kwargs = config.task_kwargs if config.task_kwargs is not None else trained.get("task_kwargs", {})
    env = chaosgym.make(task, **kwargs)
    if params is None:
        params = init_policy(jax.random.key(config.seed), env.observation_size, env.action_size, config.hidden)
    return env, params, task, kwargs


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
        raise ValueError(f"--start-qpos needs {env.mj_model.nq} values (the task's qpos), got {len(start_qpos)}")


def initial_states(env, key, count: int, start_qpos: tuple[float, ...] | None):
    """`count` states from the task's reset; with `start_qpos`, their qpos is replaced by it."""
    states = jax.vmap(env.reset)(jax.random.split(key, count))
    if start_qpos is None:
        return states
    check_start_qpos(env, start_qpos)
    qpos = jnp.asarray(start_qpos, states.data.qpos.dtype)
    return states.replace(data=states.data.replace(qpos=jnp.broadcast_to(qpos, states.data.qpos.shape)))


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _mode_kwargs(mode: str, params) -> dict:
    return {"policy": mlp_policy, "params": params} if mode == "policy" else {}


def run_lyapunov(env, params, states, config: DiagnoseConfig, title: str) -> dict:
    results = {}
    for mode in tqdm(config.modes, desc="lyapunov", disable=config.no_progress):
        results[mode] = jax.device_get(diagnostics.lyapunov_exponents(
            env, states, config.lyapunov_steps, config.lyapunov_k, transient=config.transient,
            key=jax.random.key(config.seed), **_mode_kwargs(mode, params)))
    rows, running_rows = [], []
    stride = max(1, config.lyapunov_steps // 200)
    for mode, result in results.items():
        for start in range(result.exponents.shape[0]):
            rows += [[mode, start, i + 1, result.exponents[start, i], result.stderr[start, i], result.steps[start]]
                     for i in range(config.lyapunov_k)]
            running_rows += [[mode, start, t + 1, (t + 1) * env.dt, *result.running[start, t]]
                             for t in range(stride - 1, config.lyapunov_steps, stride)]
    _write_csv(config.out / "lyapunov.csv", ["mode", "start", "index", "exponent", "stderr", "steps"], rows)
    _write_csv(config.out / "lyapunov_running.csv", ["mode", "start", "step", "time",
               *[f"exponent_{i + 1}" for i in range(config.lyapunov_k)]], running_rows)
    diagnostics_plots.plot_lyapunov(results, env.dt, config.out / "lyapunov.png", title)
    return results


def run_jacobian(env, params, states, config: DiagnoseConfig, title: str) -> dict:
    results = {}
    for mode in tqdm(config.modes, desc="jacobian", disable=config.no_progress):
        results[mode] = jax.device_get(diagnostics.jacobian_spectrum(
            env, states, config.jacobian_horizon, **_mode_kwargs(mode, params)))
    rows = []
    for mode, spectrum in results.items():
        radius = np.abs(spectrum.eigenvalues[..., 0])
        for start in range(radius.shape[0]):
            rows += [[mode, start, t + 1, (t + 1) * env.dt, radius[start, t], spectrum.singular_values[start, t, 0],
                      spectrum.singular_values[start, t, -1], spectrum.log_norm_product[start, t]]
                     for t in range(config.jacobian_horizon)]
    _write_csv(config.out / "jacobian.csv", ["mode", "start", "step", "time", "spectral_radius",
                                             "max_singular_value", "min_singular_value", "log_norm_product"], rows)
    diagnostics_plots.plot_jacobian(results, env.dt, config.out / "jacobian.png", title)
    return results


def run_gradvar(env, params, states, config: DiagnoseConfig, title: str) -> dict:
    """Gradient statistics per weight scale, estimator and horizon, and the closed loop's maximal
    Lyapunov exponent at each weight scale (from the same states)."""
    stats, exponents, e = {}, {}, config.estimator
    quiet = config.no_progress or len(config.weight_scales) == 1
    for scale in tqdm(config.weight_scales, desc="weight scales", disable=quiet):
        scaled = diagnostics.scale_weights(params, scale)
        lyapunov = diagnostics.lyapunov_exponents(env, states, config.lyapunov_steps, 1, policy=mlp_policy,
                                                  params=scaled, transient=config.transient,
                                                  key=jax.random.key(config.seed))
        exponents[scale] = (*diagnostics.mean_and_stderr(lyapunov.exponents[:, 0]), int(np.min(lyapunov.steps)))
        results = diagnostics.gradient_variance(
            env, mlp_policy, scaled, states, config.horizons, config.estimators, jax.random.key(config.seed),
            truncation=e.truncation, es_sigma=e.es_sigma, es_pairs=e.es_pairs, remat=e.remat, chunk=config.chunk,
            progress=not config.no_progress)
        stats.update({(name, horizon, scale): s for (name, horizon), s in results.items()})
    columns = ["samples", "finite_fraction", "loss_mean", "norm_mean", "norm_median", "norm_max", "variance",
               "snr", "snr_stderr"]
    _write_csv(config.out / "gradvar.csv", ["weight_scale", "estimator", "horizon", *columns],
               [[scale, name, horizon, *(s.summary()[c] for c in columns)]
                for (name, horizon, scale), s in stats.items()])
    _write_csv(config.out / "weight_scales.csv", ["weight_scale", "lyapunov", "lyapunov_stderr", "min_steps"],
               [[scale, *values] for scale, values in exponents.items()])
    diagnostics_plots.plot_gradient_variance(stats, exponents, config.out / "gradvar.png", title)
    return {"stats": stats, "exponents": exponents}


def run_landscape(env, params, states, config: DiagnoseConfig, title: str):
    landscape = jax.device_get(diagnostics.loss_landscape(
        env, mlp_policy, params, states, config.landscape_horizons, jax.random.key(config.seed),
        radius=config.landscape_radius, points=config.landscape_points, plane_points=config.landscape_plane,
        chunk=config.landscape_chunk))
    horizons = config.landscape_horizons
    _write_csv(config.out / "landscape_1d.csv", ["horizon", "offset", "loss"],
               [[h, a, landscape.line[i, j]] for i, h in enumerate(horizons) for j, a in enumerate(landscape.offsets)])
    offsets = landscape.plane_offsets
    _write_csv(config.out / "landscape_2d.csv", ["horizon", "offset_1", "offset_2", "loss"],
               [[h, a, b, landscape.plane[i, j, k]] for i, h in enumerate(horizons)
                for j, a in enumerate(offsets) for k, b in enumerate(offsets)])
    diagnostics_plots.plot_landscape(landscape, horizons, config.out / "landscape.png", title)
    return landscape


RUNNERS = {"lyapunov": run_lyapunov, "jacobian": run_jacobian, "gradvar": run_gradvar, "landscape": run_landscape}
STATE_COUNTS = {"lyapunov": "num_states", "jacobian": "num_states", "gradvar": "gradvar_samples",
                "landscape": "landscape_states"}


def diagnose(config: DiagnoseConfig) -> dict:
    """Run the diagnostics of `config.what`, writing into `config.out`; return their results by name."""
    env, params, task, kwargs = _task_and_params(config)
    if config.no_termination:
        env = diagnostics.without_termination(env)
    check_start_qpos(env, config.start_qpos)  # before anything is written
    config.out.mkdir(parents=True, exist_ok=True)
    title = describe(task, kwargs, config)
    results = {}
    for name in config.what:
        # every diagnostic draws its own initial states, the same ones on every run
        key = jax.random.fold_in(jax.random.key(config.seed), DIAGNOSTICS.index(name))
        states = initial_states(env, key, getattr(config, STATE_COUNTS[name]), config.start_qpos)
        results[name] = RUNNERS[name](env, params, states, config, title)
    return results


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    results = diagnose(config)
    if "lyapunov" in results:
        for mode, result in results["lyapunov"].items():
            mean, stderr = diagnostics.mean_and_stderr(result.exponents[:, 0])
            print(f"maximal Lyapunov exponent ({mode}): {mean:.4g} ± {stderr:.2g} per s")
    print(f"wrote {', '.join(sorted(p.name for p in config.out.iterdir()))} to {config.out}")
    return 0
