"""Model-free baselines: Stable-Baselines3 PPO, SAC and TD3 on chaosgym's batched MJX envs.

`TRAINER` trains one agent on one task into a run folder (`chaosgym.agents.run.Run`: the same
config.json schema, metrics.csv columns and checkpoint rules as the gradient agents):

* settings: the agent's (`chaosgym.agents.settings.PPOSettings`, `SACSettings`, `TD3Settings`),
  from its defaults, the task's presets (RL Zoo's on the Ant) and the run's changes; `extra` passes
  any other keyword of the SB3 class. The networks run on `device` ("auto": the GPU where torch
  sees one), the envs on MJX wherever JAX runs. The observations cross the host between them:
  SB3's VecEnv contract and rollout buffer are numpy (a torch agent of your own can take JAX's
  arrays without a copy: `chaosgym.faces.device_vector`).
* metrics.csv: one row per SB3 log dump. `update` = SB3's `train/n_updates` (PPO counts epochs,
  SAC/TD3 gradient steps); `loss` = PPO's total loss, the actor loss of SAC/TD3; `eval_score` the
  mean episode return on `chaosgym.evaluation.evaluate` (empty on rows without an evaluation),
  `eval_objective` the task objective there;
* checkpoint.zip: the networks' and optimisers' tensors (`torch.load(weights_only=True)`), and as
  arrays and JSON the VecNormalize statistics, (SAC/TD3) the replay buffer, and the continuation
  (see `continuation`), with the progress, at every evaluation and at the end. No pickle: reading it
  runs nothing. A resumed run continues bit for bit as the uninterrupted one would.

Training stops at the budget exactly: a rollout the budget ends inside is collected up to it and
not trained on (PPO), so `env_steps` is the budget. `wall_time` counts training only: compiling the
env, evaluating and checkpointing are left out.
"""

from __future__ import annotations

import inspect
import io
import json
import pickle  # its UnpicklingError only: torch's weights-only loader raises it
import math
import random
import time
import warnings
import zipfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize, unwrap_vec_wrapper
from tqdm.auto import tqdm

from chaosgym.agents import checkpoints
from chaosgym.agents.announce import announce_compile
from chaosgym.agents.config import TrainConfig
from chaosgym.agents.run import CheckpointError, Run, next_timed_evaluation
from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv
from chaosgym.agents.settings import OffPolicySettings, PPOSettings, SB3Settings, TD3Settings
from chaosgym.evaluation import evaluate
from chaosgym.measured import MEASURED
from chaosgym.validation import UserError

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3}
ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU}
ENV_COMPILE_S = MEASURED["compile_sb3_env"].seconds  # typical seconds to compile a task's batched reset and step
FORMAT = "chaosgym-sb3/1"


