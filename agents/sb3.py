"""Model-free baselines: Stable-Baselines3 PPO, SAC and TD3 on chaosgym's batched MJX envs.

`train_sb3` trains one agent on one task into a run folder (`chaosgym.agents.run.Run`: the
same config.json schema, metrics.csv columns and checkpoint rules as the gradient agents):

* metrics.csv: one row per SB3 log dump. `update` = SB3's `train/n_updates` (PPO counts epochs,
  SAC/TD3 gradient steps); `loss` = PPO's total loss, the actor loss of SAC/TD3; `eval_score` the
  mean episode return on `chaosgym.evaluation.evaluate` (empty on rows without an evaluation),
  `eval_objective` the task objective there;
* checkpoint.zip: the model, the VecNormalize statistics, (SAC/TD3) the replay buffer and the
  continuation (see `continuation`), with the progress and the resolved hyperparameters, at every
  evaluation and at the end. A resumed run continues bit for bit as the uninterrupted one would.

Hyperparameters: the agent's defaults (`SB3_DEFAULTS`) with the task's presets (`chaosgym.presets`), then the run's
`config.sb3` changes. `wall_time` counts training only: compilation of the env, evaluation and
checkpoints are left out.

`TRAINER` is the agents' `chaosgym.agents.registry.Trainer`: `--learning-rate`, `--batch-size` and
`--hidden` set SB3's `learning_rate`, `batch_size` and `policy_kwargs.net_arch`.
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import math
import pickle
import random
import time
import warnings
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
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize, unwrap_vec_wrapper
from tqdm.auto import tqdm

from chaosgym.agents.announce import announce_compile
from chaosgym.agents.config import TrainConfig
from chaosgym.agents.run import CheckpointError, Run, next_timed_evaluation
from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv
from chaosgym.evaluation import evaluate
from chaosgym.presets import presets

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3}
ENV_COMPILE_S = 15.0  # typical seconds to compile a task's batched reset and step on a 2-core CPU

# SB3 hyperparameters as plain data, in the spirit of rl-zoo's files. `num_envs`, `normalize`
# (VecNormalize of observations and rewards) and `action_noise` (std of TD3's Gaussian exploration
# noise) are chaosgym's; every other key goes to the SB3 class.
SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    # SB3's MuJoCo defaults (2048 steps per rollout), spread over 16 batched environments
    "ppo": {"num_envs": 16, "normalize": True, "n_steps": 128, "batch_size": 64, "n_epochs": 10,
            "learning_rate": 3e-4, "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0},
    "sac": {"num_envs": 1, "normalize": False, "learning_starts": 10_000, "buffer_size": 1_000_000,
            "batch_size": 256, "learning_rate": 3e-4, "gamma": 0.99, "tau": 0.005,
            "train_freq": 1, "gradient_steps": 1, "policy_kwargs": {"net_arch": [256, 256]}},
    "td3": {"num_envs": 1, "normalize": False, "learning_starts": 10_000, "buffer_size": 1_000_000,
            "batch_size": 256, "learning_rate": 1e-3, "gamma": 0.99, "action_noise": 0.1,
            "train_freq": 1, "gradient_steps": 1, "policy_kwargs": {"net_arch": [400, 300]}},
}


def sb3_hyperparameters(env_id: str, agent: str) -> dict[str, Any]:
    """An SB3 agent's defaults with the task's changes."""
    if agent not in SB3_DEFAULTS:
        raise ValueError(f"unknown SB3 agent {agent!r}; valid: {', '.join(SB3_DEFAULTS)}")
    return {**SB3_DEFAULTS[agent], **presets(env_id).sb3.get(agent, {})}


def _integer(least: int):
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least), f"an integer >= {least}"


def _number(low: float, high: float, low_open: bool = False):
    def ok(v):
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (low < v if low_open else low <= v) and v <= high)
    return ok, f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"


# what SB3 accepts of each hyperparameter chaosgym presets (SB3 itself checks few, and late)
HYPERPARAMETER_CHECKS = {
    "num_envs": _integer(1), "n_steps": _integer(1), "batch_size": _integer(1), "n_epochs": _integer(1),
    "buffer_size": _integer(1), "learning_starts": _integer(0), "train_freq": _integer(1),
    # -1: as many gradient steps as env steps were collected (SB3's convention)
    "gradient_steps": ((lambda v: _integer(1)[0](v) or v == -1), "an integer >= 1, or -1"),
    "learning_rate": _number(0, math.inf, low_open=True), "gamma": _number(0, 1), "gae_lambda": _number(0, 1),
    "tau": _number(0, 1, low_open=True), "clip_range": _number(0, math.inf, low_open=True),
    "ent_coef": _number(0, math.inf), "action_noise": _number(0, math.inf),
    "normalize": ((lambda v: isinstance(v, bool)), "True or False"),
    "policy_kwargs": ((lambda v: isinstance(v, dict)), "a dict, e.g. {'net_arch': [64, 64]}"),
}


def check_hyperparameters(agent: str, params: dict[str, Any], changed: dict[str, Any]) -> None:
    """Refuse a hyperparameter `agent` does not have (`changed`: the run's changes), or a value out
    of its range, naming it and what is expected."""
    unknown = sorted(set(changed) - set(params_of(agent)))
    if unknown:
        raise ValueError(f"--sb3 {', '.join(unknown)}: not a hyperparameter of {agent}; valid: "
                         f"{', '.join(sorted(params_of(agent)))}")
    for name, value in params.items():
        ok, expected = HYPERPARAMETER_CHECKS.get(name, (lambda v: True, ""))
        if not ok(value):
            raise ValueError(f"--sb3 {name}={value!r}: expected {expected}")
    if params.get("policy_kwargs", {}).get("net_arch") is not None:
        arch = params["policy_kwargs"]["net_arch"]
        if not (isinstance(arch, list) and arch and all(_integer(1)[0](h) for h in arch)):
            raise ValueError(f"--sb3 policy_kwargs: net_arch must be a list of positive layer sizes, got {arch!r}")


def params_of(agent: str) -> set[str]:
    """The hyperparameters a run of `agent` may change: chaosgym's presets and the SB3 class's own."""
    own = set(inspect.signature(ALGORITHMS[agent]).parameters) - {"policy", "env", "seed", "device", "_init_setup_model"}
    return own | set(SB3_DEFAULTS[agent])


def hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The agent's defaults, the task's presets, the run's changes (checked: `check_hyperparameters`);
    replay sizes never exceed the budget."""
    params = {**sb3_hyperparameters(config.task, config.agent), **config.sb3}
    check_hyperparameters(config.agent, params, config.sb3)
    if "buffer_size" in params:
        # a buffer larger than the run only costs memory and checkpoint size
        params["buffer_size"] = min(params["buffer_size"], config.env_steps)
        params["learning_starts"] = min(params["learning_starts"], config.env_steps // 10)
    return params


class MetricsCSV(KVWriter):
    """SB3 logger output appending the run's metrics rows."""

    def __init__(self, run: Run, clock, update: int = 0):
        self.run, self.clock, self.update = run, clock, update

    def write(self, key_values: dict[str, Any], key_excluded, step: int = 0) -> None:
        self.update = int(key_values.get("train/n_updates", self.update))
        loss = key_values.get("train/loss", key_values.get("train/actor_loss", ""))
        self.run.append_metrics([{
            "update": self.update, "env_steps": step, "wall_time": self.clock(), "loss": loss,
            "eval_score": key_values.get("eval/mean_return", ""),
            "eval_objective": key_values.get("eval/mean_objective", ""), "skipped_updates": 0}])

    def close(self) -> None:
        pass


def _to_bytes(save) -> bytes:
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


_LAST = ("_last_obs", "_last_episode_starts", "_last_original_obs")
_MONITOR = ("episode_returns", "episode_lengths", "episode_count")


def continuation(model: BaseAlgorithm) -> dict:
    """What `learn()` goes on from that the model's own save leaves out, as SB3's `load` resets the
    environments and re-seeds torch, numpy, `random` and the action space with the run's seed:
    those RNGs' states (PPO's minibatches, the policy's action samples, SAC/TD3's replay samples,
    exploration noise and warm-up actions), the last observations, the environments' states
    (`ChaosSB3VecEnv.get_state`), VecMonitor's episode counters and VecNormalize's running return.

    The model must be on a (wrapped) `ChaosSB3VecEnv`, between two rollouts. The result is a copy.
    """
    env = model.get_env()
    monitor, vec_normalize = unwrap_vec_wrapper(env, VecMonitor), model.get_vec_normalize_env()
    return copy.deepcopy({
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "action_space": model.action_space.np_random.bit_generator.state,
        "last": {name: getattr(model, name) for name in _LAST},
        "vec_env": env.unwrapped.get_state(),
        "monitor": None if monitor is None else {name: getattr(monitor, name) for name in _MONITOR},
        "returns": None if vec_normalize is None else vec_normalize.returns})


def restore_continuation(model: BaseAlgorithm, state: dict) -> None:
    """Put a `continuation` back into `model` (loaded on a twin of the saved run's env), so that
    `learn(reset_num_timesteps=False)` neither resets the environments nor restarts any RNG."""
    env = model.get_env()
    monitor, vec_normalize = unwrap_vec_wrapper(env, VecMonitor), model.get_vec_normalize_env()
    if (monitor is None) != (state["monitor"] is None) or (vec_normalize is None) != (state["returns"] is None):
        raise CheckpointError("its continuation is of differently wrapped environments")
    env.unwrapped.set_state(state["vec_env"])
    for name, value in state["monitor"].items() if monitor is not None else ():
        setattr(monitor, name, value)
    if vec_normalize is not None:
        vec_normalize.returns = state["returns"]
    for name, value in state["last"].items():
        setattr(model, name, value)
    model.action_space.np_random.bit_generator.state = state["action_space"]
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])


