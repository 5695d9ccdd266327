"""Metz et al.'s gradient study on chaosgym's tasks, written to docs/findings.md with figures in docs/figures/.

    python experiments/findings.py                        # every study below (about 25 min on 2 CPU cores)
    python experiments/findings.py --studies ChaosAnt-v0  # one study; the others' saved sections are kept
    python experiments/findings.py --quick --docs /tmp/findings --runs /tmp/runs   # a smoke run

Each study runs `chaosgym diagnose --what gradvar,landscape` as Metz, Freeman, Schoenholz & Kachman
(2021) set it up: a randomly initialised default MLP policy (2 x 100 tanh units) whose weight
matrices are scaled by 0.1, 1 and 3, the loss summed over the unroll (minus the rewards), episodes
that never terminate inside it, BPTT (`full`) and antithetic ES gradients from one initial state
each, and the closed loop's maximal Lyapunov exponent at each weight scale. Every CSV file and plot
is kept under --runs/<study>/ with the study's section of the report (`findings.json`), so studies
can be run separately, even on different machines: the report holds every saved section, each
saying where and how long it ran.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path

import jax

import chaosgym
from chaosgym.diagnostics import command as diagnose

COMMON = ["--what", "gradvar,landscape", "--no-termination", "--weight-scales", "0.1,1,3", "--estimators", "full,es",
          "--es-sigma", "0.05", "--transient", "50", "--landscape-points", "41", "--landscape-radius", "1.0"]
# Budgets sized for a shared 2-core CPU (about 25 minutes for all three studies).
CART_POLE = ["--horizons", "10,30,100,300", "--gradvar-samples", "16", "--es-pairs", "256", "--lyapunov-steps", "500",
             "--landscape-horizons", "10,30,100,300", "--landscape-plane", "11", "--landscape-states", "4"]
STUDIES = {
    # a small policy, as Metz et al.'s (2 x 32 units: 2,216 parameters, so 64 ES pairs resolve its SNR)
    "ChaosAnt-v0": ("ChaosAnt-v0", "", ["--hidden", "32,32", "--horizons", "10,30,100", "--gradvar-samples", "10",
                                        "--es-pairs", "64", "--lyapunov-steps", "200", "--chunk", "5",
                                        "--landscape-horizons", "10,30,100", "--landscape-points", "21",
                                        "--landscape-plane", "0", "--landscape-states", "2"]),
    "ChaosCartPole-v0": ("ChaosCartPole-v0", "", CART_POLE),
    "ChaosCartPole-v0-3poles": ("ChaosCartPole-v0", "num_poles=3", CART_POLE),
}
QUICK = ["--horizons", "10,30", "--gradvar-samples", "4", "--es-pairs", "4", "--lyapunov-steps", "50",
         "--transient", "10", "--landscape-horizons", "10,30", "--landscape-points", "9", "--landscape-plane", "3",
         "--landscape-states", "2"]
FIGURES = ("gradvar", "landscape")


def diagnose_args(argv: list[str]) -> diagnose.DiagnoseConfig:
    parser = argparse.ArgumentParser()
    diagnose.add_arguments(parser)
    return diagnose.config_from_args(parser.parse_args(argv))


def _g(x: float) -> str:
    return f"{x:.3g}"


def _snr(s: dict) -> str:
    bold = "**" if s["snr"] > 2 * s["snr_stderr"] else ""  # measurably above zero
    return f"{bold}{_g(s['snr'])} ± {_g(s['snr_stderr'])}{bold}"


def read_study(out: Path) -> tuple[dict, dict, list[int]]:
    """(summaries by (estimator, horizon, weight scale), (lambda_1, stderr) by weight scale, horizons)
    from the CSV files `chaosgym diagnose` wrote to `out`."""
    with open(out / "gradvar.csv") as f:
        summaries = {(r["estimator"], int(r["horizon"]), float(r["weight_scale"])):
                     {k: float(v) for k, v in r.items() if k != "estimator"} for r in csv.DictReader(f)}
    with open(out / "weight_scales.csv") as f:
        exponents = {float(r["weight_scale"]): (float(r["lyapunov"]), float(r["lyapunov_stderr"]))
                     for r in csv.DictReader(f)}
    return summaries, exponents, sorted({h for _, h, _ in summaries})


def variance(summary: dict) -> float:
    """The summary's variance; infinite when no gradient was finite (every one overflowed)."""
    return math.inf if summary["finite_fraction"] == 0 else summary["variance"]