def sb3_kwargs(settings: SB3Settings, env_steps: int) -> dict[str, Any]:
    """The keyword arguments of the SB3 class for these settings; replay sizes never exceed the budget."""
    policy_kwargs = {"net_arch": list(settings.hidden), "activation_fn": ACTIVATIONS[settings.activation]}
    kwargs: dict[str, Any] = {"learning_rate": settings.learning_rate, "gamma": settings.gamma}
    if isinstance(settings, PPOSettings):
        policy_kwargs |= {"log_std_init": settings.log_std_init, "ortho_init": settings.ortho_init}
        kwargs |= {name: getattr(settings, name) for name in ("n_steps", "batch_size", "n_epochs", "gae_lambda",
                                                              "clip_range", "ent_coef", "vf_coef", "max_grad_norm")}
    elif isinstance(settings, OffPolicySettings):
        # the buffer at its size (a checkpoint holds only its filled rows); learning never waits
        # for more than a tenth of the run
        kwargs |= {"buffer_size": settings.buffer_size,
                   "learning_starts": min(settings.learning_starts, env_steps // 10),
                   **{name: getattr(settings, name) for name in ("batch_size", "tau", "train_freq", "gradient_steps")}}
    extra = dict(settings.extra)
    policy_kwargs |= extra.pop("policy_kwargs", {})
    return {**kwargs, "policy_kwargs": policy_kwargs, **extra}


def check_extra(agent: str, settings: SB3Settings) -> None:
    """Refuse an `extra` keyword the SB3 class does not take (SB3 itself checks few, and late)."""
    taken = set(inspect.signature(ALGORITHMS[agent]).parameters) - {"policy", "env", "seed", "device",
                                                                    "_init_setup_model"}
    unknown = sorted(set(settings.extra) - taken)
    if unknown:
        raise UserError(f"--extra {', '.join(unknown)}: not a keyword of SB3's {ALGORITHMS[agent].__name__}; "
                        f"valid: {', '.join(sorted(taken))}")


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


# ---- the continuation: what learn() goes on from that the model's tensors leave out ---------------

_LAST = ("_last_obs", "_last_episode_starts", "_last_original_obs")
_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_current_progress_remaining")
_MONITOR = ("episode_returns", "episode_lengths", "episode_count")


def continuation(model: BaseAlgorithm) -> dict:
    """What `learn()` goes on from beyond the networks, as plain data: the counters, the RNGs'
    states (PPO's minibatches, the policy's samples, SAC/TD3's replay samples, exploration noise and
    warm-up actions), the last observations, the environments' states (`ChaosSB3VecEnv.get_state`),
    VecMonitor's episode counters and VecNormalize's statistics and running return.

    The model must be on a (wrapped) `ChaosSB3VecEnv`, between two rollouts."""
    env = model.get_env()
    monitor, vec_normalize = unwrap_vec_wrapper(env, VecMonitor), model.get_vec_normalize_env()
    python_rng = random.getstate()
    state = {
        "counters": {name: getattr(model, name) for name in _COUNTERS},
        "rng": {"numpy": np.random.get_state(), "python": [python_rng[0], list(python_rng[1]), python_rng[2]]},
        "action_space": model.action_space.np_random.bit_generator.state,
        "last": {name: getattr(model, name) for name in _LAST},
        "vec_env": env.unwrapped.get_state(),
        "monitor": None if monitor is None else {name: getattr(monitor, name) for name in _MONITOR},
        "normalize": None if vec_normalize is None else {
            "obs_mean": vec_normalize.obs_rms.mean, "obs_var": vec_normalize.obs_rms.var,
            "obs_count": float(vec_normalize.obs_rms.count), "ret_mean": vec_normalize.ret_rms.mean,
            "ret_var": vec_normalize.ret_rms.var, "ret_count": float(vec_normalize.ret_rms.count),
            "returns": vec_normalize.returns}}
    if isinstance(model, OffPolicyAlgorithm):
        buffer = model.replay_buffer
        filled = buffer.buffer_size if buffer.full else buffer.pos
        state["replay"] = {"pos": buffer.pos, "full": buffer.full, "rows": {
            name: getattr(buffer, name)[:filled] for name in _REPLAY if getattr(buffer, name, None) is not None}}
    return state


_REPLAY = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def restore_continuation(model: BaseAlgorithm, state: dict) -> None:
    """Put a `continuation` back into `model` (built on a twin of the saved run's env), so that
    `learn(reset_num_timesteps=False)` neither resets the environments nor restarts any RNG."""
    env = model.get_env()
    monitor, vec_normalize = unwrap_vec_wrapper(env, VecMonitor), model.get_vec_normalize_env()
    if (monitor is None) != (state["monitor"] is None) or (vec_normalize is None) != (state["normalize"] is None):
        raise CheckpointError("its continuation is of differently wrapped environments")
    env.unwrapped.set_state(state["vec_env"])
    for name, value in (state["monitor"] or {}).items():
        setattr(monitor, name, value)
    if vec_normalize is not None:
        n = state["normalize"]
        vec_normalize.obs_rms.mean, vec_normalize.obs_rms.var, vec_normalize.obs_rms.count = (
            n["obs_mean"], n["obs_var"], n["obs_count"])
        vec_normalize.ret_rms.mean, vec_normalize.ret_rms.var, vec_normalize.ret_rms.count = (
            n["ret_mean"], n["ret_var"], n["ret_count"])
        vec_normalize.returns = n["returns"]
    for name, value in {**state["counters"], **state["last"]}.items():
        setattr(model, name, value)
    if "replay" in state:
        buffer, replay = model.replay_buffer, state["replay"]
        for name, rows in replay["rows"].items():
            if len(rows) > buffer.buffer_size:
                raise CheckpointError(f"its replay buffer holds {len(rows)} rows, more than this run's {buffer.buffer_size}")
            getattr(buffer, name)[:len(rows)] = rows
        buffer.pos, buffer.full = replay["pos"], replay["full"]
    model.action_space.np_random.bit_generator.state = state["action_space"]
    np.random.set_state(state["rng"]["numpy"])
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))


