"""`chaosgym compare`: tasks x agents x seeds under one budget, turned into a table and plots.

Every run is an ordinary `chaosgym train` run folder under OUT/runs/; runs already finished are
read back, not redone, so an interrupted comparison continues where it stopped. Every trained
policy, gradient-based or SB3, is then scored by the one Gymnasium evaluation protocol
(`chaosgym.evaluation.evaluate`). Writes into OUT:

* results.csv — learning-curve points (env_steps, wall_time, eval_score, eval_objective) of every
  run, and one `final` row per run from the common protocol;
* summary.md — per task: final score and objective (mean ± std over seeds), and the env steps
  and wall-clock each agent needed to reach the task's threshold score (median over the seeds
  that reached it);
* curves_<task>.png — evaluation score against env steps and against wall-clock, shaded ± std.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import chaosgym  # noqa: E402
from chaosgym.agents.train import GRADIENT_AGENTS, SB3_AGENTS, TrainConfig, parse_task_kwargs  # noqa: E402
from chaosgym.evaluation import evaluate  # noqa: E402

# per-task settings of the gradient agents and the score a run must reach to count as solved
GRADIENT_DEFAULTS = {
    "ChaosCartPole-v0": {"horizon": 100, "truncation": 20, "learning_rate": 3e-3},
    "ChaosDoublePendulum-v0": {"horizon": 100, "truncation": 20, "learning_rate": 1e-3},
    "ChaosAnt-v0": {"horizon": 50, "truncation": 10, "learning_rate": 1e-3},
}
THRESHOLDS = {"ChaosCartPole-v0": 50.0, "ChaosDoublePendulum-v0": 0.0, "ChaosAnt-v0": 500.0}
QUICK = {"tasks": ["ChaosCartPole-v0"], "agents": ["full", "combined", "es", "ppo"], "seeds": 2,
         "env_steps": 60_000, "es_pairs": 4}


def parse_task(spec: str) -> tuple[str, dict]:
    """`"ChaosCartPole-v0:num_poles=2"` -> `("ChaosCartPole-v0", {"num_poles": 2})`."""
    env_id, _, kwargs = spec.partition(":")
    kwargs = parse_task_kwargs(kwargs)
    chaosgym.make(env_id, **kwargs)  # unknown ids and options fail here, before any training
    return env_id, kwargs


def task_label(env_id: str, kwargs: dict) -> str:
    return env_id + "".join(f"-{k}{v}" for k, v in kwargs.items())


def gradient_config(env_id, kwargs, agent, seed, env_steps, es_pairs) -> TrainConfig:
    settings = GRADIENT_DEFAULTS[env_id]
    config = TrainConfig(task=env_id, task_kwargs=kwargs, agent=agent, horizon=settings["horizon"],
                         truncation=settings["truncation"] if agent == "truncated" else None,
                         seed=seed, learning_rate=settings["learning_rate"], es_pairs=es_pairs)
    updates = max(1, env_steps // config.steps_per_update())
    every = max(1, updates // 10)
    return TrainConfig(**{**config.__dict__, "updates": updates, "eval_every": every, "checkpoint_every": every})


def train_run(env_id, kwargs, agent, seed, args, folder: Path):
    """Train (or finish) one run; return its deterministic numpy policy."""
    resume = (folder / "config.json").exists()
    if agent in SB3_AGENTS:
        from chaosgym.agents.sb3 import load_policy, train_sb3

        train_sb3(env_id, kwargs, agent, args.env_steps, seed, folder, resume=resume, progress=False,
                  time_budget=args.wall_clock)
        return load_policy(folder)
    from chaosgym.agents.train import load_checkpoint, policy_fn, train

    config = gradient_config(env_id, kwargs, agent, seed, args.env_steps, args.es_pairs)
    train(config, folder, resume=resume, progress_bar=False, time_budget=args.wall_clock)
    return policy_fn(load_checkpoint(folder)["params"])


def curve_rows(folder: Path) -> list[dict]:
    """The evaluated rows of a run's metrics.csv (SB3 runs log every rollout, evaluate every few)."""
    with open(folder / "metrics.csv", newline="") as f:
        return [{k: r[k] for k in ("env_steps", "wall_time", "eval_score", "eval_objective")}
                for r in csv.DictReader(f) if np.isfinite(float(r["eval_score"] or "nan"))]


def first_reaching(curve: list[dict], threshold: float, key: str) -> float | None:
    return next((float(r[key]) for r in curve if float(r["eval_score"]) >= threshold), None)


def summarise(results: list[dict], tasks: list[str], agents: list[str], thresholds: dict) -> str:
    out = []
    for task in tasks:
        threshold = thresholds[task]
        out += [f"### {task}\n", f"Threshold: evaluation score ≥ {threshold:g}.\n",
                "| agent | final score | final objective | env steps to threshold | wall-clock to threshold (s) | seeds reaching |",
                "|---|---|---|---|---|---|"]
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
            out.append(f"| {agent} | {np.mean(scores):.2f} ± {np.std(scores):.2f} | {np.mean(objectives):.3f} ± "
                       f"{np.std(objectives):.3f} | {steps_text} | {time_text} | {len(reach_steps)}/{len(finals)} |")
        out.append("")
    return "\n".join(out)


