"""A run's config, declared once: the shared run settings, and the agent's own settings.

`TrainConfig` holds what every run has (task, seed, budget, evaluation, checkpoints) and, in
`settings`, the agent's own settings object (`chaosgym.agents.settings`, chosen by the registry).
`for_task` builds one from the agent's defaults, the task's presets for that agent
(`chaosgym.presets`) and the changes given; the command line, `compare` and the Python API all
build it there, once per run. `config.json` records what the run read: the run settings its agent
uses and its settings, nothing else.

Changes are given by path: a run setting by name (`seed`, `env_steps`), an agent setting by its
field (`num_envs`, `learning_rate`; an estimator's own as `estimator.horizon`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from chaosgym import flags
from chaosgym.agents.registry import AGENTS, Agent, agent as agent_named
from chaosgym.functional.settings import COMMON_SETTINGS, ESTIMATOR_SPECS
from chaosgym.presets import presets
from chaosgym.validation import POSITIVE_INT, SEED, InvalidSetting, UserError, check_fields, setting

DEFAULT_UPDATES = 200
EVAL_SEED = 1_000_000  # held-out initial states: far from the small seeds training runs use

# changes to a finished run that only extend it: a resumed run may differ in these
BUDGET_FIELDS = ("updates", "env_steps", "eval_every", "checkpoint_every")
# the run settings of each kind of budget (the others are not read, and not recorded)
RUN_FIELDS = {"updates": ("seed", "updates", "env_steps", "eval_every", "eval_episodes", "eval_seed",
                          "checkpoint_every"),
              "env_steps": ("seed", "env_steps", "eval_episodes", "eval_seed")}


@dataclass(frozen=True)
class RunSettings:
    """What every run has besides its agent's own settings: the flags `chaosgym train` takes for any agent."""

    task: str = field(default="ChaosCartPole-v0", metadata=setting("task id (or module:TaskId of your own)"))
    agent: str = field(default="full", metadata=setting(
        "gradient estimator, carried-state agent, SB3 or Brax baseline (chaosgym.agents.AGENTS)"))
    task_kwargs: dict = field(default_factory=dict, metadata=setting("task options, e.g. num_poles=3"))
    seed: int = field(default=0, metadata=setting("seed of the parameters and of every training key", SEED))
    updates: int | None = field(default=None, metadata=setting(
        f"gradient updates (default: {DEFAULT_UPDATES}, or as many as --env-steps allows; gradient agents)",
        POSITIVE_INT.optional()))
    env_steps: int | None = field(default=None, metadata=setting(
        "budget in simulated env steps (SB3 and Brax agents need it; gradient agents may give it instead of "
        "--updates)", POSITIVE_INT.optional()))
    eval_every: int = field(default=10, metadata=setting("updates between evaluations (gradient agents)",
                                                         POSITIVE_INT))
    eval_episodes: int = field(default=16, metadata=setting("held-out initial states per evaluation",
                                                            POSITIVE_INT))
    eval_seed: int = field(default=EVAL_SEED, metadata=setting(
        "evaluation episode i starts from reset(seed=eval_seed + i)", SEED))
    checkpoint_every: int = field(default=10, metadata=setting("updates between checkpoints (gradient agents)",
                                                               POSITIVE_INT))


def float_type() -> str:
    """JAX's float type in this process ("float64" once `jax_enable_x64` is on), read without
    importing JAX: what a run computes in, recorded in its config so that a resume in the other
    precision is refused instead of silently continuing in it."""
    jax = sys.modules.get("jax")
    if jax is not None:
        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64" if os.environ.get("JAX_ENABLE_X64", "").lower() in ("1", "true", "yes", "on") else "float32"


