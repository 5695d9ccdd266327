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

A table before it puts (a) on the C engine and (b) against their floors, in microseconds per call:
a step against a bare `mj_step` x frame skip on the same model under the same actions (restarted
from the standing pose when the torso leaves the healthy height, as an episode would end), and a
reset (`env.reset()`, a new episode of the same seed stream) against Ant-v5's. A last table gives
the seconds a fresh process takes to `import chaosgym` and to `gymnasium.make` each task on the
default C engine, and its first `reset`, with cold caches (a fresh CHAOSGYM_CACHE_DIR) and warm.

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
from chaosgym._mjx import mjx

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


def bare_physics_loop(model: mujoco.MjModel, frame_skip: int, home_qpos: np.ndarray, steps: int,
                      healthy_z: tuple[float, float] = (0.2, 1.0)) -> Callable[[], int]:
    """A single env step's floor: `steps` control steps of bare `mj_step` x `frame_skip` with random
    controls, restarted at `home_qpos` when the torso's height (qpos[2]) leaves `healthy_z`."""
    data = mujoco.MjData(model)
    controls = np.random.default_rng(0).uniform(-1, 1, (steps, model.nu))

    def restart() -> None:
        mujoco.mj_resetData(model, data)
        data.qpos[:] = home_qpos
        mujoco.mj_forward(model, data)

    restart()

    def run() -> int:
        for control in controls:
            data.ctrl[:] = control
            mujoco.mj_step(model, data, nstep=frame_skip)
            if not healthy_z[0] <= data.qpos[2] <= healthy_z[1]:
                restart()
        return steps

    return run


def reset_loop(env: gymnasium.Env, resets: int) -> Callable[[], int]:
    """A round of `resets` calls of `env.reset()` (each a new episode of the seed stream)."""
    env.reset(seed=0)

    def run() -> int:
        for _ in range(resets):
            env.reset()
        return resets

    return run


def c_engine_floor_rows(steps: int, rounds: int) -> list[str]:
    """The C-engine table: step and reset of ChaosAnt-v0 and Ant-v5 in microseconds, with floors."""
    ours, theirs = gymnasium.make(ENV_ID), gymnasium.make("Ant-v5")
    model = ours.unwrapped.env.mj_model
    ant = theirs.unwrapped
    rates = best_rates({
        "ours": single_env_loop(ours, steps),
        "ours_floor": bare_physics_loop(model, ours.unwrapped.env.frame_skip, model.key("home").qpos, steps),
        "theirs": single_env_loop(theirs, steps),
        "theirs_floor": bare_physics_loop(ant.model, ant.frame_skip, ant.init_qpos, steps, ant._healthy_z_range),
        "ours_reset": reset_loop(ours, max(steps // 5, 1)),
        "theirs_reset": reset_loop(theirs, max(steps // 5, 1)),
    }, rounds)
    us = {name: 1e6 / rate for name, rate in rates.items()}
    rows = ["| single env, C engine | step (µs) | floor: bare `mj_step` × frame skip (µs) | step / floor | "
            "reset (µs) | reset / Ant-v5's |", "|---|---:|---:|---:|---:|---:|"]
    for name, key in ((f'`gymnasium.make("{ENV_ID}")`', "ours"), ("Gymnasium `Ant-v5`", "theirs")):
        rows.append(f"| {name} | {us[key]:.0f} | {us[key + '_floor']:.0f} | {us[key] / us[key + '_floor']:.2f}× | "
                    f"{us[key + '_reset']:.0f} | {us[key + '_reset'] / us['theirs_reset']:.2f}× |")
    return rows


MAKE_PROGRAM = """
import time
start = time.perf_counter()
import gymnasium, chaosgym
imported = time.perf_counter()
env = gymnasium.make({env_id!r})
made = time.perf_counter()
env.reset(seed=0)
print(imported - start, made - imported, time.perf_counter() - made)
"""


def make_time_rows(env_ids: list[str]) -> list[str]:
    """Seconds of a fresh process to import chaosgym, `gymnasium.make` a task and reset it, cold and warm."""
    import subprocess
    import sys
    import tempfile

    rows = ["| task (default C engine) | import chaosgym (s) | `gymnasium.make` cold (s) | warm (s) | "
            "first `reset` cold (s) | warm (s) |", "|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as cache:
        for env_id in env_ids:
            times = []
            for _ in ("cold", "warm"):  # the second run finds the first one's caches
                out = subprocess.run([sys.executable, "-c", MAKE_PROGRAM.format(env_id=env_id)], check=True,
                                     capture_output=True, text=True, env={**os.environ, "CHAOSGYM_CACHE_DIR": cache})
                times.append([float(x) for x in out.stdout.split()[-3:]])
            (imported, cold, cold_reset), (_, warm, warm_reset) = times
            rows.append(f"| {env_id} | {imported:.2f} | {cold:.2f} | {warm:.2f} | {cold_reset:.2f} | {warm_reset:.2f} |")
    return rows


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
                        help="tiny smoke run: batch 8, 50 single steps, 40 batched env steps, 2 rounds, "
                             "make() of the Ant only")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.single_steps, args.batch_steps, args.rounds = [8], 50, 40, 2

    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"jax {jax.__version__} ({jax.default_backend()}), mujoco {mujoco.__version__}, "
          f"gymnasium {gymnasium.__version__}\n")

    print("\n".join(c_engine_floor_rows(args.single_steps, args.rounds)) + "\n", flush=True)
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
    print("\n" + "\n".join(make_time_rows([ENV_ID] if args.quick else sorted(chaosgym.TASKS))))
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f} (other processes share these cores).")


if __name__ == "__main__":
    main()