def plot_task(results: list[dict], task: str, agents: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for agent in agents:
        curves = {}
        for r in results:
            if r["task"] == task and r["agent"] == agent and r["kind"] == "curve":
                curves.setdefault(r["seed"], []).append(r)
        if not curves:
            continue
        for ax, key in zip(axes, ("env_steps", "wall_time")):
            # put every seed on one grid so mean and spread are taken at the same x
            xs = [np.array([float(r[key]) for r in c]) for c in curves.values()]
            ys = [np.array([float(r["eval_score"]) for r in c]) for c in curves.values()]
            grid = np.linspace(0, min(x[-1] for x in xs), 50)
            values = np.array([np.interp(grid, x, y) for x, y in zip(xs, ys)])
            mean, std = values.mean(0), values.std(0)
            ax.plot(grid, mean, label=agent)
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
    axes[0].set(xlabel="env steps", ylabel="evaluation score (episode return)", title=task)
    axes[1].set(xlabel="wall-clock (s, training only)", title=task)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default="ChaosCartPole-v0",
                        help="comma-separated task ids, each with options after ':' (ChaosCartPole-v0:num_poles=2)")
    parser.add_argument("--agents", default="full,combined,truncated,es,ppo,sac",
                        help=f"comma-separated agents from {', '.join(GRADIENT_AGENTS + SB3_AGENTS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task and agent")
    parser.add_argument("--env-steps", type=int, default=200_000, help="budget per run in simulated env steps")
    parser.add_argument("--wall-clock", type=float, default=None,
                        help="budget per run in seconds of training (stops at whichever budget ends first)")
    parser.add_argument("--es-pairs", type=int, default=8, help="antithetic pairs per ES update")
    parser.add_argument("--eval-episodes", type=int, default=16, help="episodes of the final evaluation")
    parser.add_argument("--threshold", action="append", default=[], metavar="TASK=SCORE",
                        help="score that counts as solved (repeatable); defaults: "
                             + ", ".join(f"{k}={v:g}" for k, v in THRESHOLDS.items()))
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help=f"small preset for a 2-core CPU (about 10 minutes): {json.dumps(QUICK)}")


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.tasks, args.agents = ",".join(QUICK["tasks"]), ",".join(QUICK["agents"])
        args.seeds, args.env_steps, args.es_pairs = QUICK["seeds"], QUICK["env_steps"], QUICK["es_pairs"]
    tasks = [parse_task(t) for t in args.tasks.split(",")]
    agents = args.agents.split(",")
    unknown = [a for a in agents if a not in GRADIENT_AGENTS + SB3_AGENTS]
    if unknown:
        raise ValueError(f"unknown agent(s) {unknown}; valid: {', '.join(GRADIENT_AGENTS + SB3_AGENTS)}")
    thresholds = dict(THRESHOLDS)
    for item in args.threshold:
        name, _, value = item.partition("=")
        thresholds[name] = float(value)
    args.out.mkdir(parents=True, exist_ok=True)

    results = []
    runs = [(t, a, s) for t in tasks for a in agents for s in range(args.seeds)]
    for (env_id, kwargs), agent, seed in tqdm(runs, desc="compare", unit="run"):
        label = task_label(env_id, kwargs)
        thresholds.setdefault(label, thresholds.get(env_id, 0.0))
        folder = args.out / "runs" / f"{label}-{agent}-seed{seed}"
        tqdm.write(f"training {agent} on {label}, seed {seed} -> {folder}")
        policy = train_run(env_id, kwargs, agent, seed, args, folder)
        row = {"task": label, "agent": agent, "seed": seed}
        curve = curve_rows(folder)
        results += [{**row, "kind": "curve", **r} for r in curve]
        final = evaluate(policy, env_id, kwargs, num_episodes=args.eval_episodes)
        results.append({**row, "kind": "final", "env_steps": curve[-1]["env_steps"], "wall_time": curve[-1]["wall_time"],
                        "eval_score": final["mean_return"], "eval_objective": final["mean_objective"]})

    columns = ["task", "agent", "seed", "kind", "env_steps", "wall_time", "eval_score", "eval_objective"]
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(results)
    labels = [task_label(*t) for t in tasks]
    summary = summarise(results, labels, agents, thresholds)
    budget = f"{args.env_steps:,} env steps" + (f" or {args.wall_clock:g} s" if args.wall_clock else "")
    (args.out / "summary.md").write_text(f"# chaosgym compare — {budget} per run, {args.seeds} seeds\n\n{summary}")
    for label in labels:
        plot_task(results, label, agents, args.out / f"curves_{label}.png")
    print(f"\n# chaosgym compare — {budget} per run, {args.seeds} seeds\n\n{summary}")
    print(f"wrote {args.out}/results.csv, summary.md and curves_*.png")
    return 0
