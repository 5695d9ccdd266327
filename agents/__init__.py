"""Agents trained on chaosgym tasks: gradient estimators through the simulator, carried-state
actor-critics, and SB3 and Brax baselines. `AGENTS` names every one (`chaosgym.agents.registry`);
`train(task, agent, out, ...)` trains one from Python with the command line's settings
(`chaosgym.agents.api`), `compare(tasks, agents, ...)` runs `chaosgym compare` (`chaosgym.agents.compare_command`), `load_policy(run)`
reads a trained policy back."""

import importlib

from chaosgym.agents.registry import AGENTS, Agent, Trainer

__all__ = ["AGENTS", "Agent", "CompareResult", "Trainer", "TrainResult", "compare", "load_policy", "train",
           "train_config"]


def __getattr__(name: str):
    """The training API loads on first use: listing agents imports no JAX."""
    if name in ("TrainResult", "load_policy", "train", "train_config"):
        return getattr(importlib.import_module("chaosgym.agents.api"), name)
    if name in ("CompareResult", "compare"):
        return getattr(importlib.import_module("chaosgym.agents.compare_command"), name)
    raise AttributeError(f"module 'chaosgym.agents' has no attribute {name!r}")
