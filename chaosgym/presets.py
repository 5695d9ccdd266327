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
    # per SB3 agent ("ppo", "sac", "td3"), changes to `SB3_DEFAULTS[agent]`
    sb3: dict[str, dict[str, Any]] = field(default_factory=dict)


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


def sb3_hyperparameters(env_id: str, agent: str) -> dict[str, Any]:
    """An SB3 agent's defaults with the task's changes."""
    if agent not in SB3_DEFAULTS:
        raise ValueError(f"unknown SB3 agent {agent!r}; valid: {', '.join(SB3_DEFAULTS)}")
    return {**SB3_DEFAULTS[agent], **presets(env_id).sb3.get(agent, {})}
