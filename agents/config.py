"""Every training setting, declared once: `TrainConfig`, and the CLI flags generated from it.

A `TrainConfig` holds the settings of one run; the gradient estimator's own settings are its nested
`chaosgym.functional.gradients.EstimatorConfig`, not copies. Every field has a default and help text, from
which `chaosgym.flags` generates the argparse flags (`batch_size` -> `--batch-size`; a nested
dataclass's fields become flags of their own name). Flags default to "not given", so a command
knows what the user set: a task's presets fill in the rest (`for_task`), and a resumed run is
compared with its saved config only where it matters.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from chaosgym import flags
from chaosgym.agents.registry import AGENTS, Agent
from chaosgym.flags import InvalidSetting, flag_name
from chaosgym.flags import fields as fields  # re-exported: the settings of TrainConfig are fields(TrainConfig)
from chaosgym.presets import PRESETS, Presets, presets
from chaosgym.functional.settings import POLICIES, EstimatorConfig

DEFAULT_UPDATES = 200
EVAL_SEED = 1_000_000  # held-out initial states: far from the small seeds training runs use

# changes to a finished run that only extend it: a resumed run may differ in these
BUDGET_FIELDS = ("updates", "env_steps", "eval_every", "checkpoint_every")


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the task, the agent and every setting it trains with."""

    task: str = field(default="ChaosCartPole-v0", metadata=_help("task id"))
    task_kwargs: dict = field(default_factory=dict, metadata=_help("task options, e.g. num_poles=3"))
    agent: str = field(default="full", metadata=_help(
        "gradient estimator, carried-state agent or SB3 baseline (chaosgym.agents.AGENTS)", choices=tuple(AGENTS)))
    policy: str = field(default="tanh", metadata=_help(
        "policy network of the gradient agents: tanh (tanh output in [-1, 1]) or paper (Schnell & "
        "Thuerey's linear-output controller)", choices=POLICIES))
    updates: int = field(default=DEFAULT_UPDATES, metadata=_help(
        f"gradient updates (default: {DEFAULT_UPDATES}, or as many as --env-steps allows)"))
    env_steps: int | None = field(default=None, metadata=_help(
        "budget in simulated env steps (SB3 agents need it; gradient agents may give it instead of --updates)"))
    seed: int = field(default=0, metadata=_help("seed of the parameters and of every training key"))
    batch_size: int = field(default=16, metadata=_help("initial states per update (SB3: minibatch size)"))
    learning_rate: float = field(default=1e-3, metadata=_help("Adam step size"))
    hidden: tuple[int, ...] = field(default=(100, 100), metadata=_help(
        "hidden layer sizes of the policy, e.g. 100,100", items="layer sizes"))
    eval_every: int = field(default=10, metadata=_help("updates between evaluations"))
    eval_episodes: int = field(default=16, metadata=_help("held-out initial states per evaluation"))
    eval_seed: int = field(default=EVAL_SEED, metadata=_help("evaluation episode i starts from reset(seed=eval_seed + i)"))
    checkpoint_every: int = field(default=10, metadata=_help("updates between checkpoints"))
    sb3: dict = field(default_factory=dict, metadata=_help(
        "changes to the SB3 agent's hyperparameters (chaosgym.agents.sb3.SB3_DEFAULTS with the task's "
        "presets), e.g. n_steps=256,gamma=0.98"))
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig, metadata=_help("gradient estimator"))

    def __post_init__(self):
        if self.agent not in AGENTS:
            raise ValueError(f"unknown agent {self.agent!r}; valid: {', '.join(AGENTS)}")
        if self.spec.estimator and self.estimator.name != self.agent:
            # the agent names the estimator: one setting, kept in the nested config
            object.__setattr__(self, "estimator", dataclasses.replace(self.estimator, name=self.agent))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        e = self.estimator
        positive = {"updates": self.updates, "batch_size": self.batch_size, "eval_every": self.eval_every,
                    "eval_episodes": self.eval_episodes, "checkpoint_every": self.checkpoint_every,
                    "horizon": e.horizon, "es_pairs": e.es_pairs, "env_steps": self.env_steps,
                    "truncation": e.truncation}
        for name, value in positive.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise InvalidSetting(name, f"must be a positive integer, got {value!r}")
        if not self.hidden or any(not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in self.hidden):
            raise InvalidSetting("hidden", f"must be one or more positive layer sizes, e.g. 100,100; got {self.hidden!r}")
        finite_positive = {"learning_rate": self.learning_rate, "es_sigma": e.es_sigma,
                           "clip_norm": e.clip_norm, "clip_value": e.clip_value}
        for name, value in finite_positive.items():
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidSetting(name, f"must be a finite number > 0, got {value!r}")
        for name in ("seed", "eval_seed"):  # SB3 and Gymnasium seed numpy, which refuses negative seeds
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidSetting(name, f"must be an integer >= 0 (a Gymnasium seed), got {value!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; valid: {', '.join(POLICIES)}")

    @property
    def spec(self) -> Agent:
        """The agent's facts (`chaosgym.agents.AGENTS`)."""
        return AGENTS[self.agent]

    def steps_per_update(self) -> int:
        """Simulated env steps per update (e.g. the combined update runs two rollouts, ES 2 x pairs)."""
        return self.spec.steps_per_update(self)

    def identity(self) -> dict:
        """What a checkpoint must agree with to continue this run: the config but its budget."""
        return {k: v for k, v in self.to_json().items() if k not in BUDGET_FIELDS}

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"hidden": list(self.hidden)}

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        data = dict(data)
        if "estimator" in data:
            data["estimator"] = EstimatorConfig(**data["estimator"])
        return cls(**data)