# ---- checkpoints ----------------------------------------------------------------------------------

def _torch_state(model: BaseAlgorithm) -> dict:
    """Every tensor of the model: networks and optimisers (`get_parameters`), its torch variables
    (SAC's log entropy coefficient) and torch's RNG."""
    _, variables = model._get_torch_save_params()
    return {"parameters": model.get_parameters(), "variables": {name: getattr(model, name) for name in variables or []},
            "rng": torch.get_rng_state()}


def encode_checkpoint(config: TrainConfig, model: BaseAlgorithm, progress: dict) -> bytes:
    """The model's tensors, its continuation and the progress in one zip; nothing pickled."""
    tensors = io.BytesIO()
    torch.save(_torch_state(model), tensors)
    text, arrays = checkpoints.encode_plain(continuation(model))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("tensors.pt", tensors.getvalue())
        z.writestr("continuation.npz", arrays)
        z.writestr("continuation.json", text)
        z.writestr("progress.json", json.dumps({"format": FORMAT, **progress, "config": config.identity()}))
    return buffer.getvalue()


def decode_checkpoint(payload: bytes, config: TrainConfig) -> dict:
    """A whole, readable checkpoint of `config`'s run: `{progress, tensors, continuation}`, every
    member read (with nothing that runs code); a `CheckpointError` otherwise, so that an unreadable
    newest checkpoint falls back to the previous one."""
    if payload[:1] == checkpoints.PICKLE_MAGIC or payload[:2] != b"PK":
        raise CheckpointError("not an SB3 checkpoint of chaosgym >= 0.2 (a zip of tensors and JSON)")
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            if z.testzip() is not None:
                raise CheckpointError("a member of the zip is damaged")
            names = set(z.namelist())
            if "progress.json" not in names or "tensors.pt" not in names:
                raise CheckpointError("it is a checkpoint of chaosgym < 0.2 (pickled members), which chaosgym no "
                                      "longer reads: they could run code" if "model.zip" in names
                                      else "not a whole SB3 checkpoint")
            progress = json.loads(z.read("progress.json"))
            if progress.pop("format", None) != FORMAT:
                raise CheckpointError(f"not a checkpoint of format {FORMAT}")
            checkpoints.check_identity(progress.pop("config", None), config)
            with warnings.catch_warnings():  # a foreign tensors.pt is refused below, in one line
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                tensors = torch.load(io.BytesIO(z.read("tensors.pt")), weights_only=True)
            state = checkpoints.decode_plain(z.read("continuation.json").decode(), z.read("continuation.npz"))
    except pickle.UnpicklingError:  # torch's weights-only loader refused something that is not plain tensors
        raise CheckpointError("its tensors.pt holds more than tensors (refused unread: it could run code)") from None
    except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError, EOFError, OSError) as error:
        if isinstance(error, CheckpointError):
            raise
        first = (str(error).strip().splitlines() or [""])[0]  # torch's messages run to many lines
        raise CheckpointError(f"cannot read it ({type(error).__name__}: {first})") from None
    return {"progress": progress, "tensors": tensors, "continuation": state}


