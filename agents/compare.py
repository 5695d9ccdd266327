"""`chaosgym compare`: tasks x agents x seeds under one budget, turned into a table and plots.

Every run is an ordinary `chaosgym train` run folder under OUT/runs/, set up from the task's
presets (`chaosgym.presets`); runs already finished are read back, not redone, so an interrupted
comparison continues where it stopped, and a larger budget into the same OUT extends them. The
budget of every run is env steps (`--env-steps`), seconds of training (`--wall-clock`; compilation
is timed apart and never counts), or both, whichever ends first. Every agent, gradient-based or
SB3, optimises the episode return and is ranked by it: each trained policy is scored by the one
Gymnasium evaluation protocol (`chaosgym.evaluation.evaluate`), with the task's reported objective
(e.g. the cart pole's final-state loss) beside. Writes into OUT:

* results.csv — learning-curve points (env_steps, wall_time, eval_score, eval_objective) of every
  run, and one `final` row per run from the common protocol, with its compile_time;
* summary.md — the budget, and per task and agent: final score and objective (mean ± std over
  seeds), the env steps and seconds of training each run used, its compile seconds, and the env
  steps and seconds of training it needed to reach the task's threshold score (median over the
  seeds that reached it);
* curves_<task>.png — evaluation score and objective against env steps and against wall-clock
  (mean over seeds, ± std shaded; each seed counts to its own last evaluation).
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import chaosgym  # noqa: E402
from chaosgym import flags  # noqa: E402
from chaosgym.agents import config as config_module  # noqa: E402
from chaosgym.agents.config import GRADIENT_AGENTS, SB3_AGENTS, TrainConfig, for_task  # noqa: E402
from chaosgym.agents.run import Run  # noqa: E402
from chaosgym.evaluation import evaluate  # noqa: E402
from chaosgym.presets import presets  # noqa: E402
from chaosgym.registry import parse_task_kwargs  # noqa: E402


DEFAULT_ENV_STEPS = 100_000
UNLIMITED_STEPS = 10**12  # the env-step "budget" of a run under a wall-clock budget alone


@dataclass(frozen=True)
class CompareConfig:
    """What `chaosgym compare` runs; every run's own settings are a `TrainConfig` from the task's presets."""

    tasks: str = field(default="ChaosCartPole-v0", metadata={
        "help": "comma-separated task ids, each with options after ':' (ChaosCartPole-v0:num_poles=2)"})
    agents: str = field(default="full,truncated,combined,es,ppo", metadata={
        "help": f"comma-separated agents from {', '.join(GRADIENT_AGENTS + SB3_AGENTS)} (sac and td3 step "
                "~40 env steps/s on a 2-core CPU: give them a small budget)"})
    seeds: int = field(default=2, metadata={"help": "seeds per task and agent"})
    env_steps: int | None = field(default=None, metadata={
        "help": f"budget per run in simulated env steps (default: {DEFAULT_ENV_STEPS:,}; none when only "
                "--wall-clock is given)"})
    wall_clock: float | None = field(default=None, metadata={
        "help": "budget per run in seconds of training, compilation apart (with --env-steps too, a run stops at "
                "whichever budget ends first)"})

    def steps_budget(self) -> int:
        """The env-step budget of every run; a wall-clock budget alone leaves the steps unlimited."""
        if self.env_steps is not None:
            return self.env_steps
        return UNLIMITED_STEPS if self.wall_clock is not None else DEFAULT_ENV_STEPS

    def describe(self) -> str:
        """The budget in words, as the summary's title gives it."""
        if self.wall_clock is None:
            return f"{self.steps_budget():,} env steps"
        if self.env_steps is None:
            return f"{self.wall_clock:g} s of training"
        return f"{self.env_steps:,} env steps or {self.wall_clock:g} s of training"


# 20 s of training per run: a few hundred updates for each gradient agent on the cart pole
QUICK = {"tasks": "ChaosCartPole-v0", "agents": "apg,shac,full,ppo", "seeds": 2, "wall_clock": 20.0}
# settings compare decides: the task, agent, seed and budget of every run, and the objective
RUN_FIELDS = ("task", "task_kwargs", "agent", "seed", "updates", "env_steps", "eval_every",
              "checkpoint_every", "estimator.objective", "sb3")


def parse_task(spec: str) -> tuple[str, dict]:
    """`"ChaosCartPole-v0:num_poles=2"` -> `("ChaosCartPole-v0", {"num_poles": 2})`."""
    env_id, _, kwargs = spec.partition(":")
    kwargs = parse_task_kwargs(kwargs)
    chaosgym.make(env_id, **kwargs)  # unknown ids and options fail here, before any training
    return env_id, kwargs


def task_label(env_id: str, kwargs: dict) -> str:
    return env_id + "".join(f"-{k}{v}" for k, v in kwargs.items())


