"""Every XLA program a command compiles: its name, HLO instruction count, cold compile seconds, and
whether the persistent cache served it; optionally beside the same command on another revision.

    python benchmarks/compile_budget.py                      # the Ant comparison and the grid, this checkout
    python benchmarks/compile_budget.py --baseline cff8cfe   # ... and on that revision, in turns (A/B/A/B)
    python benchmarks/compile_budget.py --quick              # the cart pole, for a smoke run

Each command runs in a fresh process with an empty compilation cache (`CHAOSGYM_CACHE_DIR` a new
temporary folder): every program is compiled cold, and only a program compiled twice in that process
can be served by the cache. JAX names each compile (`JAX_LOG_COMPILES`); XLA dumps each module's HLO
before optimisation (`--xla_dump_to`), whose instructions are counted. The commands are the Ant
comparison (`chaosgym compare --tasks ChaosAnt-v0 --agents apg,shac,ahac,ppo`) at the smallest budget
(one update or one step each: every program it would compile, and little training) and the
Stable-BPTT grid (`chaosgym reproduce stable-bptt`, one epoch). `--rounds` repeats each side; the
table keeps each program's median.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "compare": ["compare", "--tasks", "ChaosAnt-v0", "--agents", "apg,shac,ahac,ppo", "--seeds", "1",
                "--env-steps", "1", "--eval-episodes", "2"],
    "reproduce": ["reproduce", "stable-bptt", "--poles", "3", "--epochs", "1", "--states", "16", "--seeds", "1",
                  "--no-progress"],
}
QUICK = {
    "compare": ["compare", "--tasks", "ChaosCartPole-v0", "--agents", "apg,full", "--seeds", "1", "--env-steps", "1",
                "--eval-episodes", "2"],
    "reproduce": ["reproduce", "stable-bptt", "--poles", "1", "--epochs", "1", "--states", "16", "--seeds", "1",
                  "--flows", "R", "--clip", "NONE", "--physics", "equations", "--no-progress"],
}
COMPILED = re.compile(r"Finished XLA compilation of (?P<name>.+?) in (?P<seconds>[0-9.e+-]+) sec")
CACHE_HIT = re.compile(r"[Pp]ersistent compilation cache hit for '(?P<name>[^']+)'")
MODULE_FILE = re.compile(r"module_\d+\.(?P<name>.+)\.before_optimizations\.txt$")
INSTRUCTION = re.compile(r"^\s+(ROOT\s+)?%?[\w.-]+ = ")
LISTED_MIN_S = 0.2  # programs compiling faster than this are counted in the total, not listed


def hlo_counts(dump: Path) -> dict[str, list[int]]:
    """Instructions of every module XLA dumped before optimisation, by module name."""
    counts: dict[str, list[int]] = defaultdict(list)
    for path in dump.glob("module_*.before_optimizations.txt"):
        match = MODULE_FILE.search(path.name)
        if match:
            counts[match["name"]].append(sum(1 for line in path.read_text().splitlines() if INSTRUCTION.match(line)))
    return counts


def measure(source: Path, args: list[str], timeout: float) -> dict:
    """One cold run of `chaosgym ARGS` from the checkout `source`: its programs and the wall time."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        env = {**os.environ, "PYTHONPATH": str(source), "CHAOSGYM_CACHE_DIR": str(scratch / "cache"),
               "JAX_LOG_COMPILES": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
               "CHAOSGYM_TRACE_CACHE": "0",  # programs under their own names, not the trace cache's
               "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={scratch / 'dump'} "
                            "--xla_dump_hlo_as_text".strip()}
        command = [sys.executable, "-m", "chaosgym.agents.cli", *args, "--out", str(scratch / "out")]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed on {source}:\n{done.stderr[-3000:]}")
        log = done.stderr + done.stdout
        programs = [(m["name"], float(m["seconds"])) for m in COMPILED.finditer(log)]
        hits = [m["name"] for m in CACHE_HIT.finditer(log)]
        return {"programs": programs, "hits": hits, "hlo": hlo_counts(scratch / "dump"), "wall": wall}


def module_name(name: str) -> str:
    """XLA's module name of a program JAX logs as `jit(update)`: `jit_update`."""
    inner = name[4:-1] if name.startswith("jit(") and name.endswith(")") else name
    return inner if inner.startswith("jit_") else "jit_" + re.sub(r"\W", "_", inner)


def summarise(runs: list[dict]) -> tuple[list[tuple[str, int, float, int]], float, int]:
    """(name, HLO instructions, median compile s, cache hits) per program over the runs, the
    median total compile seconds, and the number of programs per run."""
    by_name: dict[str, list[list[float]]] = defaultdict(list)
    for run in runs:
        seen: dict[str, list[float]] = defaultdict(list)
        for name, seconds in run["programs"]:
            seen[name].append(seconds)
        for name, seconds in seen.items():
            by_name[name].append(seconds)
    rows = []
    for name, per_run in by_name.items():
        seconds = statistics.median(sum(s) for s in per_run)
        module = module_name(name)
        hlo = max(runs[0]["hlo"].get(module, [0]), default=0)
        hits = sum(sum(module_name(h) == module for h in r["hits"]) for r in runs)
        rows.append((name, hlo, seconds, hits // len(runs)))
    total = statistics.median(sum(s for _, s in run["programs"]) for run in runs)
    count = round(statistics.median(len(run["programs"]) for run in runs))
    return sorted(rows, key=lambda r: -r[2]), total, count


def table(title: str, rows, total: float, count: int, wall: float) -> str:
    listed = [r for r in rows if r[2] >= LISTED_MIN_S]
    lines = [f"### {title}", "", f"{count} programs compiled, {total:.1f} s of compiling in all "
             f"({len(rows) - len(listed)} of them under {LISTED_MIN_S} s each, not listed); the command took "
             f"{wall:.0f} s", "", "| program | HLO instructions (the largest of that name) | cold compile (s, all of that name) | cache hits |", "|---|---:|---:|---:|"]
    lines += [f"| `{name}` | {hlo:,} | {seconds:.1f} | {hits} |" for name, hlo, seconds, hits in listed]
    return "\n".join(lines) + "\n"


def worktree(ref: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(folder), ref], check=True,
                   capture_output=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git revision to measure beside this checkout, in turns")
    parser.add_argument("--commands", default="compare,reproduce", help="which of: compare, reproduce")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side (medians are reported)")
    parser.add_argument("--quick", action="store_true", help="the cart pole instead of the Ant: a smoke run")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one command may take")
    args = parser.parse_args(argv)
    commands = QUICK if args.quick else COMMANDS
    with tempfile.TemporaryDirectory() as scratch:
        sides = {"this checkout": ROOT}
        if args.baseline:
            sides = {f"baseline {args.baseline}": worktree(args.baseline, Path(scratch) / "baseline"), **sides}
        try:
            for command in args.commands.split(","):
                results: dict[str, list[dict]] = defaultdict(list)
                for _ in range(args.rounds):
                    for side, source in sides.items():  # in turns, so that a busy machine hits both alike
                        results[side].append(measure(source, commands[command], args.timeout))
                totals = {}
                for side, runs in results.items():
                    rows, total, count = summarise(runs)
                    totals[side] = total
                    wall = statistics.median(r["wall"] for r in runs)
                    print(table(f"{command}, {side}", rows, total, count, wall))
                if len(totals) == 2:
                    (a, ta), (b, tb) = totals.items()
                    print(f"{command}: cold compile total {tb:.1f} s ({b}) against {ta:.1f} s ({a}): "
                          f"ratio {tb / ta:.2f}\n")
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(scratch) / "baseline")],
                               capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
