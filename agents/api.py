"""Training from Python, with the settings of the command line (one source: `chaosgym.agents.settings`).

    from chaosgym.agents import train

    result = train("ChaosCartPole-v0", "apg", "runs/cp-apg", env_steps=100_000, num_envs=16,
                   progress_fn=lambda steps, metrics: print(steps, metrics["eval_score"]))
    result.policy(obs)      # the trained deterministic policy, numpy in and out
    result.run              # the run folder: config.json, metrics.csv, checkpoint

Keyword arguments beyond the run's (seed, budget, evaluation) are the agent's own settings, by the
names its flags have (`chaosgym train --agent apg --help`): `num_envs=64`, `horizon=50` for an
estimator's `estimator.horizon`. `progress_fn(env_steps, metrics)` is called after every
evaluation, as Brax's `train(progress_fn=...)` is; `tensorboard=FOLDER` logs the same metrics for
TensorBoard (needs `pip install chaosgym[tensorboard]`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

import chaosgym
from chaosgym import flags
from chaosgym.agents.config import TrainConfig, check_memory, continuing, for_task
from chaosgym.agents.registry import AGENTS
from chaosgym.agents.run import Run
from chaosgym.validation import UserError


@dataclass(frozen=True)
class TrainResult:
    """What a training run gave: its deterministic numpy policy, its folder, its final progress
    (`env_steps`, `wall_time`, `compile_time`, `eval_score`, `eval_objective`, ...) and its config."""

    policy: Callable
    run: Path
    final: dict
    config: TrainConfig


def settings_paths(agent: str, given: dict[str, Any]) -> dict[str, Any]:
    """`given` keyword settings (flag names, `horizon` for `estimator.horizon`) as the config's paths."""
    cls = AGENTS[agent].settings_class()
    by_name = {path.rpartition(".")[2]: path for path, _, _ in flags.fields(cls)}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise UserError(f"{agent} has no setting(s) {', '.join(unknown)}; its settings: {', '.join(sorted(by_name))}")
    return {by_name[name]: value for name, value in given.items()}


def train(task: str, agent: str, out: Path | str | None = None, *, seed: int = 0, updates: int | None = None,
          env_steps: int | None = None, task_kwargs: dict | None = None, eval_every: int | None = None,
          eval_episodes: int | None = None, eval_seed: int | None = None, checkpoint_every: int | None = None,
          resume: bool = False, progress: bool = True, time_budget: float | None = None,
          progress_fn: Callable[[int, dict], None] | None = None, tensorboard: Path | str | None = None,
          **settings) -> TrainResult:
    """Train `agent` on `task` into the run folder `out` (default: runs/<task>-<agent>-seed<seed>-<time>)
    and return its policy and folder. The settings are the command line's (see the module)."""
    run = {"seed": seed, "updates": updates, "env_steps": env_steps, "task_kwargs": task_kwargs,
           "eval_every": eval_every, "eval_episodes": eval_episodes, "eval_seed": eval_seed,
           "checkpoint_every": checkpoint_every}
    config = for_task(task, agent, **{k: v for k, v in run.items() if v is not None},
                      **settings_paths(agent, settings))
    return train_config(config, out, resume=resume, progress=progress, time_budget=time_budget,
                        progress_fn=progress_fn, tensorboard=tensorboard)


def train_config(config: TrainConfig, out: Path | str | None = None, *, resume: bool = False, progress: bool = True,
                 time_budget: float | None = None, announce: bool | None = None,
                 progress_fn: Callable[[int, dict], None] | None = None,
                 tensorboard: Path | str | None = None) -> TrainResult:
    """Train a built config (`chaosgym.agents.config.for_task`); see `train`."""
    if out is None:
        out = Path("runs") / f"{config.task.replace(':', '-')}-{config.agent}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume and (Path(out) / "config.json").exists():
        config = continuing(config, Run(out).config)
    chaosgym.make(config.task, **config.task_kwargs)  # unknown or invalid task options fail here, clearly
    trainer = config.spec.load()
    trainer.validate(config)
    check_fits(config)
    report = _with_tensorboard(progress_fn, tensorboard, config)
    try:
        final = trainer.train(config, out, resume=resume, progress=progress, time_budget=time_budget,
                              announce=announce, progress_fn=report)
    finally:
        if report is not None and hasattr(report, "close"):
            report.close()
    return TrainResult(Run(out).policy(), Path(out), final, config)


def load_policy(run: Path | str) -> Callable:
    """The deterministic numpy policy `obs -> action` of a run folder's newest readable checkpoint."""
    return Run(run).policy()


def jax_policy(run: Path | str) -> tuple[Callable, Any, TrainConfig]:
    """`(apply(params, obs) -> action, params, config)` of a run folder's newest readable checkpoint:
    the run's own deterministic policy, whatever its agent, as a differentiable JAX function."""
    folder = Path(run)
    if folder.is_file():  # its checkpoint named: the folder is what holds the config
        folder = folder.parent
    saved = Run(folder)
    if saved.config is None:
        raise UserError(f"{folder} is not a run folder of chaosgym train or compare (it has no config.json)")
    apply, params = saved.config.spec.load().jax_policy(saved)
    return apply, params, saved.config


@functools.lru_cache(maxsize=None)
def state_bytes(env: chaosgym.Env) -> int:
    """Bytes of one env state (traced once per env: compare checks every run of a task against it)."""
    state = jax.eval_shape(env.reset, jax.random.key(0))
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))


def check_fits(config: TrainConfig) -> None:
    """Refuse a run whose sizes need more memory than this machine has (`config.check_memory`)."""
    env = chaosgym.make(config.task, **config.task_kwargs)
    check_memory(config, env.observation_size, env.action_size, state_bytes(env))


class _TensorBoard:
    """`progress_fn` that writes every metric as a TensorBoard scalar at its env step, then calls `then`."""

    def __init__(self, folder: Path | str, then: Callable[[int, dict], None] | None, config: TrainConfig):
        try:
            from tensorboardX import SummaryWriter  # TensorBoard's event files without TensorFlow or torch
        except ImportError as error:
            raise UserError(f"tensorboard logging needs tensorboardX: pip install 'chaosgym[tensorboard]' "
                            f"({error})") from None
        self.writer, self.then = SummaryWriter(str(folder)), then
        self.writer.add_text("config", str(config.to_json()))

    def __call__(self, env_steps: int, metrics: dict) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, env_steps)
        self.writer.flush()
        if self.then is not None:
            self.then(env_steps, metrics)

    def close(self) -> None:
        self.writer.close()


def _with_tensorboard(progress_fn, tensorboard, config):
    return progress_fn if tensorboard is None else _TensorBoard(tensorboard, progress_fn, config)
