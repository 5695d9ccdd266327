"""Model-free baselines: Stable-Baselines3 PPO, SAC and TD3 on chaosgym's batched MJX envs.

`train_sb3` trains one agent on one task and writes into its output folder:

* `config.json`: the run's arguments and the resolved hyperparameters;
* `metrics.csv`: one row per SB3 log dump and per evaluation. The columns shared with the
  gradient agents come first (`update` = SB3's `train/n_updates`: PPO counts epochs, SAC/TD3
  gradient steps; `loss` = PPO's total loss, the actor loss of SAC/TD3; `grad_norm` is NaN and
  `skipped_updates` 0, SB3 reports neither), then every value SB3 logs under its own name;
  `eval_score` is the mean episode return on `chaosgym.evaluation.evaluate`, `eval_objective`
  the task objective there;
* `checkpoint.zip`: the model, the VecNormalize statistics and (SAC/TD3) the replay buffer, written
  whole to a temporary file and then renamed, at every evaluation and at the end.

`wall_time` counts training only: compilation of the env, evaluation and checkpoints are left out.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize
from tqdm.auto import tqdm

from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv
from chaosgym.evaluation import EVAL_EPISODES, evaluate

SB3_AGENTS = ("ppo", "sac", "td3")
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3}
METRIC_COLUMNS = ["update", "env_steps", "wall_time", "loss", "eval_score", "eval_objective",
                  "grad_norm", "skipped_updates"]

# Hyperparameters as plain data, in the spirit of rl-zoo's files: per agent a default, then per-task
# changes. `num_envs`, `normalize` (VecNormalize of observations and rewards) and `action_noise`
# (std of TD3's Gaussian exploration noise) are ours; everything else goes to the SB3 class.
HYPERPARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "ppo": {
        # SB3's MuJoCo defaults (2048 steps per rollout), spread over 16 batched environments
        "default": {"num_envs": 16, "normalize": True, "n_steps": 128, "batch_size": 64, "n_epochs": 10,
                    "learning_rate": 3e-4, "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2,
                    "ent_coef": 0.0},
        # 100-step episodes: shorter rollouts give more updates in a small budget
        "ChaosCartPole-v0": {"n_steps": 64, "batch_size": 256},
    },
    "sac": {
        "default": {"num_envs": 1, "normalize": False, "learning_starts": 10_000, "buffer_size": 1_000_000,
                    "batch_size": 256, "learning_rate": 3e-4, "gamma": 0.99, "tau": 0.005,
                    "train_freq": 1, "gradient_steps": 1, "policy_kwargs": {"net_arch": [256, 256]}},
        "ChaosCartPole-v0": {"learning_starts": 1_000},
    },
    "td3": {
        "default": {"num_envs": 1, "normalize": False, "learning_starts": 10_000, "buffer_size": 1_000_000,
                    "batch_size": 256, "learning_rate": 1e-3, "gamma": 0.99, "action_noise": 0.1,
                    "train_freq": 1, "gradient_steps": 1, "policy_kwargs": {"net_arch": [400, 300]}},
        "ChaosCartPole-v0": {"learning_starts": 1_000},
    },
}


def hyperparameters(env_id: str, agent: str, env_steps: int) -> dict[str, Any]:
    """The agent's defaults with the task's changes; replay sizes never exceed the budget."""
    if agent not in SB3_AGENTS:
        raise ValueError(f"unknown SB3 agent {agent!r}; valid: {', '.join(SB3_AGENTS)}")
    params = {**HYPERPARAMS[agent]["default"], **HYPERPARAMS[agent].get(env_id, {})}
    if "buffer_size" in params:
        # a buffer larger than the run only costs memory and checkpoint size
        params["buffer_size"] = min(params["buffer_size"], env_steps)
        params["learning_starts"] = min(params["learning_starts"], env_steps // 10)
    return params


class MetricsCSV(KVWriter):
    """SB3 logger output writing `metrics.csv`: the shared columns, then SB3's keys as they appear.

    A key seen for the first time widens the header (the file is rewritten once, as SB3's own CSV
    writer does); rows missing a key leave it empty.
    """

    def __init__(self, path: Path, clock, update: int = 0):
        self.path, self.clock, self.update = path, clock, update
        self.columns = _read_csv_header(path)

    def write(self, key_values: dict[str, Any], key_excluded, step: int = 0) -> None:
        self.update = int(key_values.get("train/n_updates", self.update))
        loss = key_values.get("train/loss", key_values.get("train/actor_loss", math.nan))
        row = {"update": self.update, "env_steps": step, "wall_time": self.clock(), "loss": loss,
               "eval_score": key_values.get("eval/mean_return", math.nan),
               "eval_objective": key_values.get("eval/mean_objective", math.nan),
               "grad_norm": math.nan, "skipped_updates": 0}
        # SB3's own values under their own names (ours, eval/*, are already in the row)
        row.update((k, v) for k, v in key_values.items()
                   if isinstance(v, (int, float, np.number)) and not k.startswith("eval/"))
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            _rewrite_csv(self.path, self.columns, _read_csv(self.path))
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)

    def close(self) -> None:
        pass


def _read_csv_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _rewrite_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _to_bytes(save) -> bytes:
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, model: BaseAlgorithm, progress: dict) -> None:
    """Model, VecNormalize statistics, replay buffer and progress in one zip, replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as z:
        z.writestr("model.zip", _to_bytes(model.save))
        if model.get_vec_normalize_env() is not None:
            z.writestr("vecnormalize.pkl", pickle.dumps(model.get_vec_normalize_env()))
        if isinstance(model, OffPolicyAlgorithm):
            z.writestr("replay_buffer.pkl", _to_bytes(model.save_replay_buffer))
        z.writestr("progress.json", json.dumps(progress))
    os.replace(tmp, path)


