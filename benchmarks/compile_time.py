"""Start-up cost: cold and warm compile times of one env step and of a 100-step training update.

Each measurement runs in a fresh Python process. "Cold" starts with empty caches (a temporary
folder given as `CHAOSGYM_CACHE_DIR`); "warm" is a second fresh process with the same folder, i.e.
what a user sees from the second run on. Both are measured twice, each pair in a folder of its
own: with JAX's persistent compilation cache alone (`CHAOSGYM_TRACE_CACHE=0`: every process still
traces the Python function), and with chaosgym's trace cache too (the default:
`chaosgym.functional.trace_cache`). A compile time is the time to a
compiled program through chaosgym's own entry points, without running it: `Env.jit_step` for the
step, and the update of `chaosgym train --agent full --horizon 100` (BPTT gradient of the default
MLP policy over 16 initial states, then Adam) for the gradient. Prints one markdown table.

    python benchmarks/compile_time.py [--quick] [--task ChaosAnt-v0 ...] [--horizon 100]
    python benchmarks/compile_time.py --emitters    # cold, XLA's CPU emitters: chaosgym's against jaxlib's default

With `--emitters` it measures instead, cold and side by side in turns, chaosgym's compile options
(`chaosgym.functional.compiling`: XLA's elemental CPU emitters) against jaxlib's default fusion
emitters (`CHAOSGYM_CPU_FUSION_EMITTERS=1`), `--rounds` times each, and prints each one's median.
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
    """Compile times (s) of one env step and of the training update, in this process."""
    import jax

    import chaosgym
    from chaosgym.functional.gradients import EstimatorConfig
    from chaosgym.functional.policies import init_policy
    from chaosgym.agents.estimators import compiled_update

    env = chaosgym.make(env_id, **options)
    state = jax.eval_shape(env.reset, jax.random.key(0))
    action = jax.ShapeDtypeStruct((env.action_size,), state.data.qpos.dtype)
    times = {}
    start = time.perf_counter()
    env.jit_step.compile(state, action)
    times["step"] = time.perf_counter() - start
    start = time.perf_counter()
    optimizer, update = compiled_update(env, EstimatorConfig("full", horizon=horizon), BATCH, 1e-3)
    params = jax.eval_shape(lambda: init_policy(jax.random.key(0), env.observation_size, env.action_size))
    opt_state = jax.eval_shape(optimizer.init, params)
    update.compile(params, opt_state, jax.eval_shape(lambda: jax.random.key(0)), 0)
    times["gradient"] = time.perf_counter() - start
    return times


def in_fresh_process(env_id: str, options: dict, horizon: int, cache_dir: str, trace_cache: bool,
                     fusion_emitters: bool = False) -> dict[str, float]:
    env = {**os.environ, "CHAOSGYM_CACHE_DIR": cache_dir, "CHAOSGYM_COMPILATION_CACHE": "1",
           "CHAOSGYM_TRACE_CACHE": "1" if trace_cache else "0",
           "CHAOSGYM_CPU_FUSION_EMITTERS": "1" if fusion_emitters else "0"}
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
    parser.add_argument("--task", action="append", choices=[env_id for env_id, _ in CASES],
                        help="measure only this task (repeatable; default: all)")
    parser.add_argument("--emitters", action="store_true",
                        help="cold compiles with chaosgym's XLA CPU emitters against jaxlib's default")
    parser.add_argument("--rounds", type=int, default=3, help="with --emitters: cold processes of each, in turns")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # [env_id, options, horizon]: measure, print JSON
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(*json.loads(args.worker))))
        return
    cases, horizon = ([("ChaosCartPole-v0", {})], 10) if args.quick else (CASES, args.horizon)
    if args.task:
        cases = [case for case in CASES if case[0] in args.task]

    print(f"# compile time — fresh process each, load average {os.getloadavg()[0]:.1f} at the start\n")
    if args.emitters:
        emitters(cases, horizon, args.rounds)
        return
    print("Warm (XLA): a second process with JAX's compilation cache only (`CHAOSGYM_TRACE_CACHE=0`, its own\n"
          "cache folder, filled by a cold process of the same setting); warm: a second process with chaosgym's\n"
          "trace cache too (the default). warm/cold compares the default's warm and cold processes.\n")
    print(f"| task | step cold (s) | step warm (XLA) | step warm | warm/cold | {horizon}-step update cold (s) | "
          "update warm (XLA) | update warm | warm/cold |")
    print("|---|---|---|---|---|---|---|---|---|")
    for env_id, options in cases:
        runs = {}
        # Separate folders: the trace cache compiles the exported program, whose XLA module (and so
        # its compilation-cache entry) differs from the one plain `jax.jit` compiles.
        for trace_cache in (False, True):
            with tempfile.TemporaryDirectory(prefix="chaosgym-cache-") as cache_dir:
                runs[trace_cache] = [in_fresh_process(env_id, options, horizon, cache_dir, trace_cache)
                                     for _ in ("cold", "warm")]
        (_, xla_only), (cold, warm) = runs[False], runs[True]
        cells = [f"{cold[k]:.2f} | {xla_only[k]:.2f} | {warm[k]:.2f} | {warm[k] / cold[k]:.0%}"
                 for k in ("step", "gradient")]
        name = env_id + "".join(f" {k}={v}" for k, v in options.items())
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


def emitters(cases, horizon: int, rounds: int) -> None:
    """Cold compile seconds with chaosgym's emitters and with jaxlib's default, medians of `rounds`."""
    import statistics

    print("Cold processes (empty caches), in turns: chaosgym's compile options (elemental CPU emitters) and\n"
          "jaxlib's default fusion emitters (`CHAOSGYM_CPU_FUSION_EMITTERS=1`); medians.\n")
    print(f"| task | step, chaosgym (s) | step, jaxlib default (s) | ratio | {horizon}-step update, chaosgym (s) | "
          "update, jaxlib default (s) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for env_id, options in cases:
        times = {False: [], True: []}
        for _ in range(rounds):
            for fusion in (False, True):
                with tempfile.TemporaryDirectory(prefix="chaosgym-cache-") as cache_dir:
                    times[fusion].append(in_fresh_process(env_id, options, horizon, cache_dir, True, fusion))
        cells = []
        for k in ("step", "gradient"):
            ours, default = (statistics.median(t[k] for t in times[f]) for f in (False, True))
            cells.append(f"{ours:.2f} | {default:.2f} | {ours / default:.2f}")
        print(f"| {env_id} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
