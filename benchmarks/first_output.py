"""How long a new user waits in silence: seconds from starting a command to its first output line,
and to each later line, with cold caches (a fresh CHAOSGYM_CACHE_DIR).

    python benchmarks/first_output.py                       # chaosgym train on the Ant, cold
    python benchmarks/first_output.py --warm -- chaosgym train --task ChaosCartPole-v0 --updates 5 --out /tmp/x

Prints every line the command writes (stdout and stderr, progress bars split at carriage returns)
with the second it appeared, then the longest silence.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = ["chaosgym", "train", "--task", "ChaosAnt-v0", "--agent", "full", "--updates", "3", "--batch-size", "2",
           "--horizon", "20", "--eval-every", "3", "--eval-episodes", "2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", action="store_true", help="keep the user's caches (default: a fresh cache folder)")
    parser.add_argument("command", nargs="*", help="the command (default: a 3-update Ant training run)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="first-output-"))
    command = args.command or [*DEFAULT, "--out", str(work / "run")]
    if command[0] == "chaosgym":  # the console script of the Python running this
        command = [str(Path(sys.executable).with_name("chaosgym")), *command[1:]]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not args.warm:
        env["CHAOSGYM_CACHE_DIR"] = str(work / "cache")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    times, line = [], b""
    while chunk := process.stdout.read1(4096):
        for byte in chunk:
            if byte in b"\r\n":
                if line.strip():
                    times.append((time.perf_counter() - start, line.decode(errors="replace").strip()))
                    print(f"{times[-1][0]:7.1f} s  {times[-1][1][:110]}", flush=True)
                line = b""
            else:
                line += bytes([byte])
    process.wait()
    end = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    marks = [0.0, *(t for t, _ in times), end]
    gaps = [(b - a, a) for a, b in zip(marks, marks[1:])]
    longest, at = max(gaps)
    first = times[0][0] if times else end
    print(f"\nexit {process.returncode} after {end:.1f} s; first output after {first:.1f} s; "
          f"longest silence {longest:.1f} s (from {at:.1f} s)")


if __name__ == "__main__":
    main()
