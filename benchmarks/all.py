"""Every benchmark table in one run, written to docs/benchmarks.md under a description of the machine.

Runs each benchmark script in its own process (so none inherits another's compiled functions or
threads), in this order: throughput, gradient cost and memory, SB3 throughput, the two backends of
the single env, compile times, time to first output, the Stable-BPTT update's cost. A script that fails is reported in the file with the end of its
error output, and the run goes on; the exit status is then 1.

    python benchmarks/all.py            # the full tables: tens of minutes on a 2-core CPU
    python benchmarks/all.py --quick    # every script's smoke run: a few minutes
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (title, script, its arguments in the full run, its arguments in the smoke run)
SCRIPTS = [
    ("Env throughput", "throughput.py", [], ["--quick"]),
    ("Gradient cost and memory", "gradient_cost.py", [], ["--quick"]),
    ("SB3 PPO throughput", "sb3_throughput.py", [], ["--env-steps", "256", "--num-envs", "2"]),
    ("Backends of the single env: divergence and speed", "backends.py", [], ["--quick"]),
    ("Compile time, cold and warm", "compile_time.py", [], ["--quick"]),
    ("Time to first output", "first_output.py", ["--startup"], ["--startup", "--repeats", "1"]),
    ("Stable-BPTT update: cost against a plain-JAX reference", "stable_bptt_cost.py", [],
     ["--poles", "1", "--rounds", "1", "--calls", "1", "--horizon", "10", "--no-grid", "--physics", "equations"]),
]


def _first_line(path: str, prefix: str) -> str:
    try:
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(prefix)), "unknown")
    except OSError:
        return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def machine() -> list[str]:
    """Markdown lines describing the machine and the software versions."""
    import jax

    memory = _first_line("/proc/meminfo", "MemTotal")
    versions = ", ".join(f"{name} {_version(name)}" for name in
                         ("jax", "jaxlib", "mujoco", "gymnasium", "stable_baselines3", "torch"))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return [
        f"* CPU: {_first_line('/proc/cpuinfo', 'model name')}, {os.cpu_count()} cores "
        f"({usable} of them given to this run); memory {memory}",
        f"* JAX devices: {', '.join(str(d) for d in jax.devices())}",
        f"* Python {platform.python_version()}; {versions}",
        f"* chaosgym commit {commit or 'unknown'}; load average at the start "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min)",
    ]


def run(script: str, arguments: list[str]) -> tuple[str, float, bool]:
    """(stdout, seconds, ok) of one benchmark script in a fresh process."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *arguments]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return f"{done.stdout}\n**Failed** (exit status {done.returncode}):\n\n```\n{tail}\n```\n", elapsed, False
    return done.stdout, elapsed, True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each script's smoke run (tiny sizes, not for quoting)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="markdown file to write")
    names = [script for _, script, _, _ in SCRIPTS]
    parser.add_argument("--scripts", default=",".join(names), help="comma-separated scripts to run (default: all)")
    args = parser.parse_args()
    chosen = args.scripts.split(",")
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"--scripts: unknown {', '.join(unknown)}; valid: {', '.join(names)}")

    mode = "quick smoke run (`--quick`): small sizes, not for quoting" if args.quick else "full run"
    lines = ["# chaosgym benchmarks\n", f"{datetime.date.today().isoformat()}, {mode}, "
             f"`python benchmarks/all.py{' --quick' if args.quick else ''}`.\n", *machine(), ""]
    print("\n".join(lines), flush=True)
    ok = True
    for title, script, full, smoke in (item for item in SCRIPTS if item[1] in chosen):
        arguments = smoke if args.quick else full
        if not (ROOT / "benchmarks" / script).exists():
            section = f"## {title}\n\n`benchmarks/{script}` is missing.\n"
            ok = False
        else:
            output, elapsed, succeeded = run(script, arguments)
            ok &= succeeded
            shown = " ".join(["python", f"benchmarks/{script}", *arguments])
            section = f"## {title}\n\n`{shown}` ({elapsed:.0f} s)\n\n{output.strip()}\n"
        print(section, flush=True)
        lines.append(section)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"written to {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