def build_model(config: TrainConfig, venv: VecEnv) -> BaseAlgorithm:
    """A new model of `config`'s agent on `venv` (VecNormalize around it where the settings ask)."""
    settings = config.settings
    kwargs = sb3_kwargs(settings, config.env_steps)
    if settings.normalize:
        venv = VecNormalize(venv, gamma=settings.gamma)
    if isinstance(settings, TD3Settings) and settings.action_noise:
        size = venv.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(size), settings.action_noise * np.ones(size))
    return ALGORITHMS[config.agent]("MlpPolicy", venv, seed=config.seed, device=settings.device, **kwargs)


def load_model(checkpoint: dict, config: TrainConfig, venv: VecEnv, resume: bool = False) -> BaseAlgorithm:
    """The checkpoint's model on `venv` (a twin of the saved run's env; with `resume` it continues
    exactly where the saved run was, else only its networks and normalisation are restored)."""
    with warnings.catch_warnings():
        if not resume:  # a policy to act with, on fewer envs than it trained on: its rollout sizes are moot
            warnings.filterwarnings("ignore", message="You have specified a mini-batch size", category=UserWarning)
        model = build_model(config, venv)
    tensors = checkpoint["tensors"]
    model.set_parameters(tensors["parameters"], exact_match=True, device=model.device)
    for name, value in tensors["variables"].items():
        getattr(model, name).data.copy_(value.to(model.device))
    state = checkpoint["continuation"]
    if resume:
        restore_continuation(model, state)
        torch.set_rng_state(tensors["rng"])
    elif state["normalize"] is not None:  # a policy to act with: its observation statistics only
        vec_normalize = model.get_vec_normalize_env()
        n = state["normalize"]
        vec_normalize.obs_rms.mean, vec_normalize.obs_rms.var, vec_normalize.obs_rms.count = (
            n["obs_mean"], n["obs_var"], n["obs_count"])
    return model


def policy_fn(model: BaseAlgorithm):
    """The deterministic numpy policy `obs -> action` of a model, for `evaluate`: observations
    normalised by the model's VecNormalize (without updating it)."""
    vec_normalize = model.get_vec_normalize_env()

    def act(obs: np.ndarray) -> np.ndarray:
        if vec_normalize is not None:
            obs = vec_normalize.normalize_obs(obs)
        return model.predict(obs, deterministic=True)[0]

    return act


_JAX_ACTIVATIONS = {torch.nn.Tanh: "tanh", torch.nn.ReLU: "relu", torch.nn.ELU: "elu"}


def _layers(modules) -> list:
    """An SB3 network (nn.Sequential / nn.Linear pieces) as ("linear", w, b) and ("act", name) steps."""
    steps = []
    for module in modules:
        if isinstance(module, torch.nn.Sequential):
            steps += _layers(module)
        elif isinstance(module, torch.nn.Linear):
            steps.append(("linear", module.weight.detach().cpu().numpy().T, module.bias.detach().cpu().numpy()))
        elif type(module) in _JAX_ACTIVATIONS:
            steps.append(("act", _JAX_ACTIVATIONS[type(module)]))
        elif not isinstance(module, (torch.nn.Identity, torch.nn.Flatten)):
            raise UserError(f"cannot express SB3's {type(module).__name__} in JAX")
    return steps


