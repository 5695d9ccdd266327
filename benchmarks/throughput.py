"""Env steps per second of chaosgym's Ant against Gymnasium's Ant-v5 and against raw MJX.

One run prints one markdown table:

  (a) gymnasium.make("ChaosAnt-v0") in a plain step loop (its default backend, MuJoCo's C engine),
      and the same with backend="mjx",
  (b) Gymnasium's Ant-v5 (MuJoCo C) in the same loop,
  (c) make_vec("ChaosAnt-v0", vectorization_mode="vector_entry_point") at each batch size,
  (d) a jitted, vmapped mjx.step loop on the same model, batch and frame skip: the ceiling of (c),

with the ratios (a)/(b) and (c)/(d). Every loop takes uniform random actions (so (a)-(c) include
their episode resets; (d) never resets). Compilation and warm-up are excluded. The loops being
compared run in alternating rounds and each reports its best round, so load from other processes
does not favour one side.

    python benchmarks/throughput.py            # batches 64 and 256
    python benchmarks/throughput.py --quick    # a tiny smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import chaosgym  # registers the ids and enables the compilation cache
import gymnasium
import jax
import mujoco
import numpy as np
from mujoco import mjx

ENV_ID = "ChaosAnt-v0"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def single_env_loop(env: gymnasium.Env, steps: int) -> Callable[[], int]:
    """A round of `steps` plain `step` calls with random actions, resetting when an episode ends."""
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=0)

    def run() -> int:
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return steps

    return run


def vector_env_loop(env: gymnasium.vector.VectorEnv, iterations: int) -> Callable[[], int]:
    num_envs = env.num_envs
    actions = np.random.default_rng(0).uniform(-1, 1, (iterations, num_envs, env.single_action_space.shape[0]))
    actions = actions.astype(np.float32)
    env.reset(seed=0)

    def run() -> int:
        for batch in actions:
            env.step(batch)
        return num_envs * iterations

    return run


def raw_mjx_loop(functional: chaosgym.Env, num_envs: int, iterations: int) -> Callable[[], int]:
    """The MJX ceiling: frame-skipped `mjx.step` on the same model and batch, nothing else."""
    model, frame_skip = functional.model, functional.frame_skip

    def control_step(data: mjx.Data, ctrl: jax.Array) -> mjx.Data:
        data = data.replace(ctrl=ctrl)
        return jax.lax.scan(lambda d, _: (mjx.step(model, d), None), data, None, length=frame_skip)[0]

    step = jax.jit(jax.vmap(control_step), donate_argnums=0)
    data = jax.jit(jax.vmap(lambda key: functional.reset(key).data))(jax.random.split(jax.random.key(0), num_envs))
    # On the device before timing: iterating over one big jax array would compile a slicing op.
    rng = np.random.default_rng(0)
    ctrls = [jax.device_put(ctrl) for ctrl in
             rng.uniform(-1, 1, (iterations, num_envs, functional.action_size)).astype(np.float32)]

    def run() -> int:
        nonlocal data
        for ctrl in ctrls:
            data = step(data, ctrl)
        jax.block_until_ready(data)
        return num_envs * iterations

    return run


def best_rates(loops: dict[str, Callable[[], int]], rounds: int) -> dict[str, float]:
    """Env steps/s of each loop's fastest round; rounds alternate between the loops."""
    for run in loops.values():
        run()  # compile and warm up
    best = {name: 0.0 for name in loops}
    for _ in range(rounds):
        for name, run in loops.items():
            start = time.perf_counter()
            steps = run()
            best[name] = max(best[name], steps / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256],
                        help="vector-env batch sizes (default: 64 256)")
    parser.add_argument("--single-steps", type=int, default=500,
                        help="steps per round of each single-env loop (default: 500)")
    parser.add_argument("--batch-steps", type=int, default=8192,
                        help="env steps per round at each batch size, i.e. batch x vector steps (default: 8192)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per loop (default: 10)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run: batch 8, 50 single steps, 40 batched env steps, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.single_steps, args.batch_steps, args.rounds = [8], 50, 40, 2

    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"jax {jax.__version__} ({jax.default_backend()}), mujoco {mujoco.__version__}, "
          f"gymnasium {gymnasium.__version__}\n")

    single = best_rates({"chaos": single_env_loop(gymnasium.make(ENV_ID), args.single_steps),
                         "chaos_mjx": single_env_loop(gymnasium.make(ENV_ID, backend="mjx"), args.single_steps),
                         "gymnasium": single_env_loop(gymnasium.make("Ant-v5"), args.single_steps)},
                        args.rounds)
    rows = [
        ('(a) `gymnasium.make("ChaosAnt-v0")` (C engine, default)', 1, single["chaos"],
         f"(a)/(b) = {single['chaos'] / single['gymnasium']:.2f}"),
        ('(a) `gymnasium.make("ChaosAnt-v0", backend="mjx")`', 1, single["chaos_mjx"],
         f"(a)/(b) = {single['chaos_mjx'] / single['gymnasium']:.2f}"),
        ("(b) Gymnasium `Ant-v5` (MuJoCo C)", 1, single["gymnasium"], ""),
    ]
    for num_envs in args.batches:
        iterations = max(1, args.batch_steps // num_envs)
        vector = gymnasium.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point")
        batched = best_rates({"vector": vector_env_loop(vector, iterations),
                              "raw": raw_mjx_loop(vector.unwrapped.env, num_envs, iterations)},
                             args.rounds)
        rows += [
            ('(c) `make_vec("ChaosAnt-v0")`', num_envs, batched["vector"], ""),
            ("(d) raw vmapped `mjx.step`", num_envs, batched["raw"],
             f"(c)/(d) = {batched['vector'] / batched['raw']:.2f}"),
        ]

    print("| env | batch | env steps/s | ratio |")
    print("|---|---:|---:|---|")
    for name, batch, rate, ratio in rows:
        print(f"| {name} | {batch} | {rate:,.0f} | {ratio} |")
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f} (other processes share these cores).")


if __name__ == "__main__":
    main()
