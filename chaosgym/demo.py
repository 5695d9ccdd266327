"""`chaosgym demo`: step every task's vector environment with a random policy."""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np

from chaosgym.tasks import task_ids
from chaosgym.validation import POSITIVE_INT, SEED, argparse_type


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-envs", type=argparse_type(POSITIVE_INT), default=16,
                        help="environments stepped together")
    parser.add_argument("--steps", type=argparse_type(POSITIVE_INT), default=None,
                        help="vector steps per task (default: the task's episode length)")
    parser.add_argument("--seed", type=argparse_type(SEED), default=0, help="seed of the resets and the random actions")


def random_policy_stats(env_id: str, num_envs: int, steps: int | None, seed: int) -> dict:
    env = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                             autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    # compile the step and the reset paths outside the timing
    env.step(env.action_space.sample())
    env.reset(options={"reset_mask": np.ones(num_envs, bool)})
    steps = steps or env.spec.max_episode_steps
    returns, running = [], np.zeros(num_envs)
    start = time.perf_counter()
    for _ in range(steps):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        running += reward
        for i in np.flatnonzero(terminated | truncated):
            returns.append(running[i])
            running[i] = 0.0
    elapsed = time.perf_counter() - start
    return {
        "task": env_id,
        "obs": env.single_observation_space.shape[0],
        "act": env.single_action_space.shape[0],
        "episodes": len(returns),
        "random_return": float(np.mean(returns)) if returns else float("nan"),
        "steps_per_s": num_envs * steps / elapsed,
    }


def run(args: argparse.Namespace) -> int:
    print(f"| task | obs | act | episodes | random-policy return | env steps/s ({args.num_envs} envs) |")
    print("|---|---|---|---|---|---|")
    for env_id in task_ids():
        r = random_policy_stats(env_id, args.num_envs, args.steps, args.seed)
        print(f"| {r['task']} | {r['obs']} | {r['act']} | {r['episodes']} | {r['random_return']:.2f} | {r['steps_per_s']:,.0f} |", flush=True)
    return 0
