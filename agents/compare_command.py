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
  (median over seeds, their minimum to maximum shaded, up to where the shortest seed ends; a task
  whose objective is the return gets the score alone).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
from pathlib import Path

import gymnasium
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import chaosgym  # noqa: E402
from chaosgym import flags  # noqa: E402
from chaosgym.agents.announce import announce_compile  # noqa: E402
from chaosgym.agents.api import check_fits, train_config  # noqa: E402
from chaosgym.agents.commands import (EVALUATION_FIELDS, ClusterOptions, compare_arguments, compare_config,  # noqa: E402
                                      refuse_repeats, split_task_spec,
                                      task_specs)
from chaosgym.agents.config import RunSettings, TrainConfig, for_task, with_changes  # noqa: E402
from chaosgym.agents.registry import AGENTS  # noqa: E402
from chaosgym.agents.run import Run  # noqa: E402
from chaosgym.evaluation import evaluate  # noqa: E402
from chaosgym.measured import MEASURED  # noqa: E402
from chaosgym.presets import presets  # noqa: E402
from chaosgym.registry import parse_task_kwargs  # noqa: E402
from chaosgym.validation import UserError


def parse_threshold(item: str) -> tuple[str, float]:
    """`"ChaosCartPole-v0=50"` -> `("ChaosCartPole-v0", 50.0)`."""
    name, equals, value = item.partition("=")
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not (name and equals and math.isfinite(score)):
        raise UserError(f"--threshold expects TASK=SCORE with a finite SCORE, e.g. ChaosCartPole-v0=50; got {item!r}")
    return name, score


def parse_task(spec: str) -> tuple[str, dict]:
    """`"ChaosCartPole-v0:num_poles=2"` -> `("ChaosCartPole-v0", {"num_poles": 2})`."""
    env_id, kwargs = split_task_spec(spec)
    kwargs = parse_task_kwargs(kwargs)
    chaosgym.make(env_id, **kwargs)  # unknown ids and options fail here, before any training
    return env_id, kwargs


def task_label(env_id: str, kwargs: dict) -> str:
    return env_id + "".join(f"-{k}{v}" for k, v in kwargs.items())


