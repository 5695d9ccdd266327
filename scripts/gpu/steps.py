"""The measuring steps of scripts/gpu/run.sh (version 2), and its summary.

Each subcommand is one time-boxed step: run.sh runs it under `timeout`, so every step writes its
rows as it measures them (a step cut short keeps what it had) and says what it compiles before it
does, timing each compile apart from the measurement. The summary reports whatever is there.

    python scripts/gpu/steps.py throughput OUT/throughput.csv --cases ChaosAnt-v0:4096,ChaosCartPole-v0:16384
    python scripts/gpu/steps.py compile OUT/compile.csv --agents apg,shac,ahac,ppo
    python scripts/gpu/steps.py train WORK/brax-ppo --agent brax-ppo --env-steps 50000000
    python scripts/gpu/steps.py finish WORK OUT   # summary.md and the data files; checks the return limits

* throughput: env steps per second of `gymnasium.make_vec`, of `DeviceVectorEnv` (JAX arrays in and
  out) and of Brax's own Ant environment (brax 0.14.2, MJX pipeline, `envs.training.wrap`'s
  auto-reset) against a raw vmapped `mjx.step` loop, with the host time and XLA's bytes accessed
  per step beside (benchmarks/vector_overhead.py's measurement, the one its CPU table comes from);
* compile: every XLA program `chaosgym compare --tasks ChaosAnt-v0 --agents ...` compiles at the
  smallest budget, cold, with its seconds, written as XLA finishes each (benchmarks/compile_budget.py's);
* train: `chaosgym train` of one agent on the Ant, its metrics.csv rows as it evaluates.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

# What comes back from the GPU machine: at most this many files, each at most this large, from one
# folder. Everything run.sh writes lies directly in OUT.
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
COMPILED = re.compile(r"Finished XLA compilation of (?P<name>.+?) in (?P<seconds>[0-9.e+-]+) sec")

# The CPU figures beside which summary.md sets the GPU ones (docs/benchmarks.md, the project's 2-core CPU).
CPU = {"throughput": "docs/benchmarks.md: the vector env at 1.00x raw MJX at 256 envs on a 2-core CPU"}


class Rows:
    """A CSV written row by row and flushed, so a step killed by its box keeps every row it measured."""

    def __init__(self, path: Path, columns: list[str]):
        self.file = open(path, "w", newline="")
        self.writer = csv.DictWriter(self.file, columns)
        self.writer.writeheader()
        self.file.flush()

    def add(self, **row) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()
        print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def machine() -> str:
    import jax

    device = jax.devices()[0]
    return f"{jax.device_count()} x {getattr(device, 'device_kind', device.platform)}, jax {jax.__version__}"


# ---- (a) throughput ------------------------------------------------------------------------------

def brax_rate(num_envs: int, steps: int, rounds: int) -> tuple[float, float]:
    """(env steps/s, compile s) of Brax's own Ant (MJX pipeline) wrapped as Brax trains on it:
    `envs.training.wrap` (vmap, the episode's time limit, auto-reset), stepped by a jitted step
    under random actions already on the device, waiting only at a round's end."""
    import jax
    import numpy as np
    from brax import envs

    import chaosgym.brax  # noqa: F401  (restores what brax 0.14.2 needs of newer JAX)

    env = envs.training.wrap(envs.get_environment("ant", backend="mjx"), episode_length=1000)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    actions = [jax.device_put(a) for a in np.random.default_rng(0).uniform(-1, 1, (steps, num_envs, env.action_size))
               .astype(np.float32)]
    start = time.perf_counter()
    # Brax takes raw uint32 keys (jax.random.PRNGKey), one per env
    state = step(reset(jax.random.split(jax.random.PRNGKey(0), num_envs)), actions[0])
    # a reset's state and a step's differ in weak types: the second step compiles the program the loop runs
    state = jax.block_until_ready(step(state, actions[0]))
    compile_s = time.perf_counter() - start
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for action in actions:
            state = step(state, action)
        jax.block_until_ready(state)
        best = max(best, num_envs * steps / (time.perf_counter() - start))
    return best, compile_s


def throughput(args) -> None:
    from vector_overhead import measure

    rows = Rows(args.csv, ["task", "num_envs", "make_vec", "device_vector", "raw_mjx", "brax", "make_vec_ratio",
                           "device_ratio", "brax_ratio", "host_us", "raw_host_us", "bytes_ratio", "compile_s",
                           "brax_compile_s", "machine"])
    for case in args.cases.split(","):
        env_id, _, envs = case.partition(":")
        num_envs = int(envs)
        say(f"throughput: compiling {env_id} at {num_envs:,} envs (make_vec's reset and step, DeviceVectorEnv's, raw "
            f"mjx.step), then {args.rounds} timed rounds of {args.steps} steps each")
        start = time.perf_counter()
        r = measure(env_id, num_envs, args.steps, args.rounds)
        elapsed = time.perf_counter() - start
        rates = r["rates"]
        brax, brax_compile = (math.nan, math.nan)
        if env_id == "ChaosAnt-v0" and args.brax:
            say(f"throughput: compiling Brax's own Ant at {num_envs:,} envs")
            try:
                brax, brax_compile = brax_rate(num_envs, args.steps, args.rounds)
            except Exception as error:  # noqa: BLE001 (the peer row fails alone: the others stand)
                say(f"throughput: Brax's Ant failed: {type(error).__name__}: {error}")
        rows.add(task=env_id, num_envs=num_envs, make_vec=rates["vector"], device_vector=rates["device"],
                 raw_mjx=rates["raw"], brax=brax, make_vec_ratio=rates["vector"] / rates["raw"],
                 device_ratio=rates["device"] / rates["raw"], brax_ratio=brax / rates["raw"],
                 host_us=r["host"] * 1e6, raw_host_us=r["raw_host"] * 1e6, bytes_ratio=r["bytes"] / r["raw_bytes"],
                 compile_s=elapsed, brax_compile_s=brax_compile, machine=machine())


# ---- (b) the compile budget ------------------------------------------------------------------------

def compile_budget(args) -> None:
    """Every program the Ant comparison compiles, cold, as XLA finishes it (streamed from JAX's log)."""
    rows = Rows(args.csv, ["program", "seconds", "elapsed_s"])
    command = [sys.executable, "-m", "chaosgym.agents.cli", "compare", "--tasks", "ChaosAnt-v0", "--agents", args.agents,
               "--seeds", "1", "--env-steps", "1", "--eval-episodes", "2", "--out", str(args.work)]
    env = {**os.environ, "JAX_LOG_COMPILES": "1", "CHAOSGYM_TRACE_CACHE": "0", "TQDM_DISABLE": "1"}
    say(f"compile: {' '.join(command[3:])}, cold (every program it needs, then one update or step of each agent)")
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        match = COMPILED.search(line)
        if match:
            rows.add(program=match["name"], seconds=float(match["seconds"]), elapsed_s=time.perf_counter() - start)
        elif line.startswith(("compiling", "compiled", "training", "chaosgym")):
            say(line.rstrip())
    process.wait()


# ---- (c) training on the Ant ------------------------------------------------------------------------

def train(args) -> None:
    command = [sys.executable, "-m", "chaosgym.agents.cli", "train", "--task", "ChaosAnt-v0", "--agent", args.agent,
               "--env-steps", str(args.env_steps), "--out", str(args.out), "--no-progress", *args.more]
    say(f"train: {' '.join(command[3:])}")
    subprocess.run(command, check=False)


# ---- the summary ---------------------------------------------------------------------------------

def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(text, digits: int = 0) -> str:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"


def throughput_section(rows: list[dict]) -> list[str]:
    out = ["## (a) Throughput against a raw vmapped mjx.step, Brax's own Ant beside", ""]
    if not rows:
        return out + ["No row: the step was skipped or ran out of its box before its first case.", ""]
    out += ["| task | envs | make_vec steps/s | DeviceVectorEnv | Brax's Ant | raw mjx.step | make_vec / raw | "
            "DeviceVectorEnv / raw | Brax / raw | host µs/step, vector env / raw | bytes/step vs raw | compile s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        out.append(f"| {r['task']} | {int(r['num_envs']):,} | {number(r['make_vec'])} | {number(r['device_vector'])} | "
                   f"{number(r['brax'])} | {number(r['raw_mjx'])} | {number(r['make_vec_ratio'], 2)} | "
                   f"{number(r['device_ratio'], 2)} | {number(r['brax_ratio'], 2)} | {number(r['host_us'])} / "
                   f"{number(r['raw_host_us'])} | {number(r['bytes_ratio'], 2)} | {number(r['compile_s'])} + "
                   f"{number(r['brax_compile_s'])} |")
    return out + ["", f"Device: {rows[0]['machine']}. CPU: {CPU['throughput']}.", ""]


def compile_section(rows: list[dict]) -> list[str]:
    out = ["## (b) Compile budget of the Ant comparison (cold, every program)", ""]
    if not rows:
        return out + ["No program finished compiling within the step's box.", ""]
    total = sum(float(r["seconds"]) for r in rows)
    big = sorted(rows, key=lambda r: -float(r["seconds"]))
    out += [f"{len(rows)} programs, {total:.1f} s of XLA compiling in all; the largest:", "",
            "| program | compile (s) | finished at (s) |", "|---|---:|---:|"]
    out += [f"| `{r['program']}` | {number(r['seconds'], 1)} | {number(r['elapsed_s'], 0)} |" for r in big[:12]]
    return out + [""]


def train_section(folder: Path, title: str) -> list[str]:
    out = [f"## (c) {title}", ""]
    rows = [r for r in read_csv(folder / "metrics.csv") if r.get("eval_score") not in (None, "", "nan")]
    if not rows:
        return out + ["No evaluation written within the step's box.", ""]
    out += ["| env steps | training (s) | evaluation score |", "|---:|---:|---:|"]
    out += [f"| {number(r['env_steps'])} | {number(r['wall_time'], 1)} | {number(r['eval_score'], 1)} |" for r in rows]
    return out + [""]


def check_limits(out: Path) -> list[str]:
    """What would not come back from the GPU machine: too many files, too large, too deep."""
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = [f"{p.relative_to(out)}: not directly in OUT" for p in files if p.parent != out]
    problems += [f"{p.name}: {p.stat().st_size / 2**20:.1f} MiB > 16 MiB" for p in files
                 if p.stat().st_size > MAX_FILE_BYTES]
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files > {MAX_FILES}")
    return problems


def finish(args) -> int:
    work, out = args.work, args.out
    notes = (work / "notes.txt").read_text().strip().splitlines() if (work / "notes.txt").is_file() else []
    kind = "a DRY RUN on CPU with tiny sizes: none of these figures is a GPU figure" if args.dry_run else "one GPU run"
    text = [f"# chaosgym GPU figures (scripts/gpu/run.sh version 2) — {kind}", "",
            f"On {platform.node() or 'this host'}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M %Z')}.",
            "", "## How each step ended", ""] + [f"* {n}" for n in notes] + [""]
    text += throughput_section(read_csv(out / "throughput.csv"))
    text += compile_section(read_csv(out / "compile.csv"))
    text += train_section(work / "train", f"{args.train_agent} on ChaosAnt-v0")
    if (work / "train" / "metrics.csv").is_file():
        shutil.copy(work / "train" / "metrics.csv", out / "train_metrics.csv")
    for name in ("config.json",):
        if (work / "train" / name).is_file():
            shutil.copy(work / "train" / name, out / f"train_{name}")
    if (work / "logs").is_dir():
        with open(out / "logs.txt", "w") as f:
            for log in sorted((work / "logs").glob("*.log")):
                f.write(f"===== {log.name}\n{log.read_text()[-200_000:]}\n")
    (out / "summary.md").write_text("\n".join(text))
    problems = check_limits(out)
    for problem in problems:
        print(f"steps.py finish: would not come back: {problem}", file=sys.stderr)
    print("\n".join(f"{p.name}\t{p.stat().st_size:,} bytes" for p in sorted(out.iterdir())))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("throughput", help="make_vec, DeviceVectorEnv and Brax's Ant against raw vmapped mjx.step")
    p.add_argument("csv", type=Path)
    p.add_argument("--cases", default="ChaosAnt-v0:4096,ChaosAnt-v0:16384,ChaosCartPole-v0:16384",
                   help="TASK:ENVS, comma-separated")
    p.add_argument("--steps", type=int, default=101, help="vector steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per loop (the best is kept)")
    p.add_argument("--no-brax", dest="brax", action="store_false", help="without Brax's own Ant")
    p.set_defaults(fn=throughput)
    p = sub.add_parser("compile", help="the compile budget of the Ant comparison")
    p.add_argument("csv", type=Path)
    p.add_argument("--agents", default="apg,shac,ahac,ppo")
    p.add_argument("--work", type=Path, default=Path("compile-run"))
    p.set_defaults(fn=compile_budget)
    p = sub.add_parser("train", help="chaosgym train of one agent on the Ant")
    p.add_argument("out", type=Path)
    p.add_argument("--agent", default="brax-ppo")
    p.add_argument("--env-steps", type=int, default=50_000_000)
    p.set_defaults(fn=train)  # any other flags (after --) are chaosgym train's
    p = sub.add_parser("finish", help="summary.md and the data into OUT; check the return limits")
    p.add_argument("work", type=Path, help="run.sh's work folder (train/, logs/, notes.txt)")
    p.add_argument("out", type=Path)
    p.add_argument("--train-agent", default="brax-ppo")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(fn=finish)
    args, more = parser.parse_known_args(argv)
    if more and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(more)}")
    args.more = [word for word in more if word != "--"]
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