def orders(summaries, name: str, scale: float, horizons) -> float:
    """Orders of magnitude the mean per-parameter variance grows from the shortest to the longest horizon."""
    return math.log10(variance(summaries[name, horizons[-1], scale]) / variance(summaries[name, horizons[0], scale]))


def chaotic_orders(exponent: float, dt: float, horizons) -> float:
    """Orders of magnitude a variance growing like exp(2 lambda_1 t) gains over the horizons."""
    return 2 * exponent * (horizons[-1] - horizons[0]) * dt / math.log(10)


def polynomial_orders(horizons) -> float:
    """Orders of magnitude of H^2: what the variance of a gradient of a loss summed over H steps
    gains when each step's contribution stays bounded (no chaos)."""
    return 2 * math.log10(horizons[-1] / horizons[0])


def is_chaotic(mean: float, stderr: float) -> bool:
    return mean > max(2 * stderr, 0.5)


def measurable(summary: dict) -> bool:
    return summary["snr"] > 2 * summary["snr_stderr"]


def scale_table(summaries, exponents, dt, horizons) -> list[str]:
    first, last = horizons[0], horizons[-1]
    lines = [f"| weight scale | λ₁ (1/s) | BPTT variance growth, H {first} → {last} (orders) "
             f"| exp(2λ₁t) would give | ES variance growth | BPTT / ES variance at H {last} | ES SNR > 2 s.e. at H |",
             "|---|---|---|---|---|---|---|"]
    for scale, (mean, stderr) in exponents.items():
        full, es = summaries["full", last, scale], summaries["es", last, scale]
        finite = "" if full["finite_fraction"] == 1 else f" ({1 - full['finite_fraction']:.0%} of BPTT gradients not finite)"
        snr_at = [str(h) for h in horizons if measurable(summaries["es", h, scale])]
        lines.append(f"| ×{scale:g} | {_g(mean)} ± {_g(stderr)} | {orders(summaries, 'full', scale, horizons):.1f}{finite} "
                     f"| {max(0.0, chaotic_orders(mean, dt, horizons)):.1f} | {orders(summaries, 'es', scale, horizons):.1f} "
                     f"| {_g(variance(full) / variance(es))} | {', '.join(snr_at) or 'none'} |")
    return lines


def gradient_table(summaries, exponents, horizons) -> list[str]:
    lines = ["| scale | H | BPTT loss | BPTT norm median / max | BPTT variance | BPTT SNR | ES loss | ES norm median "
             "| ES variance | ES SNR |", "|---|---|---|---|---|---|---|---|---|---|"]
    for scale in exponents:
        for h in horizons:
            full, es = summaries["full", h, scale], summaries["es", h, scale]
            finite = "" if full["finite_fraction"] == 1 else f" ({full['finite_fraction']:.0%} finite)"
            lines.append(f"| ×{scale:g} | {h} | {_g(full['loss_mean'])} | {_g(full['norm_median'])} / "
                         f"{_g(full['norm_max'])}{finite} | {_g(full['variance'])} | {_snr(full)} | {_g(es['loss_mean'])} "
                         f"| {_g(es['norm_median'])} | {_g(es['variance'])} | {_snr(es)} |")
    return lines


