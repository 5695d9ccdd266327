"""How long a new user waits in silence: seconds from starting a command to its first output line,
and to each later line, with cold caches (a fresh CHAOSGYM_CACHE_DIR).

    python benchmarks/first_output.py                       # chaosgym train on the Ant, cold
    python benchmarks/first_output.py --warm -- chaosgym train --task ChaosCartPole-v0 --updates 5 --out /tmp/x
    python benchmarks/first_output.py --startup             # issue 22's bars, as a table

Prints every line the command writes (stdout and stderr, progress bars split at carriage returns)
with the second it appeared, then the longest silence. `--startup` instead times the first output
of `chaosgym --help`, `chaosgym train --help`, an argument error and `gymnasium.make` + `reset` of
a task on the default C backend, cold (a fresh cache folder) and warm (the same folder again), each
the median of `--repeats` fresh processes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the first output of `gymnasium.make` + reset: a fresh process that prints once both are done
MAKE = ("import chaosgym, gymnasium; env = gymnasium.make('ChaosCartPole-v0'); env.reset(seed=0); "
        "print(env.spec.id, 'reset')")
DEFAULT = ["chaosgym", "train", "--task", "ChaosAnt-v0", "--agent", "full", "--updates", "3", "--batch-size", "2",
           "--horizon", "20", "--eval-every", "3", "--eval-episodes", "2"]


def timed_lines(command: list[str], env: dict, echo: bool) -> tuple[list[tuple[float, str]], float, int]:
    """(second and text of each output line, seconds to exit, exit status) of `command`."""
    if command[0] == "chaosgym":  # the console script of the Python running this
        command = [str(Path(sys.executable).with_name("chaosgym")), *command[1:]]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    times, line = [], b""
    while chunk := process.stdout.read1(4096):
        for byte in chunk:
            if byte in b"\r\n":
                if line.strip():
                    times.append((time.perf_counter() - start, line.decode(errors="replace").strip()))
                    if echo:
                        print(f"{times[-1][0]:7.1f} s  {times[-1][1][:110]}", flush=True)
                line = b""
            else:
                line += bytes([byte])
    process.wait()
    return times, time.perf_counter() - start, process.returncode


def startup_table(repeats: int, work: Path) -> str:
    """Issue 22's bars: the median first output of each case over `repeats` fresh processes."""
    # a folder given to JAX would be used instead of the fresh one (chaosgym leaves it alone)
    env = {key: value for key, value in os.environ.items() if key != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONUNBUFFERED"] = "1"
    # (label, command, its exit status, cache folder: None the user's, "fresh" a new one per run,
    # "kept" one filled by a run first)
    cases = [("`chaosgym --help`", ["chaosgym", "--help"], 0, None),
             ("`chaosgym train --help`", ["chaosgym", "train", "--help"], 0, None),
             ("an argument error (`train --task Nope`)",
              ["chaosgym", "train", "--task", "Nope", "--agent", "full", "--out", str(work / "run")], 2, None),
             ("`gymnasium.make` + reset, cold", [sys.executable, "-c", MAKE], 0, "fresh"),
             ("`gymnasium.make` + reset, warm", [sys.executable, "-c", MAKE], 0, "kept")]
    rows = ["| first output of | median (s) | slowest (s) | runs |", "|---|---|---|---|"]
    for label, command, status, cache in cases:
        firsts = []
        for repeat in range(repeats):
            # cold: a cache folder of its own per run; warm: one folder, filled by a run first
            folder = work / (f"cold{repeat}" if cache == "fresh" else "warm")
            if cache == "kept" and repeat == 0:
                timed_lines(command, {**env, "CHAOSGYM_CACHE_DIR": str(folder)}, echo=False)
            run_env = {**env, "CHAOSGYM_CACHE_DIR": str(folder)} if cache else env
            times, end, returncode = timed_lines(command, run_env, echo=False)
            if returncode != status:
                last = times[-1][1] if times else "no output"
                raise SystemExit(f"{' '.join(command)} exited with {returncode}, not {status}: {last}")
            firsts.append(times[0][0] if times else end)
        rows.append(f"| {label} | {statistics.median(firsts):.2f} | {max(firsts):.2f} | {repeats} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", action="store_true", help="keep the user's caches (default: a fresh cache folder)")
    parser.add_argument("--startup", action="store_true",
                        help="time the first output of --help, an argument error and gymnasium.make instead")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per case of --startup")
    parser.add_argument("command", nargs="*", help="the command (default: a 3-update Ant training run)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.startup and args.command:
        parser.error("--startup times its own commands; give no command with it")
    work = Path(tempfile.mkdtemp(prefix="first-output-"))
    if args.startup:
        try:
            print(startup_table(args.repeats, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    command = args.command or [*DEFAULT, "--out", str(work / "run")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not args.warm:
        env["CHAOSGYM_CACHE_DIR"] = str(work / "cache")
    times, end, returncode = timed_lines(command, env, echo=True)
    shutil.rmtree(work, ignore_errors=True)
    marks = [0.0, *(t for t, _ in times), end]
    gaps = [(b - a, a) for a, b in zip(marks, marks[1:])]
    longest, at = max(gaps)
    first = times[0][0] if times else end
    print(f"\nexit {returncode} after {end:.1f} s; first output after {first:.1f} s; "
          f"longest silence {longest:.1f} s (from {at:.1f} s)")


if __name__ == "__main__":
    main()
