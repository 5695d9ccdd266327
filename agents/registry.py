"""Every agent `chaosgym train` and `compare` know, by name: `AGENTS`, name -> `Agent`.

An `Agent` states the facts a command needs before it trains anything: the settings the agent
reads (the flags it accepts), how its budget is counted, how many rollouts an update simulates,
what a run of it holds in memory, the task presets it starts from, and its checkpoint's file. Its
`trainer` names the object that trains and acts (`Trainer`), imported only when it is asked for,
so that listing agents, building flags and checking a config never import JAX, torch or SB3.

Adding an agent is one module with a `TRAINER` and one entry here: nothing else compares names.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# the window along carried trajectories of apg and shac (Brax's APG and SHAC use 32)
CARRIED_WINDOW = 32
FLOAT_BYTES = 4


class Trainer(Protocol):
    """What trains an agent and turns a run folder back into a policy (`Agent.load()`)."""

    def validate(self, config) -> None:
        """Refuse a config the agent cannot train (one clear error), before any folder is written."""

    def flag_changes(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The config changes that the command-line settings `changes` (paths) mean for this agent."""

    def train(self, config, out: Path | str, *, resume: bool = False, progress: bool = True,
              time_budget: float | None = None, announce: bool | None = None) -> dict:
        """Train (or resume) `config`'s run in `out`; the final progress, with at least `env_steps`,
        `wall_time`, `compile_time` and the last evaluation's `eval_score` and `eval_objective`."""

    def policy(self, run) -> Callable:
        """The deterministic numpy policy `obs -> action` of a run folder's newest readable checkpoint."""


# ---- settings each kind of agent reads (paths of TrainConfig) ---------------------------------

RUN_SETTINGS = frozenset({"task_kwargs", "seed", "batch_size", "learning_rate", "hidden", "eval_episodes",
                          "eval_seed"})
UPDATE_SETTINGS = RUN_SETTINGS | {"updates", "env_steps", "eval_every", "checkpoint_every", "estimator.horizon"}
ESTIMATOR_SETTINGS = UPDATE_SETTINGS | {"policy", "estimator.objective", "estimator.clip_norm",
                                        "estimator.clip_value"}
ESTIMATOR_OWN = {"full": {"estimator.remat"}, "modified": {"estimator.remat"}, "stopped": {"estimator.remat"},
                 "combined": {"estimator.remat"}, "truncated": {"estimator.remat", "estimator.truncation"},
                 "es": {"estimator.es_sigma", "estimator.es_pairs", "estimator.es_rank_shaping"}}


# ---- what a run holds in memory, in bytes (lower bounds) ---------------------------------------

def _tape(config, sizes: tuple[int, ...], step_bytes: int, rollouts: int) -> dict[str, int]:
    """The rollout the backward pass keeps: a state and the network's activations per env and step
    (about sqrt(horizon) steps with remat)."""
    horizon = config.estimator.horizon
    kept = math.isqrt(horizon) + 1 if config.estimator.remat else horizon
    return {"rollout tape": rollouts * config.batch_size * kept * step_bytes}


def _forward_rollouts(config, sizes: tuple[int, ...], step_bytes: int, rollouts: int) -> dict[str, int]:
    """Rollouts that are only run forward (ES): their states side by side, no tape."""
    return {"rollouts": rollouts * config.batch_size * step_bytes}


def _minibatch(config, sizes: tuple[int, ...], step_bytes: int, rollouts: int) -> dict[str, int]:
    return {"minibatch": config.batch_size * (sum(sizes) + sizes[0]) * FLOAT_BYTES}