def verdicts(summaries, exponents, horizons) -> dict[str, bool]:
    """Metz et al.'s findings, each tested on this study's numbers. At every weight scale whose
    lambda_1 is clearly positive (> 2 standard errors and > 0.5/s):

    * explodes: BPTT's variance grows by more than H^2 (no chaos) allows, plus 1 order;
    * es_bounded: ES's variance grows by at most H^2 plus 1 order (its loss grows like H);
    * es_snr: ES's signal-to-noise ratio is more than 2 standard errors above zero at every horizon;

    and transition: lambda_1 rises with the weight scale, from below 1/s at the smallest to
    clearly positive at the largest, and BPTT's variance growth rises with it.
    """
    polynomial = polynomial_orders(horizons)
    chaotic = [s for s, e in exponents.items() if is_chaotic(*e)]
    scales = sorted(exponents)
    means = [exponents[s][0] for s in scales]
    growth = [orders(summaries, "full", s, horizons) for s in scales]
    return {
        "explodes": bool(chaotic) and all(orders(summaries, "full", s, horizons) > polynomial + 1 for s in chaotic),
        "es_bounded": bool(chaotic) and all(orders(summaries, "es", s, horizons) <= polynomial + 1 for s in chaotic),
        "es_snr": bool(chaotic) and all(measurable(summaries["es", h, s]) for s in chaotic for h in horizons),
        "transition": means == sorted(means) and means[0] < 1.0 and scales[-1] in chaotic and growth == sorted(growth),
    }


def run_study(name: str, quick: bool, runs: Path, figures: Path) -> None:
    """Run the study's diagnostics; its section is written by `report`."""
    start = time.perf_counter()
    args = study_args(name, quick, runs)
    diagnose.diagnose(args)
    for figure in FIGURES:
        shutil.copyfile(Path(args.out) / f"{figure}.png", figures / f"{name}-{figure}.png")
    run = {"minutes": (time.perf_counter() - start) / 60, "machine": machine(), "quick": quick}
    (Path(args.out) / "run.json").write_text(json.dumps(run))


def study_args(name: str, quick: bool, runs: Path) -> diagnose.DiagnoseConfig:
    task, options, settings = STUDIES[name]
    return diagnose_args(["--task", task, "--task-kwargs", options, "--out", str(runs / name), *COMMON, *settings,
                          *(QUICK if quick else [])])


def report(name: str, runs: Path) -> dict:
    """The study's section of findings.md, from the files its run left in `runs/<name>/`."""
    out = runs / name
    run = json.loads((out / "run.json").read_text())
    args = study_args(name, run["quick"], runs)
    summaries, exponents, horizons = read_study(out)
    dt = chaosgym.make(args.task, **args.task_kwargs).dt
    found = verdicts(summaries, exponents, horizons)
    title = args.task + (f" ({STUDIES[name][1]})" if args.task_kwargs else "")
    yes = lambda v: "yes" if v else "no"
    lines = [f"## {title}", "",
             f"Policy: 2 × {args.hidden[0]} tanh units. {args.gradvar_samples} initial states, one gradient each, at "
             f"horizons {', '.join(map(str, horizons))} (control steps of {dt:g} s); ES: {args.estimator.es_pairs} antithetic pairs, "
             f"σ = {args.estimator.es_sigma}; λ₁ from {args.lyapunov_steps} control steps after {args.transient} discarded, from "
             f"the same states. Ran in {run['minutes']:.0f} min on {run['machine']}"
             f"{', quick settings' if run['quick'] else ''}.", "",
             *scale_table(summaries, exponents, dt, horizons), "",
             "Where λ₁ is clearly positive (> 2 s.e. and > 0.5/s):", "",
             f"* BPTT's variance grows by more than H² (no chaos: {polynomial_orders(horizons):.1f} orders) plus 1 order: "
             f"**{yes(found['explodes'])}**;",
             f"* ES's variance grows by at most H² plus 1 order: **{yes(found['es_bounded'])}**;",
             f"* ES's SNR is more than 2 standard errors above zero at every horizon: **{yes(found['es_snr'])}**;",
             f"* λ₁ and BPTT's variance growth rise with the weight scale, from a stable loop (λ₁ < 1/s) at ×{min(exponents):g}: "
             f"**{yes(found['transition'])}**.", "",
             "<details><summary>every number (SNR in bold: more than 2 standard errors above zero)</summary>", "",
             *gradient_table(summaries, exponents, horizons), "", "</details>", "",
             f"![gradient norm, variance and signal-to-noise ratio against horizon](figures/{name}-gradvar.png)", "",
             f"![loss landscape along filter-normalised random directions, per horizon](figures/{name}-landscape.png)", ""]
    return {"lines": lines, "title": title, "verdicts": found, "exponents": exponents}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on {jax.default_backend()}"


