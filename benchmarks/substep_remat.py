"""What rematerialising each physics substep does to a carried agent's training update: its HLO
instructions, its cold compile seconds and its run time, with (`Env.physics_step` as chaosgym runs
it) and without (plain substeps, as before 2026-12-05).

    python benchmarks/substep_remat.py [--task ChaosAnt-v0] [--agents apg,shac,ahac] [--rounds 3]
    python benchmarks/substep_remat.py --task ChaosCartPole-v0 --frame-skip 3 --agents apg   # a smoke run

Every measurement runs in a fresh process with an empty compilation cache, so each compile is cold;
the variants alternate (remat, plain, remat, ...) so that a load beside them falls on both. The
update is the agent's own (`make_update`), jitted as chaosgym jits it, on the agent's settings for
the task, from one init; its run time is the median of 3 calls after the first. The variants do
not agree bit for bit in float32: the forward pass of a differentiated program is compiled with
its linearisation in one case and alone in the other, and the Ant's trajectories, being chaotic,
carry the last bits' differences into the observation statistics and the update (in float64 the
gradients agree to rounding: tests/test_env.py). Prints a markdown table and writes it as CSV with
`--csv`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("remat", "plain")


def child(task: str, agent: str, variant: str, frame_skip: int | None) -> None:
    """One cold measurement, in this process (run by `measure`)."""
    import importlib
    import re
    import time

    import jax

    from chaosgym import Env
    from chaosgym.agents.carried import reset_batch
    from chaosgym.agents.config import for_task
    from chaosgym.functional.compiling import jit
    from chaosgym.functional.env import run_substeps
    from chaosgym.registry import make_task

    config = for_task(task, agent)
    settings = config.settings
    task_ = make_task(task, **config.task_kwargs)
    if frame_skip is not None:
        task_.frame_skip = frame_skip
    env = Env(task_)
    if variant == "plain":
        env.physics_step = lambda data, action: run_substeps(env.task, env.model, data.replace(ctrl=action),
                                                             env.frame_skip, remat=False)
    carried = importlib.import_module(config.spec.module).carried(settings)
    key = jax.random.key(0)
    state = carried.init(env, settings, key)
    fresh = reset_batch(env, jax.random.key(1), settings.num_envs)
    lowered = jit(carried.make_update(env, settings)).lower(state, key, fresh)
    text = lowered.compiler_ir("hlo").as_hlo_text()
    instructions = sum(1 for line in text.splitlines() if re.match(r"^\s+(ROOT\s+)?%?[\w.-]+ = ", line))
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(state, key, fresh))
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, key, fresh))
        runs.append(time.perf_counter() - start)
    print(json.dumps({"instructions": instructions, "compile_s": compile_s, "run_s": statistics.median(runs),
                      "frame_skip": env.frame_skip}))


def measure(task: str, agent: str, variant: str, frame_skip: int | None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "CHAOSGYM_CACHE_DIR": str(Path(scratch) / "cache"), "CHAOSGYM_TRACE_CACHE": "0"}
        command = [sys.executable, __file__, "--child", task, agent, variant, str(frame_skip or 0)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{agent} ({variant}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        task, agent, variant, frame_skip = sys.argv[2:6]
        child(task, agent, variant, int(frame_skip) or None)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="ChaosAnt-v0")
    parser.add_argument("--agents", default="apg,shac,ahac", help="carried agents, comma-separated")
    parser.add_argument("--frame-skip", type=int, default=None, help="substeps per control step (default: the task's)")
    parser.add_argument("--rounds", type=int, default=1, help="cold runs of each variant (medians are reported)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    rows = []
    for agent in args.agents.split(","):
        got = {v: [] for v in VARIANTS}
        for round_ in range(args.rounds):
            for variant in VARIANTS:
                got[variant].append(measure(args.task, agent, variant, args.frame_skip))
                print(f"{agent} {variant} round {round_ + 1}: {got[variant][-1]}", file=sys.stderr, flush=True)
        median = {v: {k: statistics.median(r[k] for r in got[v]) for k in ("instructions", "compile_s", "run_s")}
                  for v in VARIANTS}
        rows.append({"task": args.task, "agent": agent, "frame_skip": got["remat"][0]["frame_skip"],
                     **{f"{k}_{v}": round(median[v][k], 4) for v in VARIANTS for k in median[v]},
                     "compile_ratio": round(median["remat"]["compile_s"] / median["plain"]["compile_s"], 3),
                     "run_ratio": round(median["remat"]["run_s"] / median["plain"]["run_s"], 3)})
    print(f"\n{args.task}, {args.rounds} cold round(s) per variant; remat / plain\n")
    print("| agent | substeps | HLO instructions | compile (s) | update run (s) | compile ratio | run ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['agent']} | {r['frame_skip']} | {r['instructions_remat']:,.0f} / {r['instructions_plain']:,.0f} | "
              f"{r['compile_s_remat']:.1f} / {r['compile_s_plain']:.1f} | {r['run_s_remat']:.3f} / {r['run_s_plain']:.3f} | "
              f"{r['compile_ratio']:.2f} | {r['run_ratio']:.2f} |")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
