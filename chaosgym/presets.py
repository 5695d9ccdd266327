"""Per-task settings: what an agent should start from on a task, as plain data.

A task's `Presets` hold the settings that make the gradient agents and the SB3 baselines learn on
it (learning rate, rollout horizon, truncation window, SB3 hyperparameter changes) and the score
that counts as solved in `chaosgym compare`. They are given to `chaosgym.register` with the task;
a task registered without presets gets `Presets()`, the defaults below, so every command works
on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Presets:
    """Settings a task suggests; every field has a default, so a new task may give none."""

    learning_rate: float = 1e-3  # Adam step size of the gradient agents
    horizon: int = 100  # rollout length of the gradient agents
    truncation: int = 20  # window K of the `truncated` agent
    threshold: float = 0.0  # evaluation score (episode return) that counts as solved
    # per SB3 agent ("ppo", "sac", "td3"), changes to its defaults (`chaosgym.agents.sb3.SB3_DEFAULTS`)
    sb3: dict[str, dict[str, Any]] = field(default_factory=dict)


CARTPOLE = Presets(
    learning_rate=3e-3, horizon=100, truncation=20, threshold=50.0,
    # 100-step episodes: shorter rollouts give more updates in a small budget
    sb3={"ppo": {"n_steps": 64, "batch_size": 256}, "sac": {"learning_starts": 1_000},
         "td3": {"learning_starts": 1_000}})
DOUBLE_PENDULUM = Presets(learning_rate=1e-3, horizon=100, truncation=20, threshold=0.0)
# An Ant that stands still earns ~1 per step (the healthy reward), up to 1000 per 1000-step episode
# (untrained near-zero policies scored 876): 1500 asks for walking at ~0.5 m/s over whole episodes.
ANT = Presets(learning_rate=1e-3, horizon=50, truncation=10, threshold=1500.0)

PRESETS: dict[str, Presets] = {}  # filled by chaosgym.register


def presets(env_id: str) -> Presets:
    """The presets a task was registered with (the defaults for a task registered without)."""
    return PRESETS.get(env_id, Presets())