def encode_checkpoint(config: TrainConfig, model: BaseAlgorithm, progress: dict) -> bytes:
    """Model, VecNormalize statistics, replay buffer, continuation and progress in one zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("model.zip", _to_bytes(model.save))
        z.writestr("continuation.pkl", pickle.dumps(continuation(model)))
        if model.get_vec_normalize_env() is not None:
            z.writestr("vecnormalize.pkl", pickle.dumps(model.get_vec_normalize_env()))
        if isinstance(model, OffPolicyAlgorithm):
            z.writestr("replay_buffer.pkl", _to_bytes(model.save_replay_buffer))
        z.writestr("progress.json", json.dumps({**progress, "config": config.identity()}))
    return buffer.getvalue()


def decode_checkpoint(payload: bytes, config: TrainConfig) -> tuple[bytes, dict]:
    """`(payload, progress)` of a readable checkpoint of `config`'s run; `CheckpointError` otherwise."""
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        if z.testzip() is not None or "model.zip" not in z.namelist():
            raise CheckpointError("not a whole SB3 checkpoint")
        progress = json.loads(z.read("progress.json"))
    if progress.get("config") != config.identity():
        raise CheckpointError("it is a checkpoint of another config")
    return payload, progress


def load_model(payload: bytes, agent: str, venv: VecEnv | None,
               resume: bool = False) -> tuple[BaseAlgorithm, VecNormalize | None]:
    """A checkpoint's model (on `venv`, wrapped in the saved VecNormalize, when given) and that VecNormalize.

    With `resume`, the model also gets the checkpoint's continuation (`restore_continuation`; `venv`
    must be a twin of the saved run's, VecMonitor included); a checkpoint written before
    continuations existed warns that the environments start new episodes and the RNGs start over.
    """
    if resume and venv is None:
        raise ValueError("resuming a model needs the environments to continue on (venv)")
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        names = z.namelist()
        vec_normalize = _vec_normalize(z, venv) if "vecnormalize.pkl" in names else None
        env = vec_normalize if venv is not None and vec_normalize is not None else venv
        model = ALGORITHMS[agent].load(io.BytesIO(z.read("model.zip")), env=env, device="cpu")
        if venv is not None and "replay_buffer.pkl" in names:
            model.load_replay_buffer(io.BytesIO(z.read("replay_buffer.pkl")))
        if resume and "continuation.pkl" in names:
            restore_continuation(model, pickle.loads(z.read("continuation.pkl")))
        elif resume:
            warnings.warn("this checkpoint predates exact SB3 resume (no continuation.pkl): the environments "
                          "start new episodes and the RNGs restart from the seed", stacklevel=2)
    return model, vec_normalize


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


