"""The two backends of the single Gymnasium env: how far apart they drift, and how fast they step.

Prints two markdown tables from one run:

1. Divergence. From the same initial states, under the same control (unforced, or a fixed random
   MLP policy in closed loop), the C engine (float64) and MJX (float32) are stepped side by side
   and the distance d(t) between their observations is recorded. On a chaotic task d grows like exp(lambda t) from
   float32 rounding until it saturates; lambda is fitted to log of the mean of d(t) over the
   starts, between d = 1e-5 and d = 1e-1, and compared with the maximal Lyapunov exponent of the same
   closed loop on MJX (`chaosgym.diagnostics.measures.lyapunov_exponents`, mean ± standard error over the
   starts). "time to 0.1" is when the mean distance reaches 0.1: the horizon over which
   the two backends give the same trajectory.
2. Throughput. Single-env steps/s of `gymnasium.make("ChaosAnt-v0", backend="mujoco")`,
   Gymnasium's `Ant-v5` and `gymnasium.make("ChaosAnt-v0", backend="mjx")` in the same plain
   step loop (random actions, reset when an episode ends), compilation and warm-up excluded.

    python benchmarks/backends.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from chaosgym._mjx import mjx

import chaosgym
from chaosgym.functional.policies import init_policy, mlp_policy
from chaosgym.diagnostics.measures import lyapunov_exponents, mean_and_stderr
from chaosgym.faces.mujoco_backend import MujocoBackend
from chaosgym.functional.rollout import rollout

# (task, options, control steps, start qpos or None for the task's reset, closed loop?): the Ant
# walking under a random policy and the double pendulum unforced from a raised start are chaotic;
# the cart poles are not when unforced (each pole of the paper's system is its own cart-pole pair),
# so their rows show the backends agreeing where nothing amplifies the difference.
# A cart pole's qpos is (cart, pole) per pole, then the reference mass (angles: 0 upright).
# 20 s each: at exponents near 1/s, float32 rounding takes ~15 s to grow to 0.1.
CASES = [("ChaosAnt-v0", {}, 400, None, True),
         ("ChaosCartPole-v0", {}, 2000, (0.0, 0.3, 0.0), False),
         ("ChaosCartPole-v0", {"num_poles": 3}, 2000, (0.0, 0.3, 0.0, 0.2, 0.0, 0.1, 0.0), False),
         ("ChaosDoublePendulum-v0", {}, 2000, (1.5708, 0.0), False)]
FIT_WINDOW = (1e-5, 1e-1)


def start_states(env, keys, start_qpos):
    """The task's reset states; with `start_qpos`, their qpos replaced (velocities stay random)."""
    states = jax.vmap(env.reset)(keys)
    if start_qpos is None:
        return states
    if len(start_qpos) != env.mj_model.nq:
        raise ValueError(f"a start qpos for {env.mj_model.nq} joint coordinates was expected, got {len(start_qpos)}")

    def replace(state):
        data = mjx.forward(env.model, state.data.replace(qpos=jnp.asarray(start_qpos, state.data.qpos.dtype)))
        return state.replace(data=data, obs=env.task.observation(data))

    return jax.jit(jax.vmap(replace))(states)


def c_engine_observations(env, states, act, horizon: int) -> np.ndarray:
    """Observations (horizon, starts, obs) of the C engine from the same states, under `act(obs)`."""
    engine = MujocoBackend(env)
    runs = []
    for qpos, qvel in zip(*jax.device_get((states.data.qpos, states.data.qvel))):
        obs, _ = engine.reset_to(qpos, qvel)
        seen = [obs]
        for _ in range(horizon - 1):
            obs, *_ = engine.step(np.clip(act(obs), -1.0, 1.0).astype(np.float32))
            seen.append(obs)
        runs.append(seen)
    return np.swapaxes(np.asarray(runs), 0, 1)


def fitted_growth(log_distance: np.ndarray, dt: float) -> tuple[float, tuple[float, float] | None]:
    """Slope of the log-distance between the fit window's bounds, and the window in seconds."""
    low, high = np.log(FIT_WINDOW)
    above_low, above_high = np.flatnonzero(log_distance >= low), np.flatnonzero(log_distance >= high)
    if above_low.size == 0:
        return float("nan"), None
    start = above_low[0]
    stop = above_high[0] if above_high.size else log_distance.size
    if stop - start < 3:
        return float("nan"), None
    t = np.arange(start, stop) * dt
    return float(np.polyfit(t, log_distance[start:stop], 1)[0]), (t[0], t[-1])