def jax_policy_of(model: BaseAlgorithm) -> tuple[Callable, dict]:
    """`(apply(params, obs) -> action, params)`: the model's deterministic policy as a JAX function of
    its weights (differentiable, for `chaosgym diagnose`): VecNormalize's observation normalisation,
    the actor network, and the action as SB3 acts on a [-1, 1] box (PPO's mean clipped, SAC's tanh,
    TD3's network output)."""
    policy = model.policy
    if isinstance(model, PPO):
        steps, squash = _layers([policy.mlp_extractor.policy_net, policy.action_net]), "clip"
    elif isinstance(model, SAC):
        steps, squash = _layers([policy.actor.latent_pi, policy.actor.mu]), "tanh"
    else:
        steps, squash = _layers([policy.actor.mu]), "none"
    vec_normalize = model.get_vec_normalize_env()
    params = {"layers": [(w, b) for kind, *wb in steps if kind == "linear" for w, b in [wb]]}
    if vec_normalize is not None and vec_normalize.norm_obs:
        params["obs"] = (vec_normalize.obs_rms.mean.astype(np.float32),
                         np.sqrt(vec_normalize.obs_rms.var + vec_normalize.epsilon).astype(np.float32))
    clip_obs = float(vec_normalize.clip_obs) if vec_normalize is not None else math.inf
    activations = {"tanh": jnp.tanh, "relu": jax.nn.relu, "elu": jax.nn.elu}

    def apply(params, obs):
        x = obs
        if "obs" in params:
            mean, std = params["obs"]
            x = jnp.clip((x - mean) / std, -clip_obs, clip_obs)
        layers = iter(params["layers"])
        for step in steps:
            if step[0] == "linear":
                w, b = next(layers)
                x = x @ w + b
            else:
                x = activations[step[1]](x)
        return {"clip": lambda a: jnp.clip(a, -1.0, 1.0), "tanh": jnp.tanh, "none": lambda a: a}[squash](x)

    return apply, jax.tree.map(jnp.asarray, params)


def load_policy(run: Run | Path | str):
    """The deterministic policy of an SB3 run folder's newest readable checkpoint."""
    run = run if isinstance(run, Run) else Run(run)
    checkpoint = run.load_checkpoint(lambda b: decode_checkpoint(b, run.config))
    venv = ChaosSB3VecEnv(run.config.task, 1, **run.config.task_kwargs)
    return policy_fn(load_model(checkpoint, run.config, VecMonitor(venv)))


class TrainingMonitor(BaseCallback):
    """Progress bar, training clock, and evaluation + checkpoint every `eval_every` env steps.

    Evaluations happen when a rollout starts, that is after the updates on every step collected so
    far, so a checkpoint loses no collected experience (PPO evaluates every whole rollout).
    """

    def __init__(self, run: Run, eval_every: int, progress: dict, show_progress: bool,
                 time_budget: float | None = None, progress_fn=None):
        super().__init__()
        self.progress_fn = progress_fn
        self.run, self.config = run, run.config
        self.eval_every, self.progress, self.show_progress = eval_every, progress, show_progress
        self.time_budget = time_budget
        # a fresh run evaluates its untrained policy first; a resumed one has that row already
        self.next_eval = 0 if run.metrics() == [] else self._after(progress["env_steps"])
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
        out_of_time = self.time_budget is not None and self.wall_time() >= self.time_budget
        # PPO collects whole rollouts: at the budget it stops inside one, not trained on (SAC and TD3
        # stop there by themselves). SB3 returns before it keeps the step's observation: kept here,
        # so that a checkpoint continues from where the envs are.
        at_budget = (isinstance(self.model, OnPolicyAlgorithm) and self.num_timesteps >= self.config.env_steps
                     and self.locals["n_steps"] + 1 < self.locals["n_rollout_steps"])  # a rollout that ends here trains
        if at_budget or out_of_time:
            self.model._last_obs = self.locals["new_obs"]
            self.model._last_episode_starts = self.locals["dones"]
            if self.model.get_vec_normalize_env() is not None:
                self.model._last_original_obs = self.model.get_vec_normalize_env().get_original_obs()
            return False
        return True

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
        if self.progress_fn is not None:
            self.progress_fn(self.num_timesteps, dict(self.last))
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


def _refuse_float64() -> None:
    if jax.config.jax_enable_x64:
        raise UserError("SB3 agents train in float32 (torch's networks, SB3's buffers): unset JAX_ENABLE_X64 "
                        "(or jax_enable_x64) to train them")


