"""What the shared evaluation programs cost at run time: the batched evaluation as chaosgym runs it
(`chaosgym.evaluation.batched_evaluation`, stepped from Python through programs every policy shares)
against the same episodes as one jitted `rollout` scan, in one process, side by side in turns.

    python benchmarks/evaluation_cost.py [--tasks ChaosAnt-v0,ChaosCartPole-v0] [--agent apg] [--episodes 16]

Both give the same numbers bit for bit (tests/test_evaluation.py); the Python loop pays one
dispatch of the policy and one of the env per step, and compiles the env's programs once for every
policy instead of once per policy. Each is compiled and run once first; the table gives the best of
`--rounds` timed runs of each. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the scan the tests compare against


def measure(task: str, agent: str, episodes: int, rounds: int) -> dict:
    from test_evaluation import rollout_scores

    from chaosgym.agents import loop
    from chaosgym.agents.config import for_task
    from chaosgym.evaluation import batched_evaluation, held_out_keys
    from chaosgym.functional.compiling import jit

    config = for_task(task, agent, eval_episodes=episodes)
    core, env = loop.core_of(config), loop.make_env(config)
    params, _ = core.init(jax.random.key(2))
    keys = held_out_keys(config.eval_seed, episodes)
    ours = batched_evaluation(env, core.apply, core.name)
    scan = jit(rollout_scores, static_argnums=(0, 1))
    runs = {"loop": lambda: ours(params, keys), "scan": lambda: scan(env, core.apply, params, keys)}
    for run in runs.values():
        jax.block_until_ready(run())
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run())
            best[name] = min(best[name], time.perf_counter() - start)
    return {"task": task, "steps": env.episode_length, **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="ChaosAnt-v0,ChaosCartPole-v0", help="comma-separated task ids")
    parser.add_argument("--agent", default="apg", help="whose initial policy is evaluated")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per evaluation (training's default)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| task | steps per episode | episodes | chaosgym's loop (s) | one scan (s) | loop / scan |")
    print("|---|---:|---:|---:|---:|---:|")
    for task in args.tasks.split(","):
        row = measure(task, args.agent, args.episodes, args.rounds)
        print(f"| {row['task']} | {row['steps']} | {args.episodes} | {row['loop']:.3f} | {row['scan']:.3f} | "
              f"{row['loop'] / row['scan']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
