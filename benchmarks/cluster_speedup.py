"""`--workers 2` against the serial command on this machine, and the workers' compiles with and
without the shared compilation cache.

Each command runs as a user runs it (`python -m chaosgym.agents.cli ...`, a fresh process) and is
timed whole: Ray's start, every compile, the training and the driver's evaluations and figures.
The grids are a small `compare` (apg and full on the cart pole, 2 seeds, small batches) and
`reproduce stable-bptt` at N = 1..2 (the closed-form physics); the serial command and the Ray one
each start from an empty compilation cache of their own (`CHAOSGYM_CACHE_DIR` a new folder), so
both compile every program once. The compile count runs apg alone, 2 seeds, on 2 workers: the
second seed waits while the first compiles, then its worker loads the programs from the shared
cache, or, with the cache off (`CHAOSGYM_COMPILATION_CACHE=0`), compiles them again.

    python benchmarks/cluster_speedup.py           # one run of each (about 20 min on a 2-core CPU)
    python benchmarks/cluster_speedup.py --quick   # compare alone, tiny budgets, one cache: a smoke run
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APG_SMALL = ["--set", "apg.num_envs=4", "--set", "apg.window=16", "--eval-episodes", "2"]
SMALL = [*APG_SMALL, "--set", "estimator.horizon=20", "--set", "full.batch_size=4"]
COMPILES = re.compile(r"(?P<cold>\d+) programs compiled cold \((?P<cold_s>\d+) s\), (?P<loaded>\d+) loaded from the "
                      r"compilation cache \((?P<loaded_s>\d+) s\)\s*$", re.M)


def grids(quick: bool) -> dict[str, list[str]]:
    steps, epochs, flows = ("256", "1", "R") if quick else ("16384", "20", "R,M,S,C")
    grids = {
        f"compare: apg and full x 2 seeds, {int(steps):,} env steps each":
            ["compare", "--tasks", "ChaosCartPole-v0", "--agents", "apg,full", "--seeds", "2", "--env-steps", steps,
             *SMALL]}
    if not quick:  # the smoke run keeps to compare: four commands, each with a Ray start, fit its test's box
        grids[f"reproduce stable-bptt: N = 1, 2; flows {flows}; NONE, NORM; 2 seeds; {epochs} epoch(s) of 32 states"] = [
            "reproduce", "stable-bptt", "--poles", "1,2", "--flows", flows, "--clip", "NONE,NORM", "--seeds", "2",
            "--epochs", epochs, "--states", "32", "--physics", "equations", "--no-progress"]
    return grids


def timed(argv: list[str], scratch: Path, cache: str | None) -> tuple[float, str]:
    """Seconds of one command in a fresh process with the compilation cache `cache` (None: off), and its output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
    if cache is None:
        env["CHAOSGYM_COMPILATION_CACHE"] = "0"
    else:
        env["CHAOSGYM_CACHE_DIR"] = cache
    out = scratch / f"out{len(list(scratch.iterdir()))}"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "chaosgym.agents.cli", *argv, "--out", str(out)], cwd=scratch,
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny budgets, and one compilation cache for every command: a smoke run, not a measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "cache").mkdir()
        shared = str(scratch / "cache" / "shared")

        def fresh() -> str:
            return shared if args.quick else tempfile.mkdtemp(dir=scratch / "cache")

        print(f"`--workers 2` against the serial command on this machine ({os.cpu_count()} CPUs), one run each, "
              "each from an empty compilation cache; whole-command seconds (Ray's start, compiles, training, "
              "evaluations, figures)\n")
        print("| grid | serial (s) | --workers 2 (s) | speed-up |\n|---|---:|---:|---:|", flush=True)
        for name, argv in grids(args.quick).items():
            serial, _ = timed(argv, scratch, fresh())
            parallel, _ = timed([*argv, "--workers", "2"], scratch, fresh())
            print(f"| {name} | {serial:.0f} | {parallel:.0f} | {serial / parallel:.2f}x |", flush=True)
        steps = "256" if args.quick else "32768"
        count_grid = ["compare", "--tasks", "ChaosCartPole-v0", "--agents", "apg", "--seeds", "2", "--env-steps", steps,
                      *APG_SMALL, "--workers", "2"]
        print(f"\nThe workers' XLA compiles, apg x 2 seeds ({int(steps):,} env steps each) on 2 workers: the second "
              "seed waits while the first compiles, then loads or compiles again\n")
        print("| compilation cache | compiled cold | cold seconds | loaded from the cache | load seconds |\n"
              "|---|---:|---:|---:|---:|", flush=True)
        for label, cache in (("shared (one folder)", fresh()), ("none (cache off)", None)):
            _, log = timed(count_grid, scratch, cache)
            cold, cold_s, loaded, loaded_s = COMPILES.findall(log)[-1]
            print(f"| {label} | {cold} | {cold_s} | {loaded} | {loaded_s} |", flush=True)


if __name__ == "__main__":
    main()
