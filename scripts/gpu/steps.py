"""The measuring steps of scripts/gpu/run.sh, and its summary.

Each subcommand is one time-boxed step: run.sh runs it under `timeout`, so every step writes its
rows as it measures them (a step cut short keeps what it had) and the summary reports whatever is
there. The measurements reuse the benchmark scripts' own loops (benchmarks/throughput.py,
gradient_cost.py, compile_time.py), so a GPU figure and its CPU figure in the README are the same
measurement.

    python scripts/gpu/steps.py throughput OUT/throughput.csv --tasks ChaosAnt-v0,ChaosCartPole-v0 --batches 1024,4096
    python scripts/gpu/steps.py gradient OUT/gradient.csv --tasks ChaosAnt-v0 --batch 256 --horizon 100
    python scripts/gpu/steps.py compile OUT/compile.csv --tasks ChaosAnt-v0 --horizon 100
    python scripts/gpu/steps.py finish WORK OUT   # summary.md, the figures, runs.tar.gz; checks the limits
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import platform
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

# What comes back from the GPU machine: at most this many files, each at most this large, from one
# folder. Everything run.sh writes lies directly in OUT.
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
# The tarball of the run folders is built again without checkpoints when it would exceed this.
TAR_BYTES = 15 * 2**20

# The CPU figures beside which summary.md sets the GPU ones: README.md ("Speed, start-up and
# devices", "Reproducing Schnell & Thuerey", the Ant comparison) and docs/benchmarks.md, measured on
# the project's 2-core CPU with jax 0.10.2. Keep them in step with the README when it is rerun.
CPU = {
    "make_vec": "11,410 at 64 envs, 14,055 at 256",
    "raw": "13,669 at 64 envs, 14,070 at 256",
    "ratio": "0.83 at 64 envs, 1.00 at 256",
    "gradient_ratio": {"ChaosAnt-v0": "6.38 (bare MJX 6.71), batch 16",
                       "ChaosCartPole-v0": "13.35 (bare MJX 11.34), batch 16",
                       "ChaosCartPole-v0 num_poles=3": "8.44 (bare MJX 7.29), batch 16"},
    "gradient_ms": {"ChaosAnt-v0": "forward 175.0, gradient 1115.6, batch 16",
                    "ChaosCartPole-v0": "forward 2.6, gradient 34.2, batch 16",
                    "ChaosCartPole-v0 num_poles=3": "forward 5.1, gradient 43.1, batch 16"},
    "compile": {"ChaosAnt-v0": ("8.81", "0.38", "63.17", "2.90"),
                "ChaosCartPole-v0": ("2.35", "0.14", "19.49", "0.76")},
    "grid_ms": {"R": "88 ms alone; 333 ms for 9 vmapped (37 per run)",
                "C": "181 ms alone; 711 ms for 9 vmapped (79 per run)"},
    "ant": {"apg": ("179.2 ± 106.3", "244,480"), "shac": ("130.8 ± 23.1", "221,696"),
            "ppo": ("56.0 ± 16.4", "389,616")},
}


def parse_task(spec: str) -> tuple[str, dict]:
    """`ChaosCartPole-v0:num_poles=3` -> ("ChaosCartPole-v0", {"num_poles": 3})."""
    from chaosgym.registry import parse_task_kwargs

    env_id, _, options = spec.partition(":")
    return env_id, parse_task_kwargs(options)


def task_name(env_id: str, options: dict) -> str:
    return env_id + "".join(f" {k}={v}" for k, v in options.items())


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


def machine() -> str:
    import jax

    device = jax.devices()[0]
    return f"{jax.device_count()} x {getattr(device, 'device_kind', device.platform)}, jax {jax.__version__}"


def throughput(args) -> None:
    """make_vec against a raw vmapped mjx.step at each batch size (benchmarks/throughput.py's loops);
    `first_call_s` is the first round, compilation included."""
    import gymnasium

    import chaosgym  # noqa: F401  (registers the ids)
    from throughput import best_rates, raw_mjx_loop, vector_env_loop

    rows = Rows(args.csv, ["task", "num_envs", "make_vec_steps_per_s", "raw_mjx_steps_per_s", "ratio",
                           "make_vec_first_call_s", "raw_first_call_s", "machine"])
    for spec in args.tasks.split(","):
        env_id, options = parse_task(spec)
        for num_envs in args.batches:
            vector = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                                        **options)
            loops = {"vector": vector_env_loop(vector, args.iterations),
                     "raw": raw_mjx_loop(vector.unwrapped.env, num_envs, args.iterations)}
            first = {}
            for name, run in loops.items():
                start = time.perf_counter()
                run()
                first[name] = time.perf_counter() - start
            rates = best_rates(loops, args.rounds)
            rows.add(task=task_name(env_id, options), num_envs=num_envs, make_vec_steps_per_s=rates["vector"],
                     raw_mjx_steps_per_s=rates["raw"], ratio=rates["vector"] / rates["raw"],
                     make_vec_first_call_s=first["vector"], raw_first_call_s=first["raw"], machine=machine())
            vector.close()


def gradient(args) -> None:
    """Forward and gradient time of a `horizon`-step rollout and their ratio, with the bare-MJX ratio
    (benchmarks/gradient_cost.py's functions); `compile_*_s` is XLA's compile time in this process."""
    import jax

    from chaosgym.functional.policies import mlp_policy
    from chaosgym.functional.rollout import rollout
    from gradient_cost import median_time, raw_mjx_ratio, setup

    rows = Rows(args.csv, ["task", "batch", "horizon", "forward_ms", "gradient_ms", "ratio", "bare_mjx_ratio",
                           "compile_forward_s", "compile_gradient_s", "machine"])
    for spec in args.tasks.split(","):
        env_id, options = parse_task(spec)
        env, params, states = setup(env_id, options, args.batch)

        def loss(p, s):
            return rollout(env, mlp_policy, p, s, args.horizon)[0]

        timings = {}
        for name, fn in (("forward", loss), ("gradient", jax.value_and_grad(loss))):
            start = time.perf_counter()
            compiled = jax.jit(fn).lower(params, states).compile()
            timings[f"compile_{name}_s"] = time.perf_counter() - start
            timings[name] = median_time(compiled, params, states, repeats=args.repeats)
        bare = raw_mjx_ratio(env, states, args.horizon, args.repeats) if args.bare else math.nan
        rows.add(task=task_name(env_id, options), batch=args.batch, horizon=args.horizon,
                 forward_ms=timings["forward"] * 1e3, gradient_ms=timings["gradient"] * 1e3,
                 ratio=timings["gradient"] / timings["forward"], bare_mjx_ratio=bare,
                 compile_forward_s=timings["compile_forward_s"], compile_gradient_s=timings["compile_gradient_s"],
                 machine=machine())


def compile_times(args) -> None:
    """Cold and warm compile times of one env step and of a `horizon`-step training update, each in a
    fresh process (benchmarks/compile_time.py's worker; chaosgym's default caches)."""
    from compile_time import in_fresh_process

    rows = Rows(args.csv, ["task", "horizon", "step_cold_s", "step_warm_s", "update_cold_s", "update_warm_s"])
    for spec in args.tasks.split(","):
        env_id, options = parse_task(spec)
        with tempfile.TemporaryDirectory(prefix="chaosgym-cache-") as cache_dir:
            cold, warm = (in_fresh_process(env_id, options, args.horizon, cache_dir, trace_cache=True)
                          for _ in ("cold", "warm"))
        rows.add(task=task_name(env_id, options), horizon=args.horizon, step_cold_s=cold["step"],
                 step_warm_s=warm["step"], update_cold_s=cold["gradient"], update_warm_s=warm["gradient"])


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
    out = ["## (a) Throughput: make_vec against raw vmapped mjx.step", ""]
    if not rows:
        return out + ["No row: the step was skipped or ran out of its box before its first batch size.", ""]
    out += ["| task | envs | make_vec steps/s | raw mjx.step steps/s | make_vec / raw | first call (s), "
            "make_vec / raw | CPU (README), make_vec / raw / ratio |", "|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        cpu = (f"{CPU['make_vec']} / {CPU['raw']} / {CPU['ratio']}" if r["task"] == "ChaosAnt-v0"
               else "not measured")
        out.append(f"| {r['task']} | {int(r['num_envs']):,} | {number(r['make_vec_steps_per_s'])} | "
                   f"{number(r['raw_mjx_steps_per_s'])} | {number(r['ratio'], 2)} | "
                   f"{number(r['make_vec_first_call_s'], 1)} / {number(r['raw_first_call_s'], 1)} | {cpu} |")
    return out + ["", f"Device: {rows[0]['machine']}.", ""]


def gradient_section(rows: list[dict]) -> list[str]:
    out = ["## (a) Gradient through the simulator against the forward pass", ""]
    if not rows:
        return out + ["No row: the step was skipped or ran out of its box before its first task.", ""]
    out += ["| task | batch | horizon | forward (ms) | gradient (ms) | gradient / forward | bare MJX ratio | "
            "compile forward / gradient (s) | CPU (docs/benchmarks.md): ms | CPU ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        out.append(f"| {r['task']} | {r['batch']} | {r['horizon']} | {number(r['forward_ms'], 1)} | "
                   f"{number(r['gradient_ms'], 1)} | {number(r['ratio'], 2)} | {number(r['bare_mjx_ratio'], 2)} | "
                   f"{number(r['compile_forward_s'], 1)} / {number(r['compile_gradient_s'], 1)} | "
                   f"{CPU['gradient_ms'].get(r['task'], '—')} | {CPU['gradient_ratio'].get(r['task'], '—')} |")
    return out + [""]


def compile_section(rows: list[dict]) -> list[str]:
    out = ["## (a) Compile times, cold and warm (fresh process each; chaosgym's caches)", ""]
    if not rows:
        return out + ["No row: the step was skipped or ran out of its box before its first task.", ""]
    out += ["| task | step cold / warm (s) | update cold / warm (s) | update horizon | "
            "CPU step cold / warm | CPU 100-step update cold / warm |", "|---|---|---|---:|---|---|"]
    for r in rows:
        cpu = CPU["compile"].get(r["task"], ("—",) * 4)
        out.append(f"| {r['task']} | {number(r['step_cold_s'], 2)} / {number(r['step_warm_s'], 2)} | "
                   f"{number(r['update_cold_s'], 2)} / {number(r['update_warm_s'], 2)} | {r['horizon']} | "
                   f"{cpu[0]} / {cpu[1]} | {cpu[2]} / {cpu[3]} |")
    return out + [""]


def grid_section(grid: Path, updates_per_epoch: int) -> list[str]:
    """ms per update of each vmapped program, from the rows reproduce's report wrote. The runs of
    one program share its clock, so flows whose last epoch and wall time agree are one program."""
    out = ["## (b) Stable-BPTT grid, N = 3 (flows x clipping x seeds)", ""]
    rows = read_csv(grid / "results.csv")
    if not rows:
        return out + ["No epoch finished: the step was skipped or ran out of its box while compiling.", ""]
    programs: dict[tuple[int, float], list[str]] = {}
    for flow in sorted({r["flow"] for r in rows}, key="RMSC".find):
        mine = [r for r in rows if r["flow"] == flow]
        epochs = max(int(r["epoch"]) for r in mine)
        wall = max(float(r["wall_time"]) for r in mine if int(r["epoch"]) == epochs)
        programs.setdefault((epochs, wall), []).append(flow)
    out += ["| flows | runs | epochs | updates | ms per update of the program | ms per run | CPU (README), "
            "3 poles, batch 8 |", "|---|---:|---:|---:|---:|---:|---|"]
    for (epochs, wall), flows in programs.items():
        runs = sum(1 for r in rows if r["flow"] in flows and int(r["epoch"]) == epochs)
        ms = wall / (epochs * updates_per_epoch) * 1e3
        cpu = "; ".join(f"{f}: {CPU['grid_ms'][f]}" for f in flows if f in CPU["grid_ms"]) or "—"
        out.append(f"| {','.join(flows)} | {runs} | {epochs} | {epochs * updates_per_epoch:,} | {ms:.1f} | "
                   f"{ms / runs:.2f} | {cpu} |")
    results = grid / "results.md"
    if results.is_file():
        out += ["", "reproduce's own table (`results.md`):", "", results.read_text().strip()]
    return out + [""]


def compare_section(compare: Path) -> list[str]:
    out = ["## (c) Comparison (`chaosgym compare`)", ""]
    summary = compare / "summary.md"
    if summary.is_file():
        text = summary.read_text().strip()
        out += ["##" + text if text.startswith("# ") else text, ""]  # its title below this section's
        if "ChaosAnt-v0" in text:
            out += ["CPU (README, the Ant, 240 s of training per run, 16 envs): final score / env steps run: "
                    + "; ".join(f"{agent} {score} / {steps}" for agent, (score, steps) in CPU["ant"].items()), ""]
        return out
    runs = sorted((compare / "runs").glob("*")) if (compare / "runs").is_dir() else []
    if not runs:
        return out + ["No run started: the step was skipped or ran out of its box while compiling.", ""]
    # compare writes its summary after the last run: what the runs' own evaluations say so far
    out += ["compare ran out of its box before its summary; the last training-time evaluation of each run:", "",
            "| run | env steps | training (s) | evaluation score |", "|---|---:|---:|---:|"]
    for folder in runs:
        evaluated = [r for r in read_csv(folder / "metrics.csv") if r.get("eval_score") not in (None, "", "nan")]
        if evaluated:
            last = evaluated[-1]
            out.append(f"| {folder.name} | {number(last['env_steps'])} | {number(last['wall_time'], 1)} | "
                       f"{number(last['eval_score'], 1)} |")
        else:
            out.append(f"| {folder.name} | — | — | no evaluation yet |")
    return out + [""]


def pack(work: Path, target: Path) -> str:
    """The run folders, logs and notes as one tar.gz; without checkpoints if it would not come back."""
    members = [p for p in ("grid", "compare", "logs", "notes.txt") if (work / p).exists()]

    def build(skip_checkpoints: bool) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name in members:
                tar.add(work / name, arcname=name,
                        filter=lambda info: None if skip_checkpoints and "checkpoint" in info.name else info)
        return buffer.getvalue()

    data = build(False)
    note = "with checkpoints"
    if len(data) > TAR_BYTES:
        data, note = build(True), "without checkpoints (with them it would exceed the size limit)"
    target.write_bytes(data)
    return f"runs.tar.gz ({len(data) / 2**20:.1f} MiB, {note}): {', '.join(members)}"


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
    import shutil

    work, out = args.work, args.out
    notes = (work / "notes.txt").read_text().strip().splitlines() if (work / "notes.txt").is_file() else []
    for figure in [work / "grid" / "stable_bptt.png", *sorted((work / "compare").glob("curves_*.png"))]:
        if figure.is_file():
            shutil.copy(figure, out / figure.name)
    kind = ("a DRY RUN on CPU with tiny sizes: none of these figures is a GPU figure" if args.dry_run
            else "one GPU run")
    text = [f"# chaosgym GPU figures — {kind}", "",
            f"scripts/gpu/run.sh{' --dry-run' if args.dry_run else ''} on {platform.node() or 'this host'}, "
            f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M %Z')}. Every CPU figure is the README's "
            "(2-core CPU, jax 0.10.2).", "", "## How each step ended", ""] + [f"* {n}" for n in notes] + [""]
    text += throughput_section(read_csv(out / "throughput.csv"))
    text += gradient_section(read_csv(out / "gradient.csv"))
    text += compile_section(read_csv(out / "compile.csv"))
    text += grid_section(work / "grid", args.updates_per_epoch)
    text += compare_section(work / "compare")
    packed = pack(work, out / "runs.tar.gz")
    text += ["## Files", "", f"* {packed}",
             "* throughput.csv, gradient.csv, compile.csv: the rows of step (a); the figures beside them", ""]
    (out / "summary.md").write_text("\n".join(text))
    problems = check_limits(out)
    for problem in problems:
        print(f"steps.py finish: would not come back: {problem}", file=sys.stderr)
    print("\n".join(f"{p.name}\t{p.stat().st_size:,} bytes" for p in sorted(out.iterdir())))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("throughput", help="make_vec against raw vmapped mjx.step")
    p.add_argument("csv", type=Path)
    p.add_argument("--tasks", default="ChaosAnt-v0,ChaosCartPole-v0")
    p.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1024, 4096, 16384])
    p.add_argument("--iterations", type=int, default=20, help="vector steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per loop (the best is kept)")
    p.set_defaults(fn=throughput)
    p = sub.add_parser("gradient", help="gradient time against forward time")
    p.add_argument("csv", type=Path)
    p.add_argument("--tasks", default="ChaosAnt-v0")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-bare", dest="bare", action="store_false", help="skip the bare-MJX ratio (two compiles)")
    p.set_defaults(fn=gradient)
    p = sub.add_parser("compile", help="cold and warm compile times in fresh processes")
    p.add_argument("csv", type=Path)
    p.add_argument("--tasks", default="ChaosAnt-v0,ChaosCartPole-v0")
    p.add_argument("--horizon", type=int, default=100)
    p.set_defaults(fn=compile_times)
    p = sub.add_parser("finish", help="summary.md, figures and runs.tar.gz into OUT; check the return limits")
    p.add_argument("work", type=Path, help="run.sh's work folder (grid/, compare/, logs/, notes.txt)")
    p.add_argument("out", type=Path)
    p.add_argument("--updates-per-epoch", type=int, default=32)
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(fn=finish)
    args = parser.parse_args(argv)
    if any(b <= 0 for b in getattr(args, "batches", [1])):
        parser.error(f"--batches must be positive integers, got {args.batches}")
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
