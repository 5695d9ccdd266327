"""SB3 PPO throughput: ChaosAnt-v0 through chaosgym's batched VecEnv against Gymnasium's Ant-v5.

Both runs use the same PPO hyperparameters (chaosgym's PPO defaults for the Ant, VecNormalize
included), 16 environments and the same number of env steps; Ant-v5 is vectorised the way SB3
does it by itself (`make_vec_env`, a `DummyVecEnv`; `--subproc` adds a `SubprocVecEnv` run).
PPO env steps/s count the whole `learn` call (collection and updates; the ratio is of these);
the last column counts collection alone (env steps and policy inference). The one-off
compilation of the MJX functions happens before the clock starts. With `--repeats N` the setups take turns N
times and each reports its best run (the one least disturbed by other processes). Prints one
markdown table.

    python benchmarks/sb3_throughput.py --quick
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv, VecMonitor, VecNormalize

from chaosgym.agents import sb3
from chaosgym.agents.config import for_task


class CollectionClock(BaseCallback):
    """Seconds spent collecting rollouts (env steps plus policy inference), updates excluded."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def _on_rollout_start(self) -> None:
        self.started = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self.started

    def _on_step(self) -> bool:
        return True


def ppo_throughput(venv, params: dict, env_steps: int, seed: int) -> tuple[float, float, int]:
    """(env steps/s of the whole `learn`, env steps/s while collecting, env steps)."""
    kwargs = {k: v for k, v in params.items() if k not in ("num_envs", "normalize")}
    model = PPO("MlpPolicy", VecNormalize(venv, gamma=params["gamma"]), seed=seed, device="cpu", **kwargs)
    clock = CollectionClock()
    start = time.perf_counter()
    model.learn(env_steps, callback=clock)
    elapsed = time.perf_counter() - start
    venv.close()
    return model.num_timesteps / elapsed, model.num_timesteps / clock.seconds, model.num_timesteps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-steps", type=int, default=100_000, help="env steps per run")
    parser.add_argument("--quick", action="store_true", help="16,384 env steps per run (a minute or two)")
    parser.add_argument("--num-envs", type=int, default=16, help="environments per setup")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads, the same for every run")
    parser.add_argument("--subproc", action="store_true", help="also run Ant-v5 in a SubprocVecEnv")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setup, taking turns; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env_steps = 16_384 if args.quick else args.env_steps
    torch.set_num_threads(args.torch_threads)
    params = {**sb3.hyperparameters(for_task("ChaosAnt-v0", "ppo", env_steps=env_steps)), "num_envs": args.num_envs}
    load = os.getloadavg()[0]  # other processes competing for the cores skew both runs

    runs = {"ChaosAnt-v0, chaosgym VecEnv (one MJX call per step)":
            lambda: VecMonitor(sb3.make_compiled_vec_env("ChaosAnt-v0", {}, args.num_envs, args.seed)),
            "Ant-v5, SB3 DummyVecEnv (MuJoCo C)":
            lambda: make_vec_env("Ant-v5", n_envs=args.num_envs, seed=args.seed)}
    if args.subproc:
        runs["Ant-v5, SB3 SubprocVecEnv (MuJoCo C)"] = lambda: make_vec_env(
            "Ant-v5", n_envs=args.num_envs, seed=args.seed, vec_env_cls=SubprocVecEnv)
    # one untimed rollout per setup first: torch's one-off initialisation would otherwise be
    # charged to whichever setup runs first
    for make in runs.values():
        ppo_throughput(make(), params, params["n_steps"] * args.num_envs, args.seed)
    results = {name: (0.0, 0.0, 0) for name in runs}
    for _ in range(args.repeats):
        for name, make in runs.items():
            results[name] = max(results[name], ppo_throughput(make(), params, env_steps, args.seed))

    baseline = results["Ant-v5, SB3 DummyVecEnv (MuJoCo C)"][0]
    print(f"SB3 PPO, {args.num_envs} envs, n_steps={params['n_steps']}, batch_size={params['batch_size']}, "
          f"n_epochs={params['n_epochs']}, torch threads={args.torch_threads}, best of {args.repeats}, "
          f"load average before: {load:.1f}, gymnasium {gymnasium.__version__}\n")
    print("| setup | env steps | PPO env steps/s | vs Ant-v5 DummyVecEnv | env steps/s while collecting |")
    print("|---|---|---|---|---|")
    for name, (speed, collecting, steps) in results.items():
        print(f"| {name} | {steps:,} | {speed:,.0f} | {speed / baseline:.2f}x | {collecting:,.0f} |")


if __name__ == "__main__":
    main()