def load_checkpoint(path: Path, agent: str, venv: VecEnv) -> tuple[BaseAlgorithm, dict]:
    """A checkpoint's model on `venv` (wrapped in the saved VecNormalize, if any) and its progress."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if "vecnormalize.pkl" in names:
            venv = _vec_normalize(z, venv)
        model = ALGORITHMS[agent].load(io.BytesIO(z.read("model.zip")), env=venv, device="cpu")
        if "replay_buffer.pkl" in names:
            model.load_replay_buffer(io.BytesIO(z.read("replay_buffer.pkl")))
        return model, json.loads(z.read("progress.json"))


def _vec_normalize(z: zipfile.ZipFile, venv: VecEnv | None) -> VecNormalize:
    """The saved VecNormalize (what `VecNormalize.load` does, from inside the zip)."""
    vec_normalize = pickle.loads(z.read("vecnormalize.pkl"))
    if venv is not None:
        vec_normalize.set_venv(venv)
    return vec_normalize


def policy_fn(model: BaseAlgorithm, vec_normalize: VecNormalize | None = None):
    """The deterministic numpy policy `obs -> action` of a model, for `evaluate`.

    Observations are normalised with `vec_normalize` (default: the model's own) without updating it.
    """
    vec_normalize = vec_normalize or model.get_vec_normalize_env()

    def act(obs: np.ndarray) -> np.ndarray:
        if vec_normalize is not None:
            obs = vec_normalize.normalize_obs(obs)
        return model.predict(obs, deterministic=True)[0]

    return act


def load_policy(out: Path):
    """The deterministic policy of a `train_sb3` output folder's checkpoint (to render, compare)."""
    config = json.loads((Path(out) / "config.json").read_text())
    with zipfile.ZipFile(Path(out) / "checkpoint.zip") as z:
        model = ALGORITHMS[config["agent"]].load(io.BytesIO(z.read("model.zip")), device="cpu")
        vec_normalize = _vec_normalize(z, None) if "vecnormalize.pkl" in z.namelist() else None
    return policy_fn(model, vec_normalize)


class TrainingMonitor(BaseCallback):
    """Progress bar, training clock, and evaluation + checkpoint every `eval_every` env steps.

    Evaluations happen when a rollout starts, that is after the updates on every step collected so
    far, so a checkpoint loses no collected experience (PPO evaluates every whole rollout).
    """

    def __init__(self, env_id: str, task_kwargs: dict, eval_every: int, eval_episodes: int,
                 checkpoint: Path, progress: dict, show_progress: bool, time_budget: float | None = None):
        super().__init__()
        self.time_budget = time_budget
        self.env_id, self.task_kwargs = env_id, task_kwargs
        self.eval_every, self.eval_episodes = eval_every, eval_episodes
        self.checkpoint, self.progress, self.show_progress = checkpoint, progress, show_progress
        self.next_eval = 0 if progress["env_steps"] == 0 else self._after(progress["env_steps"])

    def _after(self, env_steps: int) -> int:
        return (env_steps // self.eval_every + 1) * self.eval_every

    def wall_time(self) -> float:
        now = self.paused_at if self.paused_at is not None else time.perf_counter()
        return self.previous_wall_time + now - self.started

    def _on_training_start(self) -> None:
        total = self.locals["total_timesteps"]
        self.bar = tqdm(total=total, initial=self.num_timesteps, disable=not self.show_progress,
                        desc=f"{type(self.model).__name__} {self.env_id}", unit="step")
        self.previous_wall_time, self.started, self.paused_at = self.progress["wall_time"], time.perf_counter(), None

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next_eval:
            self._evaluate_and_save()

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return self.time_budget is None or self.wall_time() < self.time_budget  # False stops learn()

    def _on_training_end(self) -> None:
        if self.progress["env_steps"] != self.num_timesteps or self.num_timesteps == 0:
            self._evaluate_and_save()
        self.bar.close()

    def _evaluate_and_save(self) -> None:
        """Evaluate, log a row, checkpoint; the clock stands still meanwhile."""
        self.paused_at = time.perf_counter()
        result = evaluate(policy_fn(self.model), self.env_id, self.task_kwargs, num_episodes=self.eval_episodes)
        self.logger.record("eval/mean_return", result["mean_return"])
        self.logger.record("eval/mean_objective", result["mean_objective"])
        self.logger.dump(self.num_timesteps)
        self.bar.set_postfix(eval=f"{result['mean_return']:.4g}")
        self.progress.update(env_steps=self.num_timesteps, wall_time=self.wall_time())
        save_checkpoint(self.checkpoint, self.model, self.progress)
        self.next_eval = self._after(self.num_timesteps)
        self.started += time.perf_counter() - self.paused_at
        self.paused_at = None


def make_compiled_vec_env(env_id: str, task_kwargs: dict, num_envs: int, seed: int) -> ChaosSB3VecEnv:
    """Our VecEnv, with its step and reset compiled (outside any training clock)."""
    venv = ChaosSB3VecEnv(env_id, num_envs, **task_kwargs)
    venv.seed(seed)
    venv.reset()
    venv.step(np.zeros((num_envs, *venv.action_space.shape), np.float32))
    return venv


def _new_model(agent: str, venv: VecEnv, params: dict, seed: int) -> BaseAlgorithm:
    kwargs = {k: v for k, v in params.items() if k not in ("num_envs", "normalize", "action_noise")}
    if params.get("normalize"):
        venv = VecNormalize(venv, gamma=params["gamma"])
    if params.get("action_noise"):
        size = venv.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(size), params["action_noise"] * np.ones(size))
    return ALGORITHMS[agent]("MlpPolicy", venv, seed=seed, device="cpu", **kwargs)


def train_sb3(env_id: str, task_kwargs: dict, agent: str, env_steps: int, seed: int, out: Path,
              resume: bool = False, num_envs: int | None = None, eval_every: int | None = None,
              progress: bool = True, eval_episodes: int = EVAL_EPISODES,
              time_budget: float | None = None) -> Path:
    """Train an SB3 baseline for `env_steps` env steps in total (resumed ones included; PPO ends
    on a whole rollout, so it may overshoot by less than one) and return the output folder.

    `eval_every` (default: a tenth of the budget) env steps between evaluations and checkpoints.
    With `resume=True` and a checkpoint in `out`, training continues from it with the run's saved
    hyperparameters (the environments start new episodes); metrics rows written after that
    checkpoint are dropped. A larger `env_steps` extends a finished run. With a `time_budget`
    (seconds of training wall-clock), training also stops once that much time is spent.
    """
    out = Path(out)
    checkpoint, metrics = out / "checkpoint.zip", out / "metrics.csv"
    resuming = resume and checkpoint.exists()
    if checkpoint.exists() and not resume:
        raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) or another folder")
    if resuming:
        saved = json.loads((out / "config.json").read_text())
        run = {"env_id": env_id, "task_kwargs": task_kwargs, "agent": agent, "seed": seed}
        mismatched = sorted(k for k, v in run.items() if saved[k] != v)
        if mismatched:
            raise ValueError(f"cannot resume {out}: its config differs in {mismatched}")
        params = saved["hyperparameters"]  # a resumed run keeps its own, whatever the new budget
    else:
        params = hyperparameters(env_id, agent, env_steps)
        if num_envs is not None:
            params["num_envs"] = num_envs
    eval_every = eval_every or max(1, env_steps // 10)

    start = time.perf_counter()
    venv = VecMonitor(make_compiled_vec_env(env_id, task_kwargs, params["num_envs"], seed))
    compile_time = time.perf_counter() - start
    if resuming:
        model, state = load_checkpoint(checkpoint, agent, venv)
        rows = [r for r in _read_csv(metrics) if int(r["env_steps"]) <= state["env_steps"]]
        _rewrite_csv(metrics, _read_csv_header(metrics), rows)
        update = int(rows[-1]["update"]) if rows else 0
    else:
        out.mkdir(parents=True, exist_ok=True)
        model = _new_model(agent, venv, params, seed)
        state = {"env_steps": 0, "wall_time": 0.0, "compile_time": 0.0}
        _rewrite_csv(metrics, METRIC_COLUMNS, [])
        update = 0
    config = {"env_id": env_id, "task_kwargs": task_kwargs, "agent": agent, "env_steps": env_steps,
              "seed": seed, "eval_every": eval_every, "eval_episodes": eval_episodes, "hyperparameters": params}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    state["compile_time"] += compile_time

    monitor = TrainingMonitor(env_id, task_kwargs, eval_every, eval_episodes, checkpoint, state, progress,
                              time_budget)
    model.set_logger(Logger(folder=None, output_formats=[MetricsCSV(metrics, monitor.wall_time, update)]))
    # One torch thread: SB3's small networks gain nothing from more, and spinning torch threads
    # fight XLA's for the cores (PPO on the cart pole ran 14-40x slower with 2 threads on 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.learn(total_timesteps=env_steps - model.num_timesteps, callback=monitor,
                    reset_num_timesteps=False, log_interval=1)
    finally:
        torch.set_num_threads(threads)
        venv.close()
    return out