def divergence_row(env_id: str, options: dict, horizon: int, start_qpos, closed_loop: bool, starts: int) -> str:
    env = chaosgym.make(env_id, **options)
    states = start_states(env, jax.random.split(jax.random.key(1), starts), start_qpos)
    if closed_loop:
        params = init_policy(jax.random.key(0), env.observation_size, env.action_size)
        policy = jax.jit(mlp_policy)
        act, control = (lambda obs: np.asarray(policy(params, obs))), {"policy": mlp_policy, "params": params}
    else:
        params, policy = None, (lambda params, obs: jnp.zeros(env.action_size))
        act, control = (lambda obs: np.zeros(env.action_size)), {}
    c_obs = c_engine_observations(env, states, act, horizon)
    _, trajectory = jax.jit(lambda s: rollout(env, policy, params, s, horizon))(states)
    distance = np.linalg.norm(c_obs - np.asarray(trajectory.obs), axis=-1)
    log_distance = np.log(np.maximum(np.mean(distance, axis=1), 1e-30))
    rate, window = fitted_growth(log_distance, env.dt)
    lam, lam_err = mean_and_stderr(lyapunov_exponents(env, states, horizon, **control).exponents[:, 0])
    crossing = np.flatnonzero(log_distance >= np.log(0.1))
    to_tenth = f"{crossing[0] * env.dt:.2f}" if crossing.size else f"> {horizon * env.dt:.2f}"
    window_text = f"{window[0]:.2f}–{window[1]:.2f}" if window else "—"
    name = env_id + "".join(f" {k}={v}" for k, v in options.items())
    start = "reset" if start_qpos is None else "qpos " + ", ".join(f"{q:g}" for q in start_qpos)
    loop = "random MLP policy" if closed_loop else "unforced"
    return (f"| {name} | {start}; {loop} | {starts} | {horizon} × {env.dt:g} s | {np.mean(distance[1]):.1e} | "
            f"{window_text} | {rate:.2f} | {lam:.2f} ± {lam_err:.2f} | {to_tenth} |")


def single_env_rate(env: gymnasium.Env, steps: int) -> tuple[float, int]:
    """Steps/s of a plain step loop with random actions (after a warm-up), and episodes ended."""
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=0)
    ended = 0

    def run(batch):
        nonlocal ended
        for action in batch:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                ended += 1
                env.reset()

    run(actions[: max(steps // 10, 10)])
    ended = 0
    start = time.perf_counter()
    run(actions)
    return steps / (time.perf_counter() - start), ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=4, help="initial states of the divergence table")
    parser.add_argument("--steps", type=int, default=5000, help="timed steps of each C-engine loop (MJX: a tenth)")
    parser.add_argument("--quick", action="store_true", help="the 3-pole cart pole and the pendulum, 2 starts, 200 steps; 1,000 timed steps")
    args = parser.parse_args()
    cases, starts, steps = CASES, args.starts, args.steps
    if args.quick:
        cases, starts, steps = [CASES[2][:2] + (200,) + CASES[2][3:], CASES[3][:2] + (200,) + CASES[3][3:]], 2, 1000

    print(f"# backends — load average {os.getloadavg()[0]:.1f} at the start\n")
    print("| task | start; control | starts | horizon | d after 1 step | fit window (s) | fitted growth (1/s) | "
          "max Lyapunov exponent (1/s) | time to d = 0.1 (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for env_id, options, horizon, start_qpos, closed_loop in cases:
        print(divergence_row(env_id, options, horizon, start_qpos, closed_loop, starts), flush=True)

    runs = [("`gymnasium.make(\"ChaosAnt-v0\", backend=\"mujoco\")`", lambda: gymnasium.make("ChaosAnt-v0", backend="mujoco"), steps),
            ("Gymnasium `Ant-v5` (MuJoCo C)", lambda: gymnasium.make("Ant-v5"), steps),
            ("`gymnasium.make(\"ChaosAnt-v0\", backend=\"mjx\")`", lambda: gymnasium.make("ChaosAnt-v0", backend="mjx"), steps // 10)]
    results = [(name, *single_env_rate(make(), n), n) for name, make, n in runs]
    baseline = results[1][1]
    print("\n| single env | timed steps | episodes ended | env steps/s | vs Ant-v5 |")
    print("|---|---|---|---|---|")
    for name, rate, ended, n in results:
        print(f"| {name} | {n:,} | {ended} | {rate:,.0f} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
