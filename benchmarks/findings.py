"""Metz et al.'s gradient study on chaosgym's tasks, written to docs/findings.md with figures in docs/figures/.

    python benchmarks/findings.py                        # every study below (about 25 min on 2 CPU cores)
    python benchmarks/findings.py --studies ChaosAnt-v0  # one study; the others' saved sections are kept
    python benchmarks/findings.py --quick --docs /tmp/findings --runs /tmp/runs   # a smoke run

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
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path

import jax

import chaosgym
from chaosgym import diagnose
from chaosgym.registry import parse_task_kwargs

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


def diagnose_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    diagnose.add_arguments(parser)
    return parser.parse_args(argv)


def _g(x: float) -> str:
    return f"{x:.3g}"


def _snr(s: dict) -> str:
    bold = "**" if s["snr"] > 2 * s["snr_stderr"] else ""  # measurably above zero
    return f"{bold}{_g(s['snr'])} ± {_g(s['snr_stderr'])}{bold}"


def orders(stats, name: str, scale: float, horizons) -> float:
    """Orders of magnitude the mean per-parameter variance grows from the shortest to the longest horizon."""
    first, last = stats[name, horizons[0], scale].summary(), stats[name, horizons[-1], scale].summary()
    return math.log10(last["variance"] / first["variance"])


def chaotic_orders(exponent: float, dt: float, horizons) -> float:
    """Orders of magnitude a variance growing like exp(2 lambda t) gains over the horizons."""
    return 2 * exponent * (horizons[-1] - horizons[0]) * dt / math.log(10)


def polynomial_orders(horizons) -> float:
    """Orders of magnitude of H^2: what the variance of any gradient of a summed loss may gain
    without chaos (H terms, each of bounded size)."""
    return 2 * math.log10(horizons[-1] / horizons[0])


def scale_table(stats, exponents, dt, horizons) -> list[str]:
    lines = [f"| weight scale | λ₁ (1/s) | BPTT variance growth, H {horizons[0]} → {horizons[-1]} (orders) "
             f"| if it followed exp(2λ₁t) | ES variance growth | ES SNR > 0 at |",
             "|---|---|---|---|---|---|"]
    for scale, (mean, stderr, _) in exponents.items():
        measurable = [str(h) for h in horizons
                      if (lambda s: s["snr"] > 2 * s["snr_stderr"])(stats["es", h, scale].summary())]
        lines.append(f"| ×{scale:g} | {_g(mean)} ± {_g(stderr)} | {orders(stats, 'full', scale, horizons):.1f} "
                     f"| {max(0.0, chaotic_orders(mean, dt, horizons)):.1f} | {orders(stats, 'es', scale, horizons):.1f} "
                     f"| {', '.join(measurable) or 'no horizon'} |")
    return lines


def gradient_table(stats, exponents, horizons) -> list[str]:
    lines = ["| scale | H | loss | BPTT norm median / max | BPTT variance | BPTT SNR | ES norm median | ES variance "
             "| ES SNR |", "|---|---|---|---|---|---|---|---|---|"]
    for scale in exponents:
        for h in horizons:
            full, es = stats["full", h, scale].summary(), stats["es", h, scale].summary()
            finite = "" if full["finite_fraction"] == 1 else f" ({full['finite_fraction']:.0%} finite)"
            lines.append(f"| ×{scale:g} | {h} | {_g(full['loss_mean'])} | {_g(full['norm_median'])} / "
                         f"{_g(full['norm_max'])}{finite} | {_g(full['variance'])} | {_snr(full)} "
                         f"| {_g(es['norm_median'])} | {_g(es['variance'])} | {_snr(es)} |")
    return lines


def verdicts(stats, exponents, dt, horizons) -> dict[str, bool]:
    """Metz et al.'s three findings, each tested on this study's numbers.

    * explodes: at every scale whose exponent is clearly positive (> 2 standard errors and > 0.5/s),
      BPTT's variance grows by more than the polynomial H^2 allows plus 1 order;
    * es_bounded: at every scale, ES's variance grows by at most H^2 plus half an order;
    * transition: the exponent rises with the weight scale, from below 1/s at the smallest scale to
      clearly positive at the largest, and BPTT's growth with it.
    """
    polynomial = polynomial_orders(horizons)
    chaotic = [s for s, (m, se, _) in exponents.items() if m > max(2 * se, 0.5)]
    scales = sorted(exponents)
    means = [exponents[s][0] for s in scales]
    growth = [orders(stats, "full", s, horizons) for s in scales]
    return {
        "explodes": bool(chaotic) and all(orders(stats, "full", s, horizons) > polynomial + 1 for s in chaotic),
        "es_bounded": all(orders(stats, "es", s, horizons) <= polynomial + 0.5 for s in scales),
        "transition": means == sorted(means) and means[0] < 1.0 and scales[-1] in chaotic and growth[-1] > growth[0],
    }


def run_study(name: str, quick: bool, runs: Path, figures: Path) -> dict:
    task, options, settings = STUDIES[name]
    policy = "2 × 32" if "32,32" in settings else "2 × 100"
    start = time.perf_counter()
    out = runs / name
    argv = ["--task", task, "--task-kwargs", options, "--out", str(out), *COMMON, *settings, *(QUICK if quick else [])]
    args = diagnose_args(argv)
    results = diagnose.diagnose(args)
    for figure in FIGURES:
        shutil.copyfile(out / f"{figure}.png", figures / f"{name}-{figure}.png")
    minutes = (time.perf_counter() - start) / 60
    stats, exponents, horizons = results["gradvar"]["stats"], results["gradvar"]["exponents"], args.horizons
    dt = chaosgym.make(task, **parse_task_kwargs(options)).dt
    found = verdicts(stats, exponents, dt, horizons)
    title = f"{task}" + (f" ({options})" if options else "")
    lines = [f"## {title}", "",
             f"Policy: {policy} tanh units. {args.gradvar_samples} initial states, one gradient each, at horizons {', '.join(map(str, horizons))} "
             f"(control steps of {dt:g} s); ES: {args.es_pairs} antithetic pairs, σ = {args.es_sigma}; λ₁ from "
             f"{args.lyapunov_steps} control steps after {args.transient} discarded, from the same states. "
             f"Ran in {minutes:.0f} min on {machine()}{', quick settings' if quick else ''}.", "",
             *scale_table(stats, exponents, dt, horizons), "",
             f"* BPTT's variance grows faster than a summed loss allows without chaos (H², {polynomial_orders(horizons):.1f} "
             f"orders) plus 1 order wherever λ₁ is clearly positive: **{'yes' if found['explodes'] else 'no'}**.",
             f"* ES's variance stays within H² plus half an order at every scale: **{'yes' if found['es_bounded'] else 'no'}**.",
             f"* The weight scale moves the closed loop from stable to chaotic (λ₁ rising with it, from below 1/s) "
             f"and BPTT's growth with it: **{'yes' if found['transition'] else 'no'}**.", "",
             "<details><summary>every number (SNR in bold: more than 2 standard errors above zero)</summary>", "",
             *gradient_table(stats, exponents, horizons), "", "</details>", "",
             f"![gradient norm, variance and signal-to-noise ratio against horizon](figures/{name}-gradvar.png)", "",
             f"![loss landscape along filter-normalised random directions, per horizon](figures/{name}-landscape.png)", ""]
    section = {"lines": lines, "title": title, "verdicts": found, "minutes": minutes,
               "exponents": {f"{s:g}": list(v[:2]) for s, v in exponents.items()}}
    (out / "findings.json").write_text(json.dumps(section, indent=1))
    return section


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on {jax.default_backend()}"


INTRO = """# Chaos diagnostics: Metz et al.'s gradient study

