"""Start-up cost: cold and warm compile times of one env step and of a 100-step gradient, per task.

Each measurement runs in a fresh Python process. "Cold" starts with an empty persistent
compilation cache (a temporary folder given as `CHAOSGYM_CACHE_DIR`); "warm" is a second fresh
process with the same folder, i.e. what a user sees from the second run on. A compile time is the
time of `jax.jit(f).lower(...).compile()`: tracing, lowering and XLA compilation (or the cache
lookup), without running anything. The gradient is `jax.value_and_grad` of the `full` rollout
loss of the default MLP policy over a batch of 16 initial states. Prints one markdown table.

    python benchmarks/compile_time.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CASES = [("ChaosAnt-v0", {}), ("ChaosCartPole-v0", {}), ("ChaosDoublePendulum-v0", {})]
BATCH = 16


def measure(env_id: str, options: dict, horizon: int) -> dict[str, float]:
    """Compile times (s) of one env step and of the rollout gradient, in this process."""
    import jax

    import chaosgym
    from agents.policies import init_policy, mlp_policy
    from chaosgym.rollout import rollout

    env = chaosgym.make(env_id, **options)
    state = jax.eval_shape(env.reset, jax.random.key(0))
    action = jax.ShapeDtypeStruct((env.action_size,), state.data.qpos.dtype)
    states = jax.eval_shape(jax.vmap(env.reset), jax.random.split(jax.random.key(0), BATCH))
    params = jax.eval_shape(lambda: init_policy(jax.random.key(0), env.observation_size, env.action_size))
    loss = lambda p, s: rollout(env, mlp_policy, p, s, horizon)[0]  # noqa: E731
    times = {}
    for name, fn, args in [("step", env.step, (state, action)),
                           ("gradient", jax.value_and_grad(loss), (params, states))]:
        start = time.perf_counter()
        jax.jit(fn).lower(*args).compile()
        times[name] = time.perf_counter() - start
    return times


def in_fresh_process(env_id: str, options: dict, horizon: int, cache_dir: str) -> dict[str, float]:
    env = {**os.environ, "CHAOSGYM_CACHE_DIR": cache_dir, "CHAOSGYM_COMPILATION_CACHE": "1"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # chaosgym leaves a folder given to JAX alone
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps([env_id, options, horizon])],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--horizon", type=int, default=100, help="rollout length of the gradient")
    parser.add_argument("--quick", action="store_true", help="the cart pole only, a 10-step gradient")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # [env_id, options, horizon]: measure, print JSON
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(*json.loads(args.worker))))
        return
    cases, horizon = ([("ChaosCartPole-v0", {})], 10) if args.quick else (CASES, args.horizon)

    print(f"# compile time — fresh process each, load average {os.getloadavg()[0]:.1f} at the start\n")
    print(f"| task | step cold (s) | step warm (s) | warm/cold | {horizon}-step gradient cold (s) | "
          "gradient warm (s) | warm/cold |")
    print("|---|---|---|---|---|---|---|")
    for env_id, options in cases:
        with tempfile.TemporaryDirectory(prefix="chaosgym-cache-") as cache_dir:
            cold = in_fresh_process(env_id, options, horizon, cache_dir)
            warm = in_fresh_process(env_id, options, horizon, cache_dir)
        cells = [f"{cold[k]:.2f} | {warm[k]:.2f} | {warm[k] / cold[k]:.0%}" for k in ("step", "gradient")]
        name = env_id + "".join(f" {k}={v}" for k, v in options.items())
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