def for_task(task: str, agent: str, **changes) -> TrainConfig:
    """A run's config: the defaults, then the task's presets, then `changes` (field -> value, nested
    fields as `estimator.<name>`). Without `updates`, a given `env_steps` sets it."""
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}; valid: {', '.join(AGENTS)}")
    config = with_changes(TrainConfig(task=task), {"agent": agent} | AGENTS[agent].presets(presets(task)) | changes)
    if "updates" not in changes and config.env_steps is not None and config.spec.budget == "updates":
        config = dataclasses.replace(config, updates=max(1, config.env_steps // config.steps_per_update()))
    return config


def with_changes(config: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """`config` with `changes` (field -> value; nested fields as `estimator.<name>`)."""
    agent = changes.get("agent", config.agent)
    if agent in AGENTS and AGENTS[agent].estimator:  # the estimator is named by the agent
        changes = {**changes, "estimator.name": agent}
    return flags.replace(config, changes)


# ---- which settings each agent reads (`Agent.reads`) -------------------------------------------

def check_settings(agent: str, changes: dict[str, Any]) -> None:
    """Refuse settings (paths of `changes`) that `agent` does not read, the same way for every agent."""
    reads = AGENTS[agent].reads
    unused = sorted(path for path in changes if path not in reads | {"task", "agent"})
    if unused:
        used = ", ".join(sorted(flag_name(path) for path in reads))
        raise ValueError(f"{', '.join(map(flag_name, unused))}: not read by --agent {agent}, which takes {used}")


# ---- memory ------------------------------------------------------------------------------------

def machine_memory() -> int:
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(config: TrainConfig, observation_size: int, action_size: int, state_bytes: int) -> None:
    """Refuse a run whose sizes need more memory than this machine has, with the estimate."""
    needed = config.spec.memory_needed(config, observation_size, action_size, state_bytes)
    total, available = sum(needed.values()), machine_memory()
    if total > available:
        parts = ", ".join(f"{name} {_gib(size)}" for name, size in needed.items() if size >= total / 100)
        raise ValueError(f"this run needs at least {_gib(total)} of memory ({parts}), more than this machine's "
                         f"{_gib(available)}: lower --hidden, --batch-size, --horizon or --eval-episodes")


def _gib(size: int) -> str:
    gib = size / 2**30
    return f"{gib:,.0f} GiB" if gib >= 10 else f"{gib:.2g} GiB"


# ---- flags -------------------------------------------------------------------------------------

def _preset_text(name: str, carried: str | None = None) -> str:
    """The default a task's presets give a setting, task by task (`chaosgym.presets`)."""
    values = ", ".join(f"{getattr(p, name):g} on {task}" for task, p in PRESETS.items())
    return f"the task's preset: {values}" + (f"; {carried}" if carried else "")


def add_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                  required: tuple[str, ...] = ()) -> None:
    """The flags of `TrainConfig` (`chaosgym.flags.add_arguments`), each preset's values in its help."""
    flags.add_arguments(parser, TrainConfig, skip, required, default_texts={
        "learning_rate": _preset_text("learning_rate", "SB3 agents: their own (chaosgym.agents.sb3.SB3_DEFAULTS)"),
        "estimator.horizon": _preset_text("horizon", ", ".join(
            f"{a.presets(Presets())['estimator.horizon']} for {a.name}" for a in AGENTS.values() if a.carries_state)),
        "estimator.truncation": _preset_text("truncation")})


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The `TrainConfig` settings the user gave on the command line, by path."""
    return flags.given(args, TrainConfig)
