"""The chaos diagnostics of every run of a comparison, under its policy at the start and at the end.

For each run folder of `chaosgym compare` (OUT/runs/*): the maximal Lyapunov exponent of the task in
closed loop with the policy, and the norms of the full-BPTT gradient of the return at a few horizons
(`chaosgym diagnose --what lyapunov,gradvar --modes policy`), computed twice: with the run's
initial parameters (rebuilt exactly as training began: the agent's own `init` on the run's seed, or
SB3's model built on it) and with its newest checkpoint. Brax's runs have no initial policy here
(Brax builds it inside `train`); they get the end only.

    python experiments/policy_diagnostics.py --compare runs/ant-4M --out docs/data/ant_4M/diagnostics

It writes `policy_diagnostics.csv` (one row per run, moment and horizon: agent, seed, env steps of
the checkpoint, Lyapunov exponent with its standard error, gradient-norm median and max, the
fraction of finite gradients) and each diagnosis's own CSVs in `OUT/<run>-<moment>/`. Runs already
diagnosed (their folder holds gradvar.csv) are read back, not redone.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import jax

from chaosgym.agents.api import jax_policy
from chaosgym.agents.run import Run
from chaosgym.diagnostics.command import TrainedPolicy, diagnose
from chaosgym.diagnostics.config import DiagnoseConfig
from chaosgym.files import write_atomic

COLUMNS = ["run", "agent", "seed", "moment", "env_steps", "lyapunov", "lyapunov_stderr", "horizon", "norm_median",
           "norm_max", "finite_fraction", "samples"]


def initial_policy(run: Run) -> tuple | None:
    """`(apply, params)` as the run's training began, or None where chaosgym cannot rebuild it."""
    config = run.config
    kind = config.spec.kind
    if kind in ("estimator", "carried"):
        from chaosgym.agents.loop import core_of

        core = core_of(config)
        params, _ = core.init(jax.random.key(config.seed))
        return core.apply, params
    if kind == "sb3":
        from chaosgym.agents import sb3

        venv = sb3.make_compiled_vec_env(config.task, config.task_kwargs, 1, config.seed)
        return sb3.jax_policy_of(sb3.build_model(config, venv))
    return None


def read_rows(folder: Path) -> tuple[float, float, list[dict]]:
    with open(folder / "lyapunov_summary.csv", newline="") as f:
        first = next(r for r in csv.DictReader(f) if r["mode"] == "policy" and r["index"] == "1")
    with open(folder / "gradvar.csv", newline="") as f:
        gradients = [r for r in csv.DictReader(f) if r["estimator"] == "full"]
    return float(first["exponent"]), float(first["stderr"]), gradients


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", type=Path, required=True, help="a folder of chaosgym compare (with runs/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV and each diagnosis")
    parser.add_argument("--agents", default=None, help="only these agents (comma-separated)")
    parser.add_argument("--num-states", type=int, default=4, help="initial states of the Lyapunov estimate")
    parser.add_argument("--lyapunov-steps", type=int, default=300, help="control steps per Lyapunov estimate")
    parser.add_argument("--transient", type=int, default=50, help="control steps discarded first")
    parser.add_argument("--horizons", default="10,32,100", help="gradient horizons")
    parser.add_argument("--samples", type=int, default=8, help="gradients per horizon (at least 3)")
    args = parser.parse_args(argv)

    folders = sorted(p for p in (args.compare / "runs").iterdir() if (p / "config.json").exists())
    wanted = set(args.agents.split(",")) if args.agents else None
    rows = []
    for folder in folders:
        run = Run(folder)
        if wanted and run.config.agent not in wanted:
            continue
        final_apply, final_params, config = jax_policy(folder)
        with open(folder / "metrics.csv", newline="") as f:
            env_steps = max((int(float(r["env_steps"])) for r in csv.DictReader(f)), default=0)
        moments = {"end": (final_apply, final_params, env_steps)}
        start = initial_policy(run)
        if start is not None:
            moments = {"start": (*start, 0), **moments}
        for moment, (apply, params, steps) in moments.items():
            out = args.out / f"{folder.name}-{moment}"
            if not (out / "gradvar.csv").exists():
                print(f"diagnosing {folder.name} at its {moment} ({steps:,} env steps) -> {out}", flush=True)
                diagnosis = DiagnoseConfig(
                    task=config.task, out=out, what=("lyapunov", "gradvar"), modes=("policy",), overwrite=True,
                    num_states=args.num_states, lyapunov_steps=args.lyapunov_steps, lyapunov_k=1,
                    transient=args.transient, horizons=tuple(int(h) for h in args.horizons.split(",")),
                    estimators=("full",), gradvar_samples=args.samples)
                diagnose(diagnosis, TrainedPolicy(apply, params, config.task, config.task_kwargs))
            exponent, stderr, gradients = read_rows(out)
            for g in gradients:
                rows.append({"run": folder.name, "agent": config.agent, "seed": config.seed, "moment": moment,
                             "env_steps": steps, "lyapunov": exponent, "lyapunov_stderr": stderr,
                             "horizon": g["horizon"], "norm_median": g["norm_median"], "norm_max": g["norm_max"],
                             "finite_fraction": g["finite_fraction"], "samples": g["samples"]})
    text = [",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "policy_diagnostics.csv", ("\n".join(text) + "\n").encode())
    print("| run | moment | env steps | Lyapunov exponent | horizon | gradient norm median | max |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['moment']} | {r['env_steps']:,} | {r['lyapunov']:.3g} ± {r['lyapunov_stderr']:.2g} "
              f"| {r['horizon']} | {float(r['norm_median']):.3g} | {float(r['norm_max']):.3g} |")
    print(f"wrote {args.out / 'policy_diagnostics.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