@dataclass(frozen=True)
class TrainConfig(RunSettings):
    """One training run: the run settings, the agent's own `settings` and the float type it runs in."""

    settings: Any = None  # the agent's settings object; None: its defaults
    dtype: str = field(default="", metadata={"flag": False, "help": "JAX's float type (recorded, not set)"})

    def __post_init__(self):
        if not self.dtype:
            object.__setattr__(self, "dtype", float_type())
        spec = agent_named(self.agent)
        if self.settings is None:
            object.__setattr__(self, "settings", spec.settings_class()())
        elif not isinstance(self.settings, spec.settings_class()):
            raise UserError(f"{self.agent} takes {spec.settings_class().__name__}, got {type(self.settings).__name__}")
        if spec.kind == "estimator" and self.settings.estimator.name != self.agent:
            # the agent names the estimator: one setting, kept in the nested config, with the
            # estimator's own defaults where the config leaves them unset (the truncated flow's window)
            unset = {k: v for k, v in ESTIMATOR_SPECS[self.agent].defaults
                     if getattr(self.settings.estimator, k) is None}
            estimator = dataclasses.replace(self.settings.estimator, name=self.agent, **unset)
            object.__setattr__(self, "settings", dataclasses.replace(self.settings, estimator=estimator))
        if spec.budget == "updates" and self.updates is None:
            object.__setattr__(self, "updates", DEFAULT_UPDATES)
        check_fields(self)
        if spec.budget == "env_steps" and self.env_steps is None:
            raise InvalidSetting("env_steps", f"must be given for {self.agent} (its budget in simulated env steps)")

    @property
    def spec(self) -> Agent:
        """The agent's facts (`chaosgym.agents.AGENTS`)."""
        return AGENTS[self.agent]

    def steps_per_update(self) -> int:
        """Simulated env steps per update (e.g. the combined update runs two rollouts, ES 2 x pairs)."""
        return self.spec.steps_per_update(self.settings)

    def identity(self) -> dict:
        """What a checkpoint must agree with to continue this run: the config but its budget."""
        return {k: v for k, v in self.to_json().items() if k not in BUDGET_FIELDS}

    def to_json(self) -> dict:
        """What the run reads: its run settings and the agent's settings (an estimator's own only)."""
        run = {"task": self.task, "agent": self.agent, "task_kwargs": self.task_kwargs, "dtype": self.dtype}
        run |= {name: getattr(self, name) for name in RUN_FIELDS[self.spec.budget]}
        settings = self.settings.to_json()
        if self.spec.kind == "estimator":
            settings["estimator"] = self.settings.estimator.read()
        return {**run, "settings": settings}

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        data = dict(data)
        if "agent" not in data or "settings" not in data:
            raise UserError("not the config of a chaosgym run of this version (it has no agent or settings): a run "
                            "of chaosgym 0.1 converts with `chaosgym convert-checkpoint RUN --i-trust-this-folder` "
                            "(its checkpoints are pickles: only a folder you trust)")
        spec = agent_named(data["agent"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown config keys {unknown}")
        data["settings"] = spec.settings_class().from_json(data["settings"])
        return cls(**data)


# ---- building a config -------------------------------------------------------------------------

def split_changes(agent: str, changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(run settings, agent settings)` of `changes` (paths); a path that is neither is refused,
    naming what the agent takes."""
    run_names = {f.name for f in dataclasses.fields(RunSettings)}
    settings_paths = settings_read(agent)
    run, own = {}, {}
    for path, value in changes.items():
        if path in run_names:
            run[path] = value
        elif path in settings_paths:
            own[path] = value
        else:
            raise UserError(f"{flags.flag_name(path)}: not a setting of {agent}; it takes "
                            f"{', '.join(sorted(flags.flag_name(p) for p in settings_paths))} besides the run's")
    return run, own


def settings_read(agent: str) -> set[str]:
    """The paths of the settings `agent` reads: its settings class's, and of an estimator's own only
    those its spec reads (`ESTIMATOR_SPECS`: `es` takes no truncation window, `full` no ES sigma)."""
    spec = AGENTS[agent]
    paths = {path for path, _, _ in flags.fields(spec.settings_class())}
    if spec.kind == "estimator":
        own = ESTIMATOR_SPECS[agent]
        paths = {p for p in paths if not p.startswith("estimator.")
                 or p.removeprefix("estimator.") in COMMON_SETTINGS | own.reads}
    return paths


def check_run_fields(agent: str, run: dict[str, Any]) -> None:
    """Refuse run settings the agent's budget does not read (e.g. --updates for PPO)."""
    read = set(RUN_FIELDS[AGENTS[agent].budget]) | {"task", "agent", "task_kwargs"}
    unread = sorted(set(run) - read)
    if unread:
        raise UserError(f"{', '.join(map(flags.flag_name, unread))}: not read by --agent {agent}, whose budget is "
                        f"{AGENTS[agent].budget.replace('_', ' ')}")


def for_task(task: str, agent: str, **changes) -> TrainConfig:
    """A run's config: the agent's defaults, the task's presets for it, then `changes` (paths).

    Without `updates`, a given `env_steps` sets it; a linear learning-rate schedule without its
    length decays over the run's updates."""
    spec = agent_named(agent)
    run, own = split_changes(agent, changes)
    check_run_fields(agent, run)
    preset = presets(task).of(agent).settings
    defaults = {f"estimator.{k}": v for k, v in ESTIMATOR_SPECS[agent].defaults} if spec.kind == "estimator" else {}
    settings = flags.build(spec.settings_class(), {**defaults, **preset, **own})
    config = TrainConfig(task=task, agent=agent, settings=settings, **run)
    if spec.budget == "updates" and "updates" not in run and config.env_steps is not None:
        config = dataclasses.replace(config, updates=max(1, config.env_steps // config.steps_per_update()))
    return with_schedule(config)


def with_schedule(config: TrainConfig) -> TrainConfig:
    """A linear learning-rate schedule without its length decays over the run's updates."""
    s = config.settings
    if getattr(s, "lr_schedule", None) == "linear" and s.decay_updates is None:
        return dataclasses.replace(config, settings=dataclasses.replace(s, decay_updates=config.updates))
    return config


def continuing(config: TrainConfig, saved: TrainConfig | None) -> TrainConfig:
    """`config` as the continuation of the `saved` run: a linear schedule keeps the length it was
    derived with when the run started (a larger budget extends the run, not its schedule)."""
    if saved is None or saved.agent != config.agent or getattr(config.settings, "lr_schedule", None) != "linear":
        return config
    if dataclasses.replace(config.settings, decay_updates=saved.settings.decay_updates) == saved.settings:
        return dataclasses.replace(config, settings=saved.settings)
    return config


def with_changes(config: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """`config` with `changes` (paths; run settings by name, the agent's by field)."""
    run, own = split_changes(config.agent, changes)
    settings = flags.replace(config.settings, own) if own else config.settings
    return dataclasses.replace(config, settings=settings, **run)


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
        raise UserError(f"this run needs at least {_gib(total)} of memory ({parts}), more than this machine's "
                        f"{_gib(available)}: lower the network, the env count, the horizon or --eval-episodes")


def _gib(size: int) -> str:
    gib = size / 2**30
    return f"{gib:,.0f} GiB" if gib >= 10 else f"{gib:.2g} GiB"
