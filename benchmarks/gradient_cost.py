"""Cost of a gradient through the simulator: time against the forward pass, memory against horizon.

Prints two markdown tables from one run on one machine:

1. forward time, gradient time and their ratio for a 100-step rollout (cart pole with 1 and 3
   poles, Ant), batch of initial states, default MLP policy; beside it the same ratio for bare
   MJX, the floor under ours: `mjx.step` scanned over open-loop actions (no policy, no task
   code), the gradient taken with respect to those actions;
2. peak memory of the compiled gradient against horizon (100, 300, 1000), with and without
   rematerialisation. Memory is XLA's own buffer assignment for the compiled program
   (`memory_analysis()`: temporaries + arguments + outputs), the same figure on CPU and GPU.

Run: python benchmarks/gradient_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import chaosgym
from chaosgym.functional.policies import init_policy, mlp_policy
from chaosgym.functional.rollout import rollout

TIME_CASES = [("ChaosCartPole-v0", {"num_poles": 1}), ("ChaosCartPole-v0", {"num_poles": 3}), ("ChaosAnt-v0", {})]
MEMORY_CASE = ("ChaosCartPole-v0", {"num_poles": 3})


def setup(env_id, kwargs, batch):
    env = chaosgym.make(env_id, **kwargs)
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size)
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), batch))
    return env, params, states


def median_time(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def raw_mjx_ratio(env, states, horizon, repeats) -> float:
    """Gradient/forward time of bare frame-skipped `mjx.step` over open-loop actions."""
    actions = jnp.zeros((horizon, states.obs.shape[0], env.action_size))

    def loss(actions, data):
        def control_step(data, action):
            data = jax.vmap(env.physics_step)(data, action)  # frame-skipped mjx.step, no task code
            return data, jnp.sum(data.qpos)
        return jnp.sum(jax.lax.scan(control_step, data, actions)[1])

    forward = median_time(jax.jit(loss), actions, states.data, repeats=repeats)
    return median_time(jax.jit(jax.value_and_grad(loss)), actions, states.data, repeats=repeats) / forward


def peak_bytes(fn, *args):
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="initial states per rollout")
    parser.add_argument("--horizon", type=int, default=100, help="rollout length of the timing table")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (median reported)")
    parser.add_argument("--memory-horizons", default="100,300,1000", help="horizons of the memory table")
    parser.add_argument("--quick", action="store_true", help="tiny run: horizon 20, one repeat, no Ant")
    args = parser.parse_args()
    cases = TIME_CASES[:2] if args.quick else TIME_CASES
    horizon, repeats = (20, 1) if args.quick else (args.horizon, args.repeats)
    memory_horizons = [20, 60] if args.quick else [int(h) for h in args.memory_horizons.split(",")]

    print(f"# gradient cost — {platform.processor() or platform.machine()}, {jax.device_count()} x "
          f"{jax.devices()[0].platform}, jax {jax.__version__}, batch {args.batch}\n")
    print(f"| task | forward {horizon} steps (ms) | gradient (ms) | gradient / forward | bare MJX gradient / forward |")
    print("|---|---|---|---|---|")
    for env_id, kwargs in cases:
        env, params, states = setup(env_id, kwargs, args.batch)
        loss = lambda p, s: rollout(env, mlp_policy, p, s, horizon)[0]
        forward = median_time(jax.jit(loss), params, states, repeats=repeats)
        gradient = median_time(jax.jit(jax.value_and_grad(loss)), params, states, repeats=repeats)
        name = env_id + "".join(f" {k}={v}" for k, v in kwargs.items())
        bare = raw_mjx_ratio(env, states, horizon, repeats)
        print(f"| {name} | {forward * 1e3:.1f} | {gradient * 1e3:.1f} | {gradient / forward:.2f} | {bare:.2f} |",
              flush=True)

    env_id, kwargs = MEMORY_CASE
    env, params, states = setup(env_id, kwargs, args.batch)
    print(f"\n| {env_id} num_poles=3, horizon | peak memory of the gradient (MiB) | with remat (MiB) | ratio |")
    print("|---|---|---|---|")
    for h in memory_horizons:
        grads = [jax.grad(lambda p, s, remat=remat: rollout(env, mlp_policy, p, s, h, remat=remat)[0])
                 for remat in (False, True)]
        plain, remat = (peak_bytes(g, params, states) / 2**20 for g in grads)
        print(f"| {h} | {plain:.1f} | {remat:.1f} | {remat / plain:.3f} |", flush=True)


if __name__ == "__main__":
    main()
