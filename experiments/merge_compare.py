"""One `compare` report from the results of several `compare` commands on the same task and budget.

A long comparison runs as several `chaosgym compare` commands into one folder (agents or seeds
added later, from different checkouts); each command's `results.csv` holds the runs it was given.
This merges those files (a later file's rows of a task, agent and seed replace an earlier file's)
and writes what `compare` writes: results.csv, summary.md and curves_<task>.png.

    python experiments/merge_compare.py runs/ant-4M/results_gradient_seed0.csv runs/ant-4M/results.csv \\
        --out docs/data/ant_4M --title "The Ant at SHAC's budget" --threshold 1500 --budget "4,096,000 env steps"
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from chaosgym.agents.compare_command import plot_task, summarise, write_results


def merge(paths: list[Path]) -> list[dict]:
    runs: dict[tuple, list[dict]] = {}
    for path in paths:
        this_file: dict[tuple, list[dict]] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                this_file.setdefault((row["task"], row["agent"], row["seed"]), []).append(row)
        runs.update(this_file)
    return [row for rows in runs.values() for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="results.csv files, earliest first")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.csv, summary.md, curves_*.png")
    parser.add_argument("--title", required=True, help="the figure's title")
    parser.add_argument("--threshold", type=float, required=True, help="the task's threshold score")
    parser.add_argument("--budget", required=True, help="the budget per run, as summary.md's title says it")
    args = parser.parse_args(argv)
    results = merge(args.results)
    tasks = list(dict.fromkeys(r["task"] for r in results))
    agents = list(dict.fromkeys(r["agent"] for r in results))
    seeds = len({r["seed"] for r in results})
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out / "results.csv", results)
    summary = summarise(results, tasks, agents, {task: args.threshold for task in tasks})
    (args.out / "summary.md").write_text(f"# chaosgym compare — {args.budget} per run, {seeds} seeds "
                                         f"(merged from {len(args.results)} results files)\n\n{summary}")
    for task in tasks:
        plot_task(results, task, agents, args.out / f"curves_{task}.png", f"{args.title}, {task}", "return",
                  args.threshold)
    print(summary)
    print(f"wrote {args.out}/results.csv, summary.md and curves_*.png: {len(agents)} agents, {seeds} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
