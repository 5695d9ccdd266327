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
from chaosgym.gradients import ESTIMATORS
from chaosgym.policies import init_policy, mlp_policy
from chaosgym.registry import parse_task_kwargs
from chaosgym import diagnostics, diagnostics_plots

DIAGNOSTICS = ("lyapunov", "jacobian", "gradvar", "landscape")
MODES = ("unforced", "policy")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _positive_floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, e.g. 0.1,1,3; got {text!r}")
    return values


def _names(valid):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(x.strip() for x in text.split(",") if x.strip())
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {unknown or text!r}; valid: {', '.join(valid)}")
        return names
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=list(chaosgym.TASKS), default=None,
                        help="task id; if omitted, the task of --policy")
    parser.add_argument("--task-kwargs", default=None, help="task options, e.g. num_links=3; if omitted, those of --policy (or none)")
    parser.add_argument("--what", type=_names(DIAGNOSTICS), default=",".join(DIAGNOSTICS),
                        help=f"comma-separated diagnostics out of {','.join(DIAGNOSTICS)}")
    parser.add_argument("--policy", default=None,
                        help="run folder of `chaosgym train` or its checkpoint.pkl; if omitted, a random MLP policy")
    parser.add_argument("--hidden", type=_ints, default="100,100", help="hidden sizes of the random policy")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random policy, initial states and directions")
    parser.add_argument("--out", required=True, help="output folder for CSV files and plots")
    parser.add_argument("--start-qpos", default=None,
                        help="comma-separated qpos replacing that of every initial state, e.g. 1.5708,0 for a raised double pendulum")
    parser.add_argument("--no-termination", action="store_true",
                        help="episodes never end inside a rollout (the task's termination is ignored), as in Metz et al.")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    chaos = parser.add_argument_group("lyapunov and jacobian")
    chaos.add_argument("--modes", type=_names(MODES), default=",".join(MODES),
                       help="unforced: zero actions (open loop); policy: the policy in closed loop")
    chaos.add_argument("--num-states", type=int, default=8, help="initial states (one estimate each)")
    chaos.add_argument("--lyapunov-steps", type=int, default=1000, help="control steps averaged per estimate")
    chaos.add_argument("--lyapunov-k", type=int, default=2, help="number of leading exponents")
    chaos.add_argument("--transient", type=int, default=100, help="control steps run first and discarded")
    chaos.add_argument("--jacobian-horizon", type=int, default=100, help="control steps of the Jacobian trajectory")
    gradvar = parser.add_argument_group("gradvar")
    gradvar.add_argument("--horizons", type=_ints, default="10,30,100", help="rollout horizons")
    gradvar.add_argument("--weight-scales", type=_positive_floats, default="1",
                         help="factors on the policy's weight matrices, e.g. 0.1,1,3; each also gets the closed "
                              "loop's maximal Lyapunov exponent (--lyapunov-steps, --transient)")
    gradvar.add_argument("--estimators", type=_names(ESTIMATORS), default="full,es",
                         help=f"out of {','.join(ESTIMATORS)}")
    gradvar.add_argument("--gradvar-samples", type=int, default=16, help="initial states, one gradient each (at least 3)")
    gradvar.add_argument("--truncation", type=int, default=10, help="window of the truncated flow")
    gradvar.add_argument("--es-sigma", type=float, default=0.05, help="ES perturbation scale")
    gradvar.add_argument("--es-pairs", type=int, default=16, help="ES antithetic pairs per gradient")
    gradvar.add_argument("--remat", action="store_true", help="checkpoint the rollout (less memory, slower)")
    gradvar.add_argument("--chunk", type=int, default=None,
                         help="gradients computed at once under vmap (fewer: less memory); None: all")
    landscape = parser.add_argument_group("landscape")
    landscape.add_argument("--landscape-horizons", type=_ints, default="10,30,100", help="rollout horizons")
    landscape.add_argument("--landscape-points", type=int, default=41, help="points of the 1-D slice")
    landscape.add_argument("--landscape-plane", type=int, default=11, help="points per side of the 2-D slice (0: none)")
    landscape.add_argument("--landscape-radius", type=float, default=1.0,
                           help="largest offset, in units of the filter-normalised direction")
    landscape.add_argument("--landscape-states", type=int, default=4, help="initial states averaged in the loss")
    landscape.add_argument("--landscape-chunk", type=int, default=None,
                           help="parameter points evaluated at once under vmap; None: all")


