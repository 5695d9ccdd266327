"""PPO on the Ant through the quickstart's route, with torch's default thread count against one thread.

The SB3 snippet of docs/quickstart.md sets `torch.set_num_threads(1)`: SB3's small networks gain nothing from
more threads, and torch's thread pool then fights JAX's for the same cores. This measures what that
line is worth: `learn()` seconds (the env's compile done beforehand, outside the clock) for PPO on
`ChaosAnt-v0` with 8 envs, each setting in a fresh process, alternating, and prints a table.

    python benchmarks/sb3_threads.py                 # 20,000 env steps, 3 runs per setting
    python benchmarks/sb3_threads.py --steps 4096 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def one_run(threads: int | None, steps: int) -> dict:
    import numpy as np
    import torch
    from stable_baselines3 import PPO

    from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv

    if threads is not None:
        torch.set_num_threads(threads)
    venv = ChaosSB3VecEnv("ChaosAnt-v0", num_envs=8)
    venv.reset()
    venv.step(np.zeros((8, *venv.action_space.shape), np.float32))  # compile outside the clock
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=128, seed=0, device="cpu")
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return {"threads": torch.get_num_threads(), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000, help="env steps of each learn() call")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (alternating)")
    parser.add_argument("--one", choices=["default", "1"], help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(None if args.one == "default" else 1, args.steps)))
        return
    seconds = {"default": [], "1": []}
    threads = {}
    for _ in range(args.repeats):
        for setting in seconds:
            out = subprocess.run([sys.executable, __file__, "--one", setting, "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            seconds[setting].append(result["seconds"])
            threads[setting] = result["threads"]
    print(f"PPO on ChaosAnt-v0, 8 envs, n_steps 64, batch 128, {args.steps:,} env steps; learn() seconds, "
          f"median [min, max] of {args.repeats} runs per setting, alternating\n")
    print("| torch threads | learn() s | env steps/s |\n|---|---:|---:|")
    for setting, values in seconds.items():
        median = statistics.median(values)
        label = f"{threads[setting]} (torch's default)" if setting == "default" else "1 (the quickstart's route)"
        print(f"| {label} | {median:.1f} [{min(values):.1f}, {max(values):.1f}] | {args.steps / median:,.0f} |")
    print(f"\nratio default / one thread: {statistics.median(seconds['default']) / statistics.median(seconds['1']):.2f}")


if __name__ == "__main__":
    main()