INTRO = """# Chaos diagnostics: Metz et al.'s gradient study

Metz, Freeman, Schoenholz & Kachman (2021, "Gradients are Not All You Need") argue that the gradient
of a loss summed over an unrolled chaotic system (leading Lyapunov exponent λ₁ > 0) has a variance
that grows exponentially with the unroll, while an evolution-strategies (ES) estimate of the
smoothed loss stays bounded, and that the scale of a policy's initial weights moves a closed loop
between stable and chaotic. Produced by `python experiments/findings.py` (settings at its top; CSV
files under `runs/findings/<study>/`), which runs, per study:

    chaosgym diagnose --task TASK --what gradvar,landscape --no-termination --weight-scales 0.1,1,3 \\
        --estimators full,es --horizons ... --es-pairs ...

with a randomly initialised tanh MLP policy (seed 0; 2 × 100 units, the default, on the cart pole, 2 × 32 on the Ant). The loss is minus the
rewards summed over the unroll; episodes never terminate inside it (a fallen Ant keeps going). Every
horizon's gradient comes from one unroll of the longest horizon (the loss cut at h is a prefix sum,
so it is the same number a rollout of h steps gives). Variance is the mean over parameters of the
variance across initial states; SNR = |E g|² / tr Cov g of a one-state gradient, unbiased, with a
jackknife standard error (negative: indistinguishable from noise). The ES σ = 0.05 is absolute, so
at weight scale ×0.1 the perturbations are larger than the weights themselves.
"""


GENERATED = "<!-- everything below is written by experiments/findings.py -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", default=",".join(STUDIES), help=f"comma-separated, out of {','.join(STUDIES)}")
    parser.add_argument("--docs", default="docs", help="folder of findings.md (figures go to DOCS/figures)")
    parser.add_argument("--runs", default="runs/findings", help="folder of every CSV file and plot")
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check the script runs")
    parser.add_argument("--report-only", action="store_true", help="rewrite findings.md from the saved runs; run nothing")
    args = parser.parse_args()
    docs, runs = Path(args.docs), Path(args.runs)
    (docs / "figures").mkdir(parents=True, exist_ok=True)
    for name in args.studies.split(","):
        if name not in STUDIES:
            parser.error(f"unknown study {name!r}; valid: {', '.join(STUDIES)}")
        if not args.report_only:
            run_study(name, args.quick, runs, docs / "figures")
            print(f"{name}: done", flush=True)
    saved = {n: report(n, runs) for n in STUDIES if (runs / n / "run.json").exists()}
    summary = ["| study | λ₁ at weights " + " / ".join(f"×{s:g}" for s in next(iter(saved.values()))["exponents"])
               + " (1/s) | BPTT explodes where λ₁ > 0 | ES bounded there | ES SNR > 0 there | weight-scale transition |",
               "|---|---|---|---|---|---|"]
    yes = lambda v: "yes" if v else "**no**"
    for s in saved.values():
        exponents = " / ".join(f"{m:.3g} ± {se:.2g}" for m, se in s["exponents"].values())
        v = s["verdicts"]
        summary.append(f"| {s['title']} | {exponents} | {yes(v['explodes'])} | {yes(v['es_bounded'])} "
                       f"| {yes(v['es_snr'])} | {yes(v['transition'])} |")
    # a reading written by hand above the marker survives a re-run; everything below it is generated
    path = docs / "findings.md"
    old = path.read_text() if path.exists() else ""
    head = old[:old.index(GENERATED)] if GENERATED in old else INTRO + "\n"
    text = [head + GENERATED, "", *summary, ""] + [line for s in saved.values() for line in s["lines"]]
    path.write_text("\n".join(text))
    print(f"wrote {docs / 'findings.md'} ({', '.join(saved)}) and its figures")


if __name__ == "__main__":
    main()
