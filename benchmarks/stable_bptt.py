"""Reproduce Schnell & Thuerey (ICLR 2024) on the multi-pole cart pole.

For 1, 2 and 3 poles (4 with --poles 1,2,3,4), horizon 100, the agents full, modified, combined,
truncated and es train the same MLP policy for the same number of updates on several seeds.
Writes into --out:

* results.csv — one row per (poles, agent, seed, evaluation): update, env_steps, wall_time,
  held-out final-state loss (1 - mean cos angle) and return;
* summary.md — final held-out loss, mean ± std over seeds, per pole count and agent;
* learning_curves.png — held-out loss against updates, one panel per pole count: median over
  seeds, shaded from the best to the worst seed.

Each run is an ordinary `chaosgym train` run folder under --out/runs/, so an interrupted
benchmark resumes where it stopped (runs already finished are read back, not redone).

Run: python benchmarks/stable_bptt.py [--quick]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from chaosgym.agents.train import TrainConfig, load_checkpoint, train  # noqa: E402

AGENTS = ("full", "modified", "combined", "truncated", "es")


def run_folder(out: Path, poles: int, agent: str, seed: int) -> Path:
    return out / "runs" / f"poles{poles}-{agent}-seed{seed}"


def run_one(config: TrainConfig, folder: Path) -> list[dict]:
    done = (folder / "checkpoint.pkl").exists() and load_checkpoint(folder)["update"] >= config.updates
    if not done:
        train(config, folder, resume=(folder / "checkpoint.pkl").exists(), progress_bar=True)
    with open(folder / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["eval_objective"]]


def summarise(rows: list[dict], poles_list, agents, updates: int) -> str:
    lines = ["| poles | " + " | ".join(agents) + " |", "|---|" + "---|" * len(agents)]
    for poles in poles_list:
        cells = []
        for agent in agents:
            final = [float(r["eval_objective"]) for r in rows
                     if r["poles"] == poles and r["agent"] == agent and int(r["update"]) == updates]
            cells.append(f"{np.mean(final):.3f} ± {np.std(final):.3f}" if final else "—")
        lines.append(f"| {poles} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], poles_list, agents, path: Path) -> None:
    fig, axes = plt.subplots(1, len(poles_list), figsize=(4.2 * len(poles_list), 3.4), squeeze=False)
    for ax, poles in zip(axes[0], poles_list):
        for agent in agents:
            mine = [r for r in rows if r["poles"] == poles and r["agent"] == agent]
            updates = sorted({int(r["update"]) for r in mine})
            if not updates:
                continue
            values = np.array([[float(r["eval_objective"]) for r in mine if int(r["update"]) == u] for u in updates])
            # with a few seeds, the median and the full range say more than mean +- std on a log axis
            line, = ax.plot(updates, np.median(values, axis=1), label=agent)
            ax.fill_between(updates, values.min(axis=1), values.max(axis=1), alpha=0.12, color=line.get_color())
        ax.set(title=f"{poles} pole{'s' if poles > 1 else ''}", xlabel="update", yscale="log")
    axes[0][0].set_ylabel("held-out final-state loss")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poles", default="1,2,3", help="pole counts")
    parser.add_argument("--agents", default=",".join(AGENTS), help="agents to compare")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per (poles, agent)")
    parser.add_argument("--updates", type=int, default=250, help="updates per run, the same for every agent")
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--truncation", type=int, default=20, help="window of the truncated agent")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("runs/stable_bptt"))
    parser.add_argument("--quick", action="store_true", help="tiny run: 1 pole, 1 seed, 6 updates, horizon 20")
    args = parser.parse_args()
    poles_list = [int(p) for p in args.poles.split(",")]
    agents = args.agents.split(",")
    if args.quick:
        poles_list, args.seeds, args.updates, args.horizon, args.truncation, args.eval_every = [1], 1, 6, 20, 5, 3

    rows = []
    for poles in poles_list:
        for agent in agents:
            for seed in range(args.seeds):
                config = TrainConfig(
                    task="ChaosCartPole-v0", task_kwargs={"num_poles": poles}, agent=agent,
                    horizon=args.horizon, truncation=args.truncation if agent == "truncated" else None,
                    updates=args.updates, seed=seed, batch_size=args.batch_size,
                    learning_rate=args.learning_rate, eval_every=args.eval_every,
                    checkpoint_every=args.eval_every)
                for r in run_one(config, run_folder(args.out, poles, agent, seed)):
                    rows.append({"poles": poles, "agent": agent, "seed": seed, **r})

    columns = ["poles", "agent", "seed", "update", "env_steps", "wall_time", "eval_objective", "eval_score"]
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    table = summarise(rows, poles_list, agents, args.updates)
    header = (f"Held-out final-state loss (1 - mean cos angle; 0 = all poles upright) after {args.updates} "
              f"updates, horizon {args.horizon}, batch {args.batch_size}, mean ± std over {args.seeds} seeds.\n\n")
    (args.out / "summary.md").write_text(header + table + "\n")
    plot(rows, poles_list, agents, args.out / "learning_curves.png")
    print(header + table)
    print(f"\nwrote {args.out}/results.csv, summary.md, learning_curves.png")


if __name__ == "__main__":
    main()