def load_policy(run: Run | Path | str):
    """The deterministic policy of an SB3 run folder's newest readable checkpoint."""
    run = run if isinstance(run, Run) else Run(run)
    payload, _ = run.load_checkpoint(lambda b: decode_checkpoint(b, run.config))
    return policy_fn(*load_model(payload, run.config.agent, None))


class TrainingMonitor(BaseCallback):
    """Progress bar, training clock, and evaluation + checkpoint every `eval_every` env steps.

    Evaluations happen when a rollout starts, that is after the updates on every step collected so
    far, so a checkpoint loses no collected experience (PPO evaluates every whole rollout).
    """

    def __init__(self, run: Run, eval_every: int, progress: dict, show_progress: bool,
                 time_budget: float | None = None):
        super().__init__()
        self.run, self.config = run, run.config
        self.eval_every, self.progress, self.show_progress = eval_every, progress, show_progress
        self.time_budget = time_budget
        self.next_eval = 0 if progress["env_steps"] == 0 else self._after(progress["env_steps"])
        self.next_eval_time = next_timed_evaluation(progress["wall_time"], time_budget)
        self.last = {"eval_score": math.nan, "eval_objective": math.nan}

    def _after(self, env_steps: int) -> int:
        return (env_steps // self.eval_every + 1) * self.eval_every

    def wall_time(self) -> float:
        now = self.paused_at if self.paused_at is not None else time.perf_counter()
        return self.previous_wall_time + now - self.started

    def _on_training_start(self) -> None:
        total = self.locals["total_timesteps"]
        self.bar = tqdm(total=total, initial=self.num_timesteps, disable=not self.show_progress,
                        desc=f"{type(self.model).__name__} {self.config.task}", unit="step")
        self.previous_wall_time, self.started, self.paused_at = self.progress["wall_time"], time.perf_counter(), None

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next_eval or self.wall_time() >= self.next_eval_time:
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
        result = evaluate(policy_fn(self.model), self.config.task, self.config.task_kwargs,
                          num_episodes=self.config.eval_episodes, seed=self.config.eval_seed)
        self.last = {"eval_score": result["mean_return"], "eval_objective": result["mean_objective"]}
        self.logger.record("eval/mean_return", result["mean_return"])
        self.logger.record("eval/mean_objective", result["mean_objective"])
        self.logger.dump(self.num_timesteps)
        self.bar.set_postfix(eval=f"{result['mean_return']:.4g}")
        self.progress.update(env_steps=self.num_timesteps, wall_time=self.wall_time())
        self.run.save_checkpoint(encode_checkpoint(self.config, self.model, self.progress))
        self.next_eval = self._after(self.num_timesteps)
        self.next_eval_time = next_timed_evaluation(self.progress["wall_time"], self.time_budget)
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


def train_sb3(config: TrainConfig, out: Path | str, resume: bool = False, progress: bool = True,
              time_budget: float | None = None, num_envs: int | None = None,
              eval_every: int | None = None, announce: bool | None = None) -> dict:
    """Train `config`'s SB3 agent for `config.env_steps` env steps in total (resumed ones included;
    PPO ends on a whole rollout, so it may overshoot by less than one); return the final progress
    with the last evaluation (`eval_score`, `eval_objective`).

    `eval_every` (default: a tenth of the budget) env steps between evaluations and checkpoints.
    With `resume=True` and a checkpoint in `out`, training continues from it with the run's saved
    hyperparameters, exactly as the uninterrupted run went on (the environments mid-episode, every
    RNG and counter where it was; see `continuation`); metrics rows written after that checkpoint
    are dropped. A larger `env_steps` extends a finished run. With a `time_budget`
    (seconds of training wall-clock), training also stops once that much time is spent, within a
    rollout; resuming such a run goes on as SB3's next `learn()` in the same process would (PPO's
    unfinished rollout is dropped). The compile of the batched env is announced (`announce`; by
    default when the progress bar is shown).
    """
    if config.agent not in ALGORITHMS:
        raise ValueError(f"{config.agent} is not an SB3 agent; valid: {', '.join(ALGORITHMS)}")
    if config.env_steps is None:
        raise ValueError(f"{config.agent} needs env_steps (--env-steps), its budget in simulated env steps")
    if eval_every is not None and eval_every <= 0:
        raise ValueError(f"eval_every must be a positive number of env steps, got {eval_every!r}")
    run, checkpoint = Run.open(out, config, resume, lambda b: decode_checkpoint(b, config))
    with run:
        return _train_sb3(run, checkpoint, progress, time_budget, num_envs,
                          eval_every or max(1, config.env_steps // 10), progress if announce is None else announce)


def _train_sb3(run: Run, checkpoint, show_progress, time_budget, num_envs, eval_every, announce) -> dict:
    config = run.config
    if checkpoint is not None:
        params = checkpoint[1]["hyperparameters"]  # a resumed run keeps its own, whatever the new budget
    else:
        params = hyperparameters(config)
        if num_envs is not None:
            params["num_envs"] = num_envs
    start = time.perf_counter()
    with announce_compile(f"the batched MJX env of {config.task} for {config.agent}", typical_s=ENV_COMPILE_S,
                          enabled=announce):
        venv = VecMonitor(make_compiled_vec_env(config.task, config.task_kwargs, params["num_envs"], config.seed))
    compile_time = time.perf_counter() - start
    if checkpoint is not None:
        payload, state = checkpoint
        model = load_model(payload, config.agent, venv, resume=True)[0]
        run.resume_at(lambda row: int(row["env_steps"]) <= state["env_steps"])
        rows = run.metrics()
        update = int(rows[-1]["update"]) if rows else 0
    else:
        model = _new_model(config.agent, venv, params, config.seed)
        state = {"env_steps": 0, "wall_time": 0.0, "compile_time": 0.0, "hyperparameters": params}
        run.start()
        update = 0
    state.pop("config", None)
    state["compile_time"] += compile_time

    monitor = TrainingMonitor(run, eval_every, state, show_progress, time_budget)
    model.set_logger(Logger(folder=None, output_formats=[MetricsCSV(run, monitor.wall_time, update)]))
    # One torch thread: SB3's small networks gain nothing from more, and spinning torch threads
    # fight XLA's for the cores (PPO on the cart pole ran 14-40x slower with 2 threads on 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.learn(total_timesteps=config.env_steps - model.num_timesteps, callback=monitor,
                    reset_num_timesteps=False, log_interval=1)
    finally:
        torch.set_num_threads(threads)
        venv.close()
    if math.isnan(monitor.last["eval_score"]):  # resumed at the end: nothing left to evaluate
        last = run.evaluated_metrics()[-1]
        monitor.last = {k: float(last[k]) for k in ("eval_score", "eval_objective")}
    return {**state, **monitor.last}


# SB3's own names for the settings it shares with the gradient agents
SHARED_SETTINGS = {"learning_rate": "learning_rate", "batch_size": "batch_size", "hidden": "policy_kwargs"}


class SB3Trainer:
    """The `chaosgym.agents.registry.Trainer` of PPO, SAC and TD3."""

    def validate(self, config: TrainConfig) -> None:
        hyperparameters(config)  # refuses a hyperparameter SB3 would reject or misread

    def flag_changes(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The shared settings given (checked as a gradient agent's would be) become SB3 hyperparameters."""
        TrainConfig(**{k: changes[k] for k in SHARED_SETTINGS if k in changes})
        sb3 = dict(changes.get("sb3", {}))
        for name, hyperparameter in SHARED_SETTINGS.items():
            if name in changes:
                sb3[hyperparameter] = {"net_arch": list(changes[name])} if name == "hidden" else changes[name]
        changes = {k: v for k, v in changes.items() if k not in SHARED_SETTINGS}
        return {**changes, "sb3": sb3} if sb3 else changes

    def train(self, config: TrainConfig, out: Path | str, *, resume: bool = False, progress: bool = True,
              time_budget: float | None = None, announce: bool | None = None) -> dict:
        return train_sb3(config, out, resume=resume, progress=progress, time_budget=time_budget, announce=announce)

    def policy(self, run: Run):
        return load_policy(run)


TRAINER = SB3Trainer()
