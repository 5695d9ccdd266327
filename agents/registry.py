"""Every agent `chaosgym train` and `compare` know, by name: `AGENTS`, name -> `Agent`.

An `Agent` states the facts a command needs before it trains anything: its kind, its settings
class (the flags it takes), how its budget is counted, how many env steps an update simulates,
what a run of it holds in memory, its metrics columns and its checkpoint's file. Its `Trainer`
(what trains it and acts with it) is imported only when asked for (`Agent.load()`), so that
listing agents, building flags and checking a config never import JAX, torch or SB3.

The kinds, and where their trainer comes from:

* "estimator": a gradient estimator of `chaosgym.functional.settings.ESTIMATOR_SPECS`, trained by
  the loop (`chaosgym.agents.loop`) on the update of `chaosgym.agents.estimators`. Every estimator
  of that table is an agent, one registered later too.
* "carried": an algorithm module (apg, shac, ahac) whose `carried(settings)` the loop drives.
* "sb3", "brax": a module whose `TRAINER` trains the agent itself.

Adding an agent is one module and one entry here: nothing else compares names.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chaosgym.functional.settings import ESTIMATOR_SPECS
from chaosgym.validation import UserError

FLOAT_BYTES = 4


class Trainer(Protocol):
    """What trains an agent and turns a run folder back into a policy."""

    def validate(self, config) -> None:
        """Refuse a config the agent cannot train (one clear error), before any folder is written."""

    def train(self, config, out: Path | str, *, resume: bool = False, progress: bool = True,
              time_budget: float | None = None, announce: bool | None = None,
              progress_fn: Callable[[int, dict], None] | None = None) -> dict:
        """Train (or resume) `config`'s run in `out`; the final progress, with at least `env_steps`,
        `wall_time`, `compile_time` and the last evaluation's `eval_score` and `eval_objective`.
        `progress_fn(env_steps, metrics)` is called after every evaluation (Brax's convention)."""

    def policy(self, run) -> Callable:
        """The deterministic numpy policy `obs -> action` of a run folder's newest readable checkpoint."""

    def jax_policy(self, run) -> tuple[Callable, object]:
        """The same policy as `(apply(params, obs) -> action, params)` in JAX, differentiable in the
        observation (what `chaosgym diagnose --policy` studies)."""


# ---- what a run holds in memory, in bytes (lower bounds) ---------------------------------------

def _layers(sizes: tuple[int, ...]) -> int:
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


@dataclass(frozen=True)
class Agent:
    """One trainable agent: its facts, and where its `Trainer` lives."""

    name: str
    kind: str  # "estimator", "carried", "sb3" or "brax"
    summary: str
    settings: str  # "module:Class" of its settings (JAX-free)
    module: str  # its algorithm's module: CARRIED (carried) or TRAINER (sb3, brax)
    budget: str = "updates"  # "updates" (env_steps convert to updates) or "env_steps" (the only budget)
    metrics: tuple[str, ...] = ()  # its own diagnostics, written to metrics.csv after the common columns
    checkpoint_suffix: str = ".npz"

    @property
    def carries_state(self) -> bool:
        """Its envs carry their trajectories from update to update."""
        return self.kind == "carried"

    def settings_class(self) -> type:
        module, _, name = self.settings.partition(":")
        return getattr(importlib.import_module(module), name)

    def load(self) -> Trainer:
        if self.kind in ("estimator", "carried"):  # the loop drives both (chaosgym.agents.loop.core_of)
            return importlib.import_module("chaosgym.agents.loop").TRAINER
        return importlib.import_module(self.module).TRAINER

    def steps_per_update(self, settings) -> int:
        """Simulated env steps per update."""
        if self.budget != "updates":
            raise ValueError(f"{self.name} counts its budget in env steps, not updates")
        if self.kind == "estimator":
            e = settings.estimator
            return e.spec.rollouts(e) * settings.batch_size * e.horizon
        return settings.num_envs * settings.window

    def memory_needed(self, config, observation_size: int, action_size: int, state_bytes: int) -> dict[str, int]:
        """Lower bounds, in bytes, of what a run holds at once, by part: the policy with its gradient
        and Adam's two moments, the agent's rollouts (their tape where it backpropagates) or SB3's
        minibatch, and the evaluation's states."""
        s = config.settings
        hidden = tuple(getattr(s, "hidden", ()))
        sizes = (observation_size, *hidden, action_size)
        step = state_bytes + sum(hidden) * FLOAT_BYTES
        parts = {"policy and optimiser": 4 * _layers(sizes) * FLOAT_BYTES, "evaluation": config.eval_episodes * step}
        if self.kind == "estimator":
            e = s.estimator
            if e.spec.flows:  # a tape of every step's state and activations (about sqrt(horizon) with remat)
                kept = math.isqrt(e.horizon) + 1 if e.remat else e.horizon
                parts["rollout tape"] = e.spec.rollouts(e) * s.batch_size * kept * step
            else:  # forward rollouts side by side
                parts["rollouts"] = e.spec.rollouts(e) * s.batch_size * step
        elif self.kind == "carried":
            parts["rollout tape"] = s.num_envs * s.window * step
        elif self.kind == "sb3":
            batch = getattr(s, "batch_size", 64) or 64
            parts["minibatch"] = batch * (sum(sizes) + sizes[0]) * FLOAT_BYTES
        return parts


CARRIED_METRICS = ("mean_reward", "episodes_done")


def _carried(name: str, summary: str, metrics: tuple[str, ...] = ()) -> Agent:
    return Agent(name, "carried", summary, f"chaosgym.agents.settings:{name.upper()}Settings",
                 f"chaosgym.agents.{name}", metrics=CARRIED_METRICS + metrics)


def _sb3(name: str, summary: str) -> Agent:
    return Agent(name, "sb3", summary, f"chaosgym.agents.settings:{name.upper()}Settings", "chaosgym.agents.sb3",
                 budget="env_steps", checkpoint_suffix=".zip")


def _brax(name: str, summary: str, settings: str) -> Agent:
    return Agent(name, "brax", summary, f"chaosgym.agents.brax_config:{settings}", "chaosgym.agents.brax_agents",
                 budget="env_steps")


def estimator_agent(name: str) -> Agent:
    """The agent of a gradient estimator (`ESTIMATOR_SPECS`)."""
    spec = ESTIMATOR_SPECS[name]
    return Agent(name, "estimator", spec.summary, "chaosgym.agents.settings:EstimatorSettings",
                 "chaosgym.agents.estimators", metrics=spec.metrics)


_OTHERS: dict[str, Agent] = {agent.name: agent for agent in (
    _carried("apg", "analytic policy gradients along carried trajectories (Brax APG)"),
    _carried("shac", "short-horizon actor-critic (Xu et al., 2022)", ("value_loss_before", "value_loss")),
    _carried("ahac", "adaptive-horizon actor-critic (Georgiev et al., 2024)",
             ("horizon", "next_horizon", "dual", "stiffness", "horizon_cuts", "value_loss_before", "value_loss",
              "critic_epochs")),
    _sb3("ppo", "Stable-Baselines3 PPO"),
    _sb3("sac", "Stable-Baselines3 SAC"),
    _sb3("td3", "Stable-Baselines3 TD3"),
    _brax("brax-ppo", "Brax's own PPO through chaosgym.brax (pip install chaosgym[brax])", "BraxPPOConfig"),
    _brax("brax-apg", "Brax's own APG through chaosgym.brax (pip install chaosgym[brax])", "BraxAPGConfig"),
)}


class _Agents(Mapping):
    """Every agent: the estimators of `ESTIMATOR_SPECS` (read each time, so an estimator registered
    later is an agent too), then the others."""

    def __getitem__(self, name: str) -> Agent:
        if name in ESTIMATOR_SPECS:
            return estimator_agent(name)
        return _OTHERS[name]

    def __iter__(self) -> Iterator[str]:
        yield from ESTIMATOR_SPECS
        yield from _OTHERS

    def __len__(self) -> int:
        return len(ESTIMATOR_SPECS) + len(_OTHERS)


AGENTS: Mapping[str, Agent] = _Agents()


def agent(name: str) -> Agent:
    """The agent called `name`, or an error listing the valid ones."""
    if name not in AGENTS:
        raise UserError(f"unknown agent {name!r}; valid: {', '.join(AGENTS)}")
    return AGENTS[name]


__all__ = ["AGENTS", "Agent", "Trainer", "agent"]
