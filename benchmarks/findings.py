"""The chaos findings of every task, written to docs/findings.md with figures in docs/figures/.

    python benchmarks/findings.py           # every task; about an hour on 2 CPU cores
    python benchmarks/findings.py --tasks ChaosAnt-v0   # one task; the others' saved sections are kept
    python benchmarks/findings.py --quick --docs /tmp/findings --runs /tmp/runs   # a smoke run

Per task (default options, a randomly initialised default MLP policy) this runs `chaosgym
diagnose` with the settings below and reports the maximal Lyapunov exponent unforced and under
the random policy, BPTT (`full`) and ES gradient statistics at horizons 10, 30, 100 and 300, and
the loss landscape; for the double pendulum also the unforced exponent from a raised start (both
links horizontal). Every CSV file and plot is kept under --runs/<task>/, with the task's section of
the report (`findings.json`), so tasks can be run separately, even on different machines: the report
holds every task with a saved section, each saying where and how long it ran.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path

import jax
import numpy as np

import chaosgym
from chaosgym import diagnose
from chaosgym.diagnostics import mean_and_stderr

SETTINGS = ["--num-states", "8", "--lyapunov-steps", "1000", "--transient", "100", "--lyapunov-k", "2",
            "--jacobian-horizon", "100", "--horizons", "10,30,100,300", "--estimators", "full,es",
            "--gradvar-samples", "16", "--es-pairs", "16", "--es-sigma", "0.05",
            "--landscape-horizons", "10,30,100,300", "--landscape-points", "41", "--landscape-plane", "11",
            "--landscape-radius", "1.0", "--landscape-states", "4"]
# the Ant's gradients in chunks of 4: the backward pass at horizon 300 then needs about 0.3 GB
TASK_SETTINGS = {"ChaosAnt-v0": ["--chunk", "4", "--landscape-chunk", "41"]}
QUICK = ["--num-states", "2", "--lyapunov-steps", "100", "--transient", "10", "--jacobian-horizon", "10",
         "--horizons", "10,30", "--gradvar-samples", "4", "--es-pairs", "4", "--landscape-horizons", "10,30",
         "--landscape-points", "9", "--landscape-plane", "3", "--landscape-states", "2"]
RAISED_START = {"ChaosDoublePendulum-v0": "1.5708,0"}
FIGURES = ("lyapunov", "gradvar", "landscape")


def diagnose_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    diagnose.add_arguments(parser)
    return parser.parse_args(argv)


def exponent_text(result) -> str:
    mean, stderr = mean_and_stderr(result.exponents[:, 0])
    steps = int(np.min(result.steps))
    blown = "" if steps == result.running.shape[-2] else f" (the physics blew up: as few as {steps} steps averaged)"
    return f"{mean:.3g} ± {stderr:.2g}{blown}"


def _g(x: float) -> str:
    return f"{x:.3g}"


def gradient_table(stats, horizons) -> list[str]:
    lines = ["| horizon | BPTT norm median / mean / max | BPTT variance | BPTT SNR | ES norm median / mean / max "
             "| ES variance | ES SNR | BPTT / ES variance |", "|---|---|---|---|---|---|---|---|"]
    for h in horizons:
        full, es = stats["full", h].summary(), stats["es", h].summary()
        finite = "" if full["finite_fraction"] == 1 else f" ({full['finite_fraction']:.0%} finite)"
        lines.append(f"| {h} | {_g(full['norm_median'])} / {_g(full['norm_mean'])} / {_g(full['norm_max'])}{finite} "
                     f"| {_g(full['variance'])} | {_g(full['snr'])} "
                     f"| {_g(es['norm_median'])} / {_g(es['norm_mean'])} / {_g(es['norm_max'])} "
                     f"| {_g(es['variance'])} | {_g(es['snr'])} | {_g(full['variance'] / es['variance'])} |")
    return lines


def growth_orders(stats, name: str, horizons) -> float:
    """Orders of magnitude the mean per-parameter variance grows from the shortest to the longest horizon."""
    first, last = stats[name, horizons[0]].summary(), stats[name, horizons[-1]].summary()
    return math.log10(last["variance"] / first["variance"])


def metz_verdict(stats, horizons) -> str:
    """Plain words on Metz et al.'s finding: BPTT variance grows by orders of magnitude with the
    horizon (here: at least 2) while ES's stays bounded (here: grows by at most 1 order)."""
    bptt, es = growth_orders(stats, "full", horizons), growth_orders(stats, "es", horizons)
    finite = stats["full", horizons[-1]].summary()["finite_fraction"]
    numbers = (f"from horizon {horizons[0]} to {horizons[-1]} the BPTT gradient's per-parameter variance grows "
               f"by {bptt:.1f} orders of magnitude and the ES estimate's by {es:.1f}")
    if finite < 1:
        numbers += f"; at horizon {horizons[-1]} only {finite:.0%} of the BPTT gradients are finite at all"
    if bptt >= 2 and es <= 1:
        return f"**Yes, our numbers reproduce Metz et al.'s finding**: {numbers}."
    if bptt >= 2:
        return (f"**Partly**: {numbers}, so BPTT's variance explodes as Metz et al. found, but ES's is not flat "
                f"here (criterion: at most 1 order of magnitude).")
    return f"**No, our numbers do not reproduce Metz et al.'s finding**: {numbers} (criterion: at least 2 orders)."


