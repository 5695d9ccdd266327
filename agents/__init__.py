"""Agents trained on chaosgym tasks: gradient estimators through the simulator, carried-state
actor-critics, ES, and SB3 baselines. `AGENTS` names every one (`chaosgym.agents.registry`)."""

from chaosgym.agents.registry import AGENTS, Agent, Trainer

__all__ = ["AGENTS", "Agent", "Trainer"]