class SB3Trainer:
    """The `chaosgym.agents.registry.Trainer` of PPO, SAC and TD3."""

    def validate(self, config: TrainConfig) -> None:
        _refuse_float64()
        check_extra(config.agent, config.settings)

    def train(self, config: TrainConfig, out: Path | str, *, resume: bool = False, progress: bool = True,
              time_budget: float | None = None, announce: bool | None = None, progress_fn=None,
              eval_every: int | None = None) -> dict:
        """Train `config`'s SB3 agent for `config.env_steps` env steps in total (resumed ones
        included); return the final progress with the last evaluation (`eval_score`, `eval_objective`).

        `eval_every` (default: a tenth of the budget) env steps between evaluations and checkpoints.
        With `resume=True` and a checkpoint in `out`, training continues from it exactly as the
        uninterrupted run went on (the environments mid-episode, every RNG and counter where it was;
        see `continuation`); metrics rows written after that checkpoint are dropped. A larger
        `env_steps` extends a finished run. With a `time_budget` (seconds of training wall-clock),
        training also stops once that much time is spent."""
        self.validate(config)
        if eval_every is not None and eval_every <= 0:
            raise UserError(f"eval_every must be a positive number of env steps, got {eval_every!r}")
        run, checkpoint = Run.open(out, config, resume, lambda b: decode_checkpoint(b, config))
        with run:
            return _train_sb3(run, checkpoint, progress, time_budget, eval_every or max(1, config.env_steps // 10),
                              progress if announce is None else announce, progress_fn)

    def policy(self, run: Run):
        return load_policy(run)

    def jax_policy(self, run: Run) -> tuple[Callable, Any]:
        """The run's deterministic policy as `(apply(params, obs), params)` in JAX (`jax_policy_of`)."""
        checkpoint = run.load_checkpoint(lambda b: decode_checkpoint(b, run.config))
        venv = ChaosSB3VecEnv(run.config.task, 1, **run.config.task_kwargs)
        return jax_policy_of(load_model(checkpoint, run.config, VecMonitor(venv)))


def _finished(checkpoint: dict | None, config: TrainConfig, time_budget: float | None) -> bool:
    if checkpoint is None:
        return False
    progress = checkpoint["progress"]
    return progress["env_steps"] >= config.env_steps or (time_budget is not None and
                                                         progress["wall_time"] >= time_budget)


def _train_sb3(run: Run, checkpoint, show_progress, time_budget, eval_every, announce, progress_fn) -> dict:
    config = run.config
    if checkpoint is not None and checkpoint["progress"]["env_steps"] > config.env_steps:
        raise UserError(f"{run.folder} has run {checkpoint['progress']['env_steps']:,} env steps; a budget of "
                        f"{config.env_steps:,} cannot undo them (give at least as many, or start a new run)")
    if _finished(checkpoint, config, time_budget):  # read back: no env to compile, nothing to add
        last = run.evaluated_metrics()[-1]
        return {**checkpoint["progress"], **{k: float(last[k]) for k in ("eval_score", "eval_objective")}}
    start = time.perf_counter()
    with announce_compile(f"the batched MJX env of {config.task} for {config.agent}", typical_s=ENV_COMPILE_S,
                          enabled=announce):
        venv = VecMonitor(make_compiled_vec_env(config.task, config.task_kwargs, config.settings.num_envs,
                                                config.seed))
    compile_time = time.perf_counter() - start
    if checkpoint is not None:
        state = checkpoint["progress"]
        model = load_model(checkpoint, config, venv, resume=True)
        run.resume_at(lambda row: int(row["env_steps"]) <= state["env_steps"])
        rows = run.metrics()
        update = int(rows[-1]["update"]) if rows else 0
    else:
        model = build_model(config, venv)
        state = {"env_steps": 0, "wall_time": 0.0, "compile_time": 0.0}
        run.start()
        update = 0
    state["compile_time"] += compile_time

    monitor = TrainingMonitor(run, eval_every, state, show_progress, time_budget, progress_fn)
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


TRAINER = SB3Trainer()