# ---- the registry -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Agent:
    """One trainable agent: its facts, and where its `Trainer` lives."""

    name: str
    trainer: str  # "module:attribute" of its Trainer
    summary: str
    reads: frozenset[str]  # the TrainConfig settings it reads; any other given is refused
    budget: str = "updates"  # "updates" (env_steps convert to updates) or "env_steps" (the only budget)
    rollouts: Callable[[Any], int] = lambda config: 1  # rollouts of batch_size x horizon steps per update
    presets: Callable[[Any], dict] = lambda preset: {"learning_rate": preset.learning_rate,
                                                     "estimator.horizon": preset.horizon}
    memory: Callable[..., dict[str, int]] = _tape
    estimator: bool = False  # the agent is the estimator of `chaosgym.functional.gradients` of its name
    checkpoint_suffix: str = ".pkl"
    carries_state: bool = False  # its envs carry their trajectories from update to update
    metrics: tuple[str, ...] = ()  # its own diagnostics, written to metrics.csv after the common columns
    hidden: Callable[[Any], tuple[int, ...]] = lambda config: config.hidden  # its network's hidden layers

    def load(self) -> Trainer:
        module, _, attribute = self.trainer.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def steps_per_update(self, config) -> int:
        """Simulated env steps per update."""
        if self.budget != "updates":
            raise ValueError(f"{self.name} counts its budget in env steps, not updates")
        return self.rollouts(config) * config.batch_size * config.estimator.horizon

    def memory_needed(self, config, observation_size: int, action_size: int, state_bytes: int) -> dict[str, int]:
        """Lower bounds, in bytes, of what a run holds at once, by part: the policy with its gradient
        and Adam's two moments, the agent's own rollouts or minibatch, the evaluation's states."""
        hidden = self.hidden(config)
        sizes = (observation_size, *hidden, action_size)
        weights = sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))
        step = state_bytes + sum(hidden) * FLOAT_BYTES
        rollouts = self.rollouts(config) if self.budget == "updates" else 1
        return {"policy and optimiser": 4 * weights * FLOAT_BYTES, "evaluation": config.eval_episodes * step,
                **self.memory(config, sizes, step, rollouts)}


def _estimator(name: str, summary: str, **facts) -> Agent:
    return Agent(name, "chaosgym.agents.train:ESTIMATOR", summary, ESTIMATOR_SETTINGS | ESTIMATOR_OWN[name],
                 estimator=True, **facts)


CARRIED_METRICS = ("mean_reward", "episodes_done")


def _carried(name: str, module: str, summary: str, window: int = CARRIED_WINDOW,
             metrics: tuple[str, ...] = ()) -> Agent:
    return Agent(name, f"{module}:TRAINER", summary, UPDATE_SETTINGS, carries_state=True,
                 presets=lambda preset: {"learning_rate": preset.learning_rate, "estimator.horizon": window},
                 metrics=CARRIED_METRICS + metrics)


def _sb3_hidden(config) -> tuple[int, ...]:
    """SB3's network as --hidden (or --sb3 policy_kwargs) set it: `net_arch` (a list, or per head)."""
    arch = config.sb3.get("policy_kwargs", {}).get("net_arch")
    if isinstance(arch, dict):  # one list per head: the widest head
        arch = max(arch.values(), key=sum, default=None)
    return tuple(arch) if isinstance(arch, (list, tuple)) and all(isinstance(h, int) for h in arch) else config.hidden


def _sb3(name: str, summary: str) -> Agent:
    return Agent(name, "chaosgym.agents.sb3:TRAINER", summary, RUN_SETTINGS | {"env_steps", "sb3"},
                 budget="env_steps", memory=_minibatch, checkpoint_suffix=".zip", hidden=_sb3_hidden)


AGENTS: Mapping[str, Agent] = {agent.name: agent for agent in (
    _estimator("full", "backpropagation through the whole rollout"),
    _estimator("truncated", "backpropagation through windows of --truncation steps",
               presets=lambda preset: {"learning_rate": preset.learning_rate, "estimator.horizon": preset.horizon,
                                       "estimator.truncation": preset.truncation}),
    _estimator("modified", "Stable BPTT's modified flow: the state's path through the policy cut"),
    _estimator("stopped", "the sum of one-step gradients: every state a constant"),
    _estimator("combined", "per parameter, the full gradient where it agrees with the modified one",
               rollouts=lambda config: 2),
    _estimator("es", "antithetic evolution strategies: no gradient through the simulator",
               rollouts=lambda config: 2 * config.estimator.es_pairs, memory=_forward_rollouts),
    _carried("apg", "chaosgym.agents.apg", "analytic policy gradients along carried trajectories (Brax APG)"),
    _carried("shac", "chaosgym.agents.shac", "short-horizon actor-critic (Xu et al., 2022)",
             metrics=("value_loss_before", "value_loss")),
    # its window is the published maximum horizon (DiffRL's ahac.yaml: 64)
    _carried("ahac", "chaosgym.agents.ahac", "adaptive-horizon actor-critic (Georgiev et al., 2024)", window=64,
             metrics=("horizon", "next_horizon", "dual", "stiffness", "horizon_cuts", "value_loss_before",
                      "value_loss", "critic_epochs")),
    _sb3("ppo", "Stable-Baselines3 PPO"),
    _sb3("sac", "Stable-Baselines3 SAC"),
    _sb3("td3", "Stable-Baselines3 TD3"),
)}

__all__ = ["AGENTS", "Agent", "CARRIED_WINDOW", "Trainer"]