def run_task(task: str, quick: bool, runs: Path, figures: Path) -> tuple[list[str], dict]:
    start = time.perf_counter()
    out = runs / task
    argv = ["--task", task, "--out", str(out), *SETTINGS, *TASK_SETTINGS.get(task, []), *(QUICK if quick else [])]
    args = diagnose_args(argv)
    results = diagnose.diagnose(args)
    summary = {"unforced": exponent_text(results["lyapunov"]["unforced"]),
               "policy": exponent_text(results["lyapunov"]["policy"]), "raised": "—"}
    if task in RAISED_START:
        raised = diagnose_args([*argv, "--out", str(out / "raised"), "--what", "lyapunov", "--modes", "unforced",
                                "--start-qpos", RAISED_START[task]])
        summary["raised"] = exponent_text(diagnose.diagnose(raised)["lyapunov"]["unforced"])
    for name in FIGURES:
        shutil.copyfile(out / f"{name}.png", figures / f"{task}-{name}.png")
    minutes = (time.perf_counter() - start) / 60
    stats, horizons = results["gradvar"], args.horizons
    lines = [f"## {task}", "",
             f"Maximal Lyapunov exponent (1/s, mean ± standard error over {args.num_states} initial states, "
             f"{args.lyapunov_steps} control steps of {chaosgym.make(task).dt:g} s after {args.transient} discarded): "
             f"unforced {summary['unforced']}; under the random policy {summary['policy']}"
             + (f"; unforced from a raised start (qpos {RAISED_START[task]}) {summary['raised']}." if task in RAISED_START else "."),
             "", f"Gradient of the rollout loss from one initial state ({args.gradvar_samples} states per horizon; "
             f"ES: {args.es_pairs} antithetic pairs, σ = {args.es_sigma}). Variance is the mean over parameters of the "
             "variance across states; SNR = |mean gradient|² / total variance.", "",
             *gradient_table(stats, horizons), ""]
    if task == "ChaosAnt-v0":
        lines += [metz_verdict(stats, horizons), ""]
    else:
        lines += [f"From horizon {horizons[0]} to {horizons[-1]} the BPTT variance grows by "
                  f"{growth_orders(stats, 'full', horizons):.1f} orders of magnitude, the ES variance by "
                  f"{growth_orders(stats, 'es', horizons):.1f}.", ""]
    lines += [f"![gradient statistics against horizon](figures/{task}-gradvar.png)", "",
              f"![loss landscape: 1-D (top) and 2-D (bottom) slices along filter-normalised random directions, "
              f"per horizon](figures/{task}-landscape.png)", "",
              f"![running estimate of the maximal Lyapunov exponent](figures/{task}-lyapunov.png)", "",
              f"({minutes:.0f} min on {machine()}{', quick settings' if quick else ''}.)", ""]
    (out / "findings.json").write_text(json.dumps({"lines": lines, "summary": summary}, indent=1))
    return lines, summary


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on {jax.default_backend()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(chaosgym.TASKS), help="comma-separated task ids to run")
    parser.add_argument("--docs", default="docs", help="folder of findings.md (figures go to DOCS/figures)")
    parser.add_argument("--runs", default="runs/findings", help="folder of every CSV file and plot")
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check the script runs")
    args = parser.parse_args()
    docs, runs = Path(args.docs), Path(args.runs)
    (docs / "figures").mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        if task not in chaosgym.TASKS:
            parser.error(f"unknown task {task!r}; valid: {', '.join(chaosgym.TASKS)}")
        start = time.perf_counter()
        run_task(task, args.quick, runs, docs / "figures")
        print(f"{task}: {(time.perf_counter() - start) / 60:.0f} min", flush=True)
    saved = {t: json.loads((runs / t / "findings.json").read_text())
             for t in chaosgym.TASKS if (runs / t / "findings.json").exists()}
    header = [
        "# Chaos diagnostics: findings", "",
        f"Produced by `python benchmarks/findings.py{' --quick' if args.quick else ''}`, with every task's default "
        "options and a randomly initialised default policy (MLP, 2 × 100 tanh units). The settings are at the top "
        "of the script; every CSV file is under `runs/findings/<task>/`. Each section says where it ran.", "",
        "| task | max Lyapunov exponent, unforced (1/s) | under the random policy | unforced, raised start |",
        "|---|---|---|---|",
        *[f"| {t} | {s['summary']['unforced']} | {s['summary']['policy']} | {s['summary']['raised']} |"
          for t, s in saved.items()], ""]
    (docs / "findings.md").write_text("\n".join(header + [line for s in saved.values() for line in s["lines"]]))
    print(f"wrote {docs / 'findings.md'} ({', '.join(saved)}) and its figures")


if __name__ == "__main__":
    main()