def run_config(env_id: str, kwargs: dict, agent: str, seed: int, env_steps: int, run: dict,
               overrides: dict) -> TrainConfig:
    """One run's config: the agent's settings from the task's presets with the comparison's
    `overrides` for it (`--set`), the evaluation's `run` settings, the return as the objective
    (every agent is ranked by it), evaluations and checkpoints every tenth of the budget."""
    spec = AGENTS[agent]
    fixed = {"task_kwargs": kwargs, "seed": seed, "env_steps": env_steps, **run}
    if spec.kind == "estimator":
        fixed["estimator.objective"] = "return"
    config = for_task(env_id, agent, **fixed, **overrides)
    if spec.budget != "updates":
        return config
    every = max(1, config.updates // 10)
    return with_changes(config, {"eval_every": every, "checkpoint_every": every})


def train_run(config: TrainConfig, wall_clock: float | None, folder: Path, progress_fn=None):
    """Train (or finish, or extend) one run; return its deterministic numpy policy and the seconds
    it spent compiling (in every session of the run together)."""
    result = train_config(config, folder, resume=(folder / "config.json").exists(), progress=False,
                          time_budget=wall_clock, announce=True, progress_fn=progress_fn)
    return result.policy, float(result.final.get("compile_time", math.nan))


def run_folder(out: Path, label: str, agent: str, seed: int) -> Path:
    return out / "runs" / f"{label}-{agent}-seed{seed}"


def train_on_ray(out: Path, runs: list[tuple], configs: list[TrainConfig], wall_clock: float | None,
                 cluster: ClusterOptions) -> None:
    """Train (or finish) every unfinished run as a Ray task (`chaosgym.agents.cluster`), seed by seed:
    every agent's first seed, then its second, so that the first runs side by side compile different
    programs; a run waits while another seed of its agent compiles, then loads its programs from the
    shared compilation cache."""
    from chaosgym.agents.cluster import Unit, run_units

    units = []
    for ((env_id, kwargs), agent, seed), config in sorted(zip(runs, configs), key=lambda item: item[0][2]):
        label = task_label(env_id, kwargs)
        folder = run_folder(out, label, agent, seed)
        if run_state(folder, config) != "reading back":
            # its first checkpoint comes after its first updates: its programs are compiled (and cached)
            units.append(Unit(f"{agent} on {label}, seed {seed}", train_run, (config, wall_clock, folder),
                              program=(label, agent), compiled=lambda folder=folder: any(folder.glob("checkpoint.*"))))
    run_units(units, cluster, "compare")


def run_state(folder: Path, config: TrainConfig) -> str:
    """What compare does with a run folder: "training" a new run, "resuming" an unfinished one,
    "reading back" a finished one."""
    if not (folder / "config.json").exists():
        return "training"
    rows = Run(folder).evaluated_metrics() if (folder / "metrics.csv").exists() else []
    if not rows:
        return "resuming"
    last = rows[-1]
    if config.spec.budget == "updates":
        finished = int(last["update"]) >= config.updates
    else:
        finished = int(last["env_steps"]) >= config.env_steps
    return "reading back" if finished else "resuming"


def compile_evaluation_env(env_id: str, kwargs: dict) -> None:
    """Compile the reset and step of the Gymnasium MJX env that `evaluate` scores every policy in;
    every later env of the task in this process runs the same compiled programs."""
    env = gymnasium.make(env_id, backend="mjx", **kwargs)
    try:
        env.reset(seed=0)
        env.step(env.action_space.sample())
    finally:
        env.close()


RESULT_COLUMNS = ["task", "agent", "seed", "kind", "env_steps", "wall_time", "eval_score", "eval_objective",
                  "compile_time"]


def write_results(path: Path, results: list[dict]) -> None:
    """results.csv: one row per curve point and per final evaluation (`RESULT_COLUMNS`)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, RESULT_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(results)


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


def _seed_curves(curves: list[list[dict]], x_key: str, y_key: str, points: int = 60):
    """Median, minimum and maximum over seeds on one grid over the range every seed has data for:
    from the latest first point to the earliest last one, so that every point is over all the seeds
    (beyond the shortest seed's end a "median" would be the other seeds' alone)."""
    xs = [np.array([float(r[x_key]) for r in c]) for c in curves]
    ys = [np.array([float(r[y_key]) for r in c]) for c in curves]
    grid = np.linspace(max(x[0] for x in xs), min(x[-1] for x in xs), points)
    values = np.array([np.interp(grid, x, y) for x, y in zip(xs, ys)])
    return grid, np.median(values, 0), values.min(0), values.max(0)


def plot_task(results: list[dict], task: str, agents: list[str], path: Path, title: str,
              objective: str, threshold: float) -> None:
    """Score (episode return) and the task's objective, against env steps and against wall-clock;
    the median over seeds with a band from their minimum to their maximum, one legend for the figure. A task whose objective is the
    return gets the score panels alone: its objective panels would repeat them upside down."""
    y_keys = ("eval_score",) if objective == "return" else ("eval_score", "eval_objective")
    fig, axes = plt.subplots(len(y_keys), 2, figsize=(10, 3.6 + 3 * (len(y_keys) - 1)), sharex="col",
                             squeeze=False)
    handles = []
    for agent in agents:
        curves = {}
        for r in results:
            if r["task"] == task and r["agent"] == agent and r["kind"] == "curve":
                curves.setdefault(r["seed"], []).append(r)
        if not curves:
            continue
        color = None
        for row, y_key in enumerate(y_keys):
            for col, x_key in enumerate(("env_steps", "wall_time")):
                grid, median, low, high = _seed_curves(list(curves.values()), x_key, y_key)
                [line] = axes[row, col].plot(grid, median, label=agent, color=color)
                color = line.get_color()
                axes[row, col].fill_between(grid, low, high, alpha=0.2, color=color)
        handles.append(line)
    for ax in axes[0]:
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1, label="_threshold")
    axes[0, 0].set(ylabel="score: episode return (higher is better)", title="score against env steps")
    axes[0, 1].set(title="score against wall-clock")
    if len(y_keys) == 2:
        axes[1, 0].set(ylabel=f"objective: {objective} (lower is better)", title="objective against env steps")
        axes[1, 1].set(title="objective against wall-clock")
    axes[-1, 0].set(xlabel="env steps")
    axes[-1, 0].xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 250k: full numbers overlap
    axes[-1, 1].set(xlabel="wall-clock (s of training; compilation apart)")
    fig.suptitle(f"{title}: median over seeds, min-max shaded, up to where the shortest seed ends\n"
                 f"(dotted: threshold score {threshold:g})")
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.06 if len(y_keys) == 2 else 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    compare, overrides = args.compare, args.agent_overrides  # built and checked by commands.compare_config
    evaluation = {k: v for k, v in flags.given(args, RunSettings).items() if k in EVALUATION_FIELDS}
    tasks = [parse_task(t) for t in task_specs(compare.tasks)]
    labels = [task_label(*t) for t in tasks]
    refuse_repeats("--tasks", labels)
    agents = compare.agents.split(",")
    given_thresholds = dict(parse_threshold(item) for item in args.threshold)
    unmatched = sorted(set(given_thresholds) - set(labels) - {env_id for env_id, _ in tasks})
    if unmatched:
        raise UserError(f"--threshold names {', '.join(unmatched)}, not among --tasks ({', '.join(labels)})")
    thresholds = {label: given_thresholds.get(label, given_thresholds.get(env_id, presets(env_id).threshold))
                  for (env_id, _), label in zip(tasks, labels)}
    runs = [(t, a, s) for t in tasks for a in agents for s in range(compare.seeds)]
    # every config is built (and so checked) before the first run trains: one per task and agent,
    # the seeds' differ in their seed alone
    first = {(label, agent): run_config(env_id, kwargs, agent, 0, compare.steps_budget(), evaluation, overrides[agent])
             for (env_id, kwargs), label in zip(tasks, labels) for agent in agents}
    for config in first.values():
        check_fits(config)
    configs = [dataclasses.replace(first[task_label(*task), agent], seed=seed) for task, agent, seed in runs]
    args.out.mkdir(parents=True, exist_ok=True)
    budget = compare.describe()
    print(f"chaosgym compare: {len(runs)} runs of {budget} each into {args.out} (finished runs are read back; "
          f"on a 2-core CPU 100,000 cart-pole env steps take about {MEASURED['gradient_agent_100k']} of training "
          f"for a gradient agent, {MEASURED['ppo_100k']} for PPO and {MEASURED['sac_td3_100k']} for SAC or TD3, "
          "the first compile of each agent apart)")

    if args.cluster is not None:  # the runs on Ray first; the loop below reads each one back
        train_on_ray(args.out, runs, configs, compare.wall_clock, args.cluster)
    for (env_id, kwargs), label in zip(tasks, labels):
        with announce_compile(f"the Gymnasium MJX env of {label} for the final evaluations",
                             typical_s=MEASURED["compile_evaluation_env"].seconds):
            compile_evaluation_env(env_id, kwargs)
    results = []
    # the bar moves within each run, in env steps (in runs under a wall-clock budget alone)
    by_steps = compare.env_steps is not None or compare.wall_clock is None
    bar = tqdm(total=len(runs) * compare.steps_budget() if by_steps else len(runs), desc="compare",
               unit=" env steps" if by_steps else " runs", unit_scale=by_steps)
    for index, (((env_id, kwargs), agent, seed), config) in enumerate(zip(runs, configs)):
        label = task_label(env_id, kwargs)
        folder = run_folder(args.out, label, agent, seed)
        state = run_state(folder, config)
        tqdm.write(f"{state} {agent} on {label}, seed {seed} -> {folder}")
        done = index * compare.steps_budget() if by_steps else index

        def report(env_steps: int, metrics: dict, done=done) -> None:
            if by_steps:
                bar.n = done + min(env_steps, compare.steps_budget())
            bar.set_postfix_str(f"{agent} seed {seed}: score {metrics.get('eval_score', math.nan):.4g}")
            bar.refresh()

        policy, compile_time = train_run(config, compare.wall_clock, folder, report)
        bar.n = done + (compare.steps_budget() if by_steps else 1)
        bar.refresh()
        row = {"task": label, "agent": agent, "seed": seed}
        curve = curve_rows(folder)
        results += [{**row, "kind": "curve", **r} for r in curve]
        final = evaluate(policy, env_id, kwargs, num_episodes=config.eval_episodes, seed=config.eval_seed)
        results.append({**row, "kind": "final", "env_steps": curve[-1]["env_steps"], "wall_time": curve[-1]["wall_time"],
                        "eval_score": final["mean_return"], "eval_objective": final["mean_objective"],
                        "compile_time": compile_time})

    bar.close()
    write_results(args.out / "results.csv", results)
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


@dataclasses.dataclass(frozen=True)
class CompareResult:
    """What `compare` wrote: its folder, every row of its results.csv and its summary.md."""

    out: Path
    rows: list[dict]  # results.csv: the curve points and one `final` row per run
    summary: str  # summary.md: the table per task


def compare(tasks: str | list[str], agents: str | list[str], out: Path | str | None = None, *, seeds: int = 1,
            env_steps: int | None = None, wall_clock: float | None = None, settings: dict | None = None,
            thresholds: dict | None = None, eval_episodes: int | None = None, eval_seed: int | None = None,
            workers: int | None = None) -> CompareResult:
    """`chaosgym compare` from Python, through the command's own parser and checks (one source):
    every agent of `agents` on every task of `tasks` (ids, with options as the command writes them:
    "ChaosCartPole-v0:num_poles=2"), `seeds` seeds each, under one budget; `settings` are `--set`'s
    ({"apg.num_envs": 1024, "num_envs": 64}), `thresholds` `--threshold`'s ({"ChaosAnt-v0": 1500}).
    Finished runs in `out` are read back, as the command does."""
    argv = ["--tasks", tasks if isinstance(tasks, str) else ",".join(tasks),
            "--agents", agents if isinstance(agents, str) else ",".join(agents), "--seeds", str(seeds)]
    for flag, value in (("--env-steps", env_steps), ("--wall-clock", wall_clock), ("--out", out),
                        ("--eval-episodes", eval_episodes), ("--eval-seed", eval_seed), ("--workers", workers)):
        if value is not None:
            argv += [flag, str(value)]
    for name, value in (settings or {}).items():
        argv += ["--set", f"{name}={value!r}"]
    for task, score in (thresholds or {}).items():
        argv += ["--threshold", f"{task}={score}"]
    parser = _ArgumentParser(prog="chaosgym.agents.compare")
    compare_arguments(parser)
    args = parser.parse_args(argv)
    compare_config(args)
    run(args)
    with open(Path(args.out) / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return CompareResult(Path(args.out), rows, (Path(args.out) / "summary.md").read_text())


class _ArgumentParser(argparse.ArgumentParser):
    """A parser whose errors are raised (a UserError naming the flag), never a process exit."""

    def error(self, message: str):
        raise UserError(message)