Metz, Freeman, Schoenholz & Kachman (2021, "Gradients are Not All You Need") argue that the gradient
of a loss summed over an unrolled chaotic system (leading Lyapunov exponent λ₁ > 0) has a variance
that grows exponentially with the unroll, while an evolution-strategies (ES) estimate of the
smoothed loss stays bounded, and that the scale of a policy's initial weights moves a closed loop
between stable and chaotic. Produced by `python benchmarks/findings.py` (settings at its top; CSV
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", default=",".join(STUDIES), help=f"comma-separated, out of {','.join(STUDIES)}")
    parser.add_argument("--docs", default="docs", help="folder of findings.md (figures go to DOCS/figures)")
    parser.add_argument("--runs", default="runs/findings", help="folder of every CSV file and plot")
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check the script runs")
    args = parser.parse_args()
    docs, runs = Path(args.docs), Path(args.runs)
    (docs / "figures").mkdir(parents=True, exist_ok=True)
    for name in args.studies.split(","):
        if name not in STUDIES:
            parser.error(f"unknown study {name!r}; valid: {', '.join(STUDIES)}")
        section = run_study(name, args.quick, runs, docs / "figures")
        print(f"{name}: {section['minutes']:.1f} min", flush=True)
    saved = {n: json.loads((runs / n / "findings.json").read_text())
             for n in STUDIES if (runs / n / "findings.json").exists()}
    summary = ["| study | λ₁ at weights ×0.1 / ×1 / ×3 (1/s) | BPTT explodes where λ₁ > 0 | ES bounded "
               "| weight-scale transition |", "|---|---|---|---|---|"]
    yes = lambda v: "yes" if v else "**no**"
    for s in saved.values():
        exps = " / ".join(f"{m:.3g} ± {se:.2g}" for m, se in s["exponents"].values())
        v = s["verdicts"]
        summary.append(f"| {s['title']} | {exps} | {yes(v['explodes'])} | {yes(v['es_bounded'])} | {yes(v['transition'])} |")
    text = [INTRO, *summary, ""] + [line for s in saved.values() for line in s["lines"]]
    (docs / "findings.md").write_text("\n".join(text))
    print(f"wrote {docs / 'findings.md'} ({', '.join(saved)}) and its figures")


if __name__ == "__main__":
    main()