def run_config(env_id: str, kwargs: dict, agent: str, seed: int, env_steps: int, changes: dict) -> TrainConfig:
    """One run's config: the task's presets, the user's changes, the return as the objective
    (every agent is ranked by it), evaluations and checkpoints every tenth of the budget."""
    if agent in SB3_AGENTS:
        return for_task(env_id, agent, task_kwargs=kwargs, seed=seed, env_steps=env_steps,
                        eval_episodes=changes.get("eval_episodes", 16))
    config = for_task(env_id, agent, task_kwargs=kwargs, seed=seed, env_steps=env_steps,
                      **{**changes, "estimator.objective": "return"})
    every = max(1, config.updates // 10)
    return config_module.with_changes(config, {"eval_every": every, "checkpoint_every": every})


def train_run(config: TrainConfig, wall_clock: float | None, folder: Path):
    """Train (or finish, or extend) one run; return its deterministic numpy policy and the seconds
    it spent compiling (in every session of the run together)."""
    resume = (folder / "config.json").exists()
    if config.is_sb3:
        from chaosgym.agents.sb3 import train_sb3

        progress = train_sb3(config, folder, resume=resume, progress=False, time_budget=wall_clock)
    else:
        from chaosgym.agents.train import train

        progress = train(config, folder, resume=resume, progress_bar=False, time_budget=wall_clock)
    return Run(folder).policy(), float(progress.get("compile_time", math.nan))


def curve_rows(folder: Path) -> list[dict]:
    """The evaluated rows of a run's metrics.csv (SB3 runs log every rollout, evaluate every few)."""
    return [{k: r[k] for k in ("env_steps", "wall_time", "eval_score", "eval_objective")}
            for r in Run(folder).evaluated_metrics()]


def first_reaching(curve: list[dict], threshold: float, key: str) -> float | None:
    return next((float(r[key]) for r in curve if float(r["eval_score"]) >= threshold), None)


def summarise(results: list[dict], tasks: list[str], agents: list[str], thresholds: dict) -> str:
    out = []
    for task in tasks:
        threshold = thresholds[task]
        out += [f"### {task}\n", f"Threshold: evaluation score ≥ {threshold:g}.\n",
                "| agent | final score | final objective | env steps run | training (s) | compile (s) "
                "| env steps to threshold | training s to threshold | seeds reaching |",
                "|---|---|---|---|---|---|---|---|---|"]
        for agent in agents:
            finals = [r for r in results if r["task"] == task and r["agent"] == agent and r["kind"] == "final"]
            if not finals:
                continue
            scores = [float(r["eval_score"]) for r in finals]
            objectives = [float(r["eval_objective"]) for r in finals]
            reach_steps, reach_time = [], []
            for seed in sorted({r["seed"] for r in finals}):
                curve = [r for r in results if r["task"] == task and r["agent"] == agent
                         and r["seed"] == seed and r["kind"] == "curve"]
                steps, seconds = (first_reaching(curve, threshold, k) for k in ("env_steps", "wall_time"))
                if steps is not None:
                    reach_steps.append(steps)
                    reach_time.append(seconds)
            steps_text = f"{np.median(reach_steps):,.0f}" if reach_steps else "not reached"
            time_text = f"{np.median(reach_time):.1f}" if reach_time else "not reached"
            ran = {k: np.mean([float(r[k]) for r in finals]) for k in ("env_steps", "wall_time")}
            compile_time = np.mean([float(r["compile_time"]) for r in finals])
            out.append(f"| {agent} | {np.mean(scores):.2f} ± {np.std(scores):.2f} | {np.mean(objectives):.3f} ± "
                       f"{np.std(objectives):.3f} | {ran['env_steps']:,.0f} | {ran['wall_time']:.1f} | "
                       f"{compile_time:.1f} | {steps_text} | {time_text} | {len(reach_steps)}/{len(finals)} |")
        out.append("")
    return "\n".join(out)


def _mean_curve(curves: list[list[dict]], x_key: str, y_key: str, points: int = 60):
    """Mean and std over seeds on one grid from the first seed's start to the longest seed's end:
    each seed counts where it has data, so no seed's curve is cut at another's end."""
    xs = [np.array([float(r[x_key]) for r in c]) for c in curves]
    ys = [np.array([float(r[y_key]) for r in c]) for c in curves]
    grid = np.linspace(min(x[0] for x in xs), max(x[-1] for x in xs), points)  # SB3's first point is at t > 0
    values = np.array([np.where((grid >= x[0]) & (grid <= x[-1]), np.interp(grid, x, y), np.nan)
                       for x, y in zip(xs, ys)])
    return grid, np.nanmean(values, 0), np.nanstd(values, 0)


def plot_task(results: list[dict], task: str, agents: list[str], path: Path, title: str,
              objective: str, threshold: float) -> None:
    """Score (episode return) and the task's objective, against env steps and against wall-clock;
    the mean over seeds with a ± std band, one legend for the figure."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.6), sharex="col")
    handles = []
    for agent in agents:
        curves = {}
        for r in results:
            if r["task"] == task and r["agent"] == agent and r["kind"] == "curve":
                curves.setdefault(r["seed"], []).append(r)
        if not curves:
            continue
        color = None
        for row, y_key in enumerate(("eval_score", "eval_objective")):
            for col, x_key in enumerate(("env_steps", "wall_time")):
                grid, mean, std = _mean_curve(list(curves.values()), x_key, y_key)
                [line] = axes[row, col].plot(grid, mean, label=agent, color=color)
                color = line.get_color()
                axes[row, col].fill_between(grid, mean - std, mean + std, alpha=0.2, color=color)
        handles.append(line)
    for ax in axes[0]:
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1, label="_threshold")
    axes[0, 0].set(ylabel="score: episode return (higher is better)", title="score against env steps")
    axes[0, 1].set(title="score against wall-clock")
    axes[1, 0].set(xlabel="env steps", ylabel=f"objective: {objective} (lower is better)",
                   title="objective against env steps")
    axes[1, 1].set(xlabel="wall-clock (s of training; compilation apart)", title="objective against wall-clock")
    fig.suptitle(f"{title}: mean ± std over seeds (dotted: threshold score {threshold:g})")
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_arguments(parser, CompareConfig)
    # every other training setting, for every gradient run (the task's presets where not given)
    flags.add_arguments(parser, TrainConfig, skip=RUN_FIELDS)
    parser.add_argument("--threshold", action="append", default=[], metavar="TASK=SCORE",
                        help="evaluation score that counts as solved (repeatable; default: the task's preset)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help=f"small preset for a 2-core CPU (about 10 minutes): {QUICK}")


def run(args: argparse.Namespace) -> int:
    compare = CompareConfig(**flags.given(args, CompareConfig))
    changes = {k: v for k, v in flags.given(args, TrainConfig).items() if k not in RUN_FIELDS}
    if args.quick:
        compare = CompareConfig(**{k: v for k, v in QUICK.items() if "." not in k})
        changes = {**{k: v for k, v in QUICK.items() if "." in k}, **changes}  # run settings the preset changes
    for name in ("seeds", "env_steps"):
        if getattr(compare, name) is not None and getattr(compare, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(compare, name)}")
    if compare.wall_clock is not None and not compare.wall_clock > 0:
        raise ValueError(f"--wall-clock must be a number of seconds > 0, got {compare.wall_clock}")
    tasks = [parse_task(t) for t in compare.tasks.split(",")]
    agents = compare.agents.split(",")
    unknown = [a for a in agents if a not in GRADIENT_AGENTS + SB3_AGENTS]
    if unknown:
        raise ValueError(f"unknown agent(s) {unknown}; valid: {', '.join(GRADIENT_AGENTS + SB3_AGENTS)}")
    thresholds = {}
    for item in args.threshold:
        name, _, value = item.partition("=")
        thresholds[name] = float(value)
    runs = [(t, a, s) for t in tasks for a in agents for s in range(compare.seeds)]
    # every config is built (and so checked) before the first run trains
    configs = [run_config(env_id, kwargs, agent, seed, compare.steps_budget(), changes)
               for (env_id, kwargs), agent, seed in runs]
    args.out.mkdir(parents=True, exist_ok=True)
    budget = compare.describe()
    print(f"chaosgym compare: {len(runs)} runs of {budget} each into {args.out} (finished runs are read back; "
          "on a 2-core CPU a gradient run of 100k env steps takes a few minutes, PPO's about as long, SAC/TD3 "
          "about 40 min)")

    results = []
    for ((env_id, kwargs), agent, seed), config in tqdm(list(zip(runs, configs)), desc="compare", unit="run"):
        label = task_label(env_id, kwargs)
        thresholds.setdefault(label, thresholds.get(env_id, presets(env_id).threshold))
        folder = args.out / "runs" / f"{label}-{agent}-seed{seed}"
        tqdm.write(f"training {agent} on {label}, seed {seed} -> {folder}")
        policy, compile_time = train_run(config, compare.wall_clock, folder)
        row = {"task": label, "agent": agent, "seed": seed}
        curve = curve_rows(folder)
        results += [{**row, "kind": "curve", **r} for r in curve]
        final = evaluate(policy, env_id, kwargs, num_episodes=config.eval_episodes, seed=config.eval_seed)
        results.append({**row, "kind": "final", "env_steps": curve[-1]["env_steps"], "wall_time": curve[-1]["wall_time"],
                        "eval_score": final["mean_return"], "eval_objective": final["mean_objective"],
                        "compile_time": compile_time})

    columns = ["task", "agent", "seed", "kind", "env_steps", "wall_time", "eval_score", "eval_objective",
               "compile_time"]
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(results)
    labels = [task_label(*t) for t in tasks]
    summary = summarise(results, labels, agents, thresholds)
    title = (f"# chaosgym compare — {budget} per run, {compare.seeds} seeds\n\nEvery agent optimises and is "
             "ranked by the episode return (score); the objective column is the task's reported objective.\n")
    (args.out / "summary.md").write_text(f"{title}\n{summary}")
    for (env_id, kwargs), label in zip(tasks, labels):
        options = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        plot_task(results, label, agents, args.out / f"curves_{label}.png",
                  title=f"{env_id}{f' ({options})' if options else ''}, {budget} per run",
                  objective=chaosgym.make(env_id, **kwargs).task.reported_objective, threshold=thresholds[label])
    print(f"\n{title}\n{summary}")
    print(f"wrote {args.out}/results.csv, summary.md and curves_*.png")
    return 0