def load_policy(path: str) -> tuple[object, dict]:
    """(params, training config) of a `chaosgym train` run folder or its checkpoint.pkl."""
    path = Path(path)
    checkpoint = path / "checkpoint.pkl" if path.is_dir() else path
    if not checkpoint.exists():
        raise ValueError(f"no checkpoint at {checkpoint}")
    with open(checkpoint, "rb") as f:
        params = pickle.load(f)["params"]
    config_path = checkpoint.parent / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    return jax.tree.map(jnp.asarray, params), config


def _task_and_params(args):
    config, params = {}, None
    if args.policy:
        params, config = load_policy(args.policy)
    task = args.task or config.get("task")
    if task is None:
        raise ValueError("give --task (or a --policy whose config.json names it)")
    if config.get("task", task) != task:
        raise ValueError(f"--task {task} differs from the policy's task {config['task']}")
    kwargs = parse_task_kwargs(args.task_kwargs) if args.task_kwargs is not None else config.get("task_kwargs", {})
    env = chaosgym.make(task, **kwargs)
    if params is None:
        params = init_policy(jax.random.key(args.seed), env.observation_size, env.action_size, args.hidden)
    return env, params, task, kwargs


def describe(task: str, kwargs: dict, args) -> str:
    """The figures' title: the task with its options, the policy, and the study's options."""
    options = f" ({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else ""
    policy = f"policy {args.policy}" if args.policy else f"random MLP {','.join(map(str, args.hidden))}, seed {args.seed}"
    termination = ", no termination" if args.no_termination else ""
    return f"{task}{options}: {policy}{termination}"


def initial_states(env, key, count: int, start_qpos: str | None):
    """`count` states from the task's reset; with `start_qpos`, their qpos is replaced by it."""
    states = jax.vmap(env.reset)(jax.random.split(key, count))
    if start_qpos is None:
        return states
    qpos = jnp.asarray([float(x) for x in start_qpos.split(",")], states.data.qpos.dtype)
    if qpos.shape[0] != env.mj_model.nq:
        raise ValueError(f"--start-qpos needs {env.mj_model.nq} values, got {qpos.shape[0]}")
    return states.replace(data=states.data.replace(qpos=jnp.broadcast_to(qpos, states.data.qpos.shape)))


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _mode_kwargs(mode: str, params) -> dict:
    return {"policy": mlp_policy, "params": params} if mode == "policy" else {}


def run_lyapunov(env, params, states, args, out: Path, title: str) -> dict:
    results = {}
    for mode in tqdm(args.modes, desc="lyapunov", disable=args.no_progress):
        results[mode] = jax.device_get(diagnostics.lyapunov_exponents(
            env, states, args.lyapunov_steps, args.lyapunov_k, transient=args.transient,
            key=jax.random.key(args.seed), **_mode_kwargs(mode, params)))
    rows, running_rows = [], []
    stride = max(1, args.lyapunov_steps // 200)
    for mode, result in results.items():
        for start in range(result.exponents.shape[0]):
            rows += [[mode, start, i + 1, result.exponents[start, i], result.stderr[start, i], result.steps[start]]
                     for i in range(args.lyapunov_k)]
            running_rows += [[mode, start, t + 1, (t + 1) * env.dt, *result.running[start, t]]
                             for t in range(stride - 1, args.lyapunov_steps, stride)]
    _write_csv(out / "lyapunov.csv", ["mode", "start", "index", "exponent", "stderr", "steps"], rows)
    _write_csv(out / "lyapunov_running.csv", ["mode", "start", "step", "time",
               *[f"exponent_{i + 1}" for i in range(args.lyapunov_k)]], running_rows)
    diagnostics_plots.plot_lyapunov(results, env.dt, out / "lyapunov.png", title)
    return results


def run_jacobian(env, params, states, args, out: Path, title: str) -> dict:
    results = {}
    for mode in tqdm(args.modes, desc="jacobian", disable=args.no_progress):
        results[mode] = jax.device_get(diagnostics.jacobian_spectrum(
            env, states, args.jacobian_horizon, **_mode_kwargs(mode, params)))
    rows = []
    for mode, spectrum in results.items():
        radius = np.abs(spectrum.eigenvalues[..., 0])
        for start in range(radius.shape[0]):
            rows += [[mode, start, t + 1, (t + 1) * env.dt, radius[start, t], spectrum.singular_values[start, t, 0],
                      spectrum.singular_values[start, t, -1], spectrum.log_norm_product[start, t]]
                     for t in range(args.jacobian_horizon)]
    _write_csv(out / "jacobian.csv", ["mode", "start", "step", "time", "spectral_radius", "max_singular_value",
                                      "min_singular_value", "log_norm_product"], rows)
    diagnostics_plots.plot_jacobian(results, env.dt, out / "jacobian.png", title)
    return results


def run_gradvar(env, params, states, args, out: Path, title: str) -> dict:
    """Gradient statistics per weight scale, estimator and horizon, and the closed loop's maximal
    Lyapunov exponent at each weight scale (from the same states)."""
    stats, exponents = {}, {}
    for scale in tqdm(args.weight_scales, desc="weight scales", disable=args.no_progress or len(args.weight_scales) == 1):
        scaled = diagnostics.scale_weights(params, scale)
        lyapunov = diagnostics.lyapunov_exponents(env, states, args.lyapunov_steps, 1, policy=mlp_policy, params=scaled,
                                                  transient=args.transient, key=jax.random.key(args.seed))
        exponents[scale] = (*diagnostics.mean_and_stderr(lyapunov.exponents[:, 0]), int(np.min(lyapunov.steps)))
        results = diagnostics.gradient_variance(
            env, mlp_policy, scaled, states, args.horizons, args.estimators, jax.random.key(args.seed),
            truncation=args.truncation, es_sigma=args.es_sigma, es_pairs=args.es_pairs, remat=args.remat, chunk=args.chunk, progress=not args.no_progress)
        stats.update({(name, horizon, scale): s for (name, horizon), s in results.items()})
    columns = ["samples", "finite_fraction", "loss_mean", "norm_mean", "norm_median", "norm_max", "variance",
               "snr", "snr_stderr"]
    _write_csv(out / "gradvar.csv", ["weight_scale", "estimator", "horizon", *columns],
               [[scale, name, horizon, *(s.summary()[c] for c in columns)] for (name, horizon, scale), s in stats.items()])
    _write_csv(out / "weight_scales.csv", ["weight_scale", "lyapunov", "lyapunov_stderr", "min_steps"],
               [[scale, *values] for scale, values in exponents.items()])
    diagnostics_plots.plot_gradient_variance(stats, exponents, out / "gradvar.png", title)
    return {"stats": stats, "exponents": exponents}


def run_landscape(env, params, states, args, out: Path, title: str):
    landscape = jax.device_get(diagnostics.loss_landscape(
        env, mlp_policy, params, states, args.landscape_horizons, jax.random.key(args.seed),
        radius=args.landscape_radius, points=args.landscape_points, plane_points=args.landscape_plane,
        chunk=args.landscape_chunk))
    horizons = args.landscape_horizons
    _write_csv(out / "landscape_1d.csv", ["horizon", "offset", "loss"],
               [[h, a, landscape.line[i, j]] for i, h in enumerate(horizons) for j, a in enumerate(landscape.offsets)])
    offsets = landscape.plane_offsets
    _write_csv(out / "landscape_2d.csv", ["horizon", "offset_1", "offset_2", "loss"],
               [[h, a, b, landscape.plane[i, j, k]] for i, h in enumerate(horizons)
                for j, a in enumerate(offsets) for k, b in enumerate(offsets)])
    diagnostics_plots.plot_landscape(landscape, horizons, out / "landscape.png", title)
    return landscape


RUNNERS = {"lyapunov": run_lyapunov, "jacobian": run_jacobian, "gradvar": run_gradvar, "landscape": run_landscape}
STATE_COUNTS = {"lyapunov": "num_states", "jacobian": "num_states", "gradvar": "gradvar_samples",
                "landscape": "landscape_states"}


def diagnose(args: argparse.Namespace) -> dict:
    """Run the diagnostics of `args.what`; return their results by name."""
    env, params, task, kwargs = _task_and_params(args)
    if args.no_termination:
        env = diagnostics.without_termination(env)
    if "gradvar" in args.what and args.gradvar_samples < 3:
        raise ValueError(f"--gradvar-samples must be at least 3 (the signal-to-noise ratio's error needs them), got {args.gradvar_samples}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = describe(task, kwargs, args)
    results = {}
    for name in args.what:
        # every diagnostic draws its own initial states, the same ones on every run
        key = jax.random.fold_in(jax.random.key(args.seed), DIAGNOSTICS.index(name))
        states = initial_states(env, key, getattr(args, STATE_COUNTS[name]), args.start_qpos)
        results[name] = RUNNERS[name](env, params, states, args, out, title)
    return results


def run(args: argparse.Namespace) -> int:
    results = diagnose(args)
    if "lyapunov" in results:
        for mode, result in results["lyapunov"].items():
            mean, stderr = diagnostics.mean_and_stderr(result.exponents[:, 0])
            print(f"maximal Lyapunov exponent ({mode}): {mean:.4g} ± {stderr:.2g} per s")
    print(f"wrote {', '.join(sorted(p.name for p in Path(args.out).iterdir()))} to {args.out}")
    return 0
