"""`chaosgym diagnose`: the core's diagnostics (`chaosgym.diagnostics.command.diagnose`) of a task,
under a run's own trained policy when `--policy RUN` names one: read here, whatever the run's agent
(a gradient agent's network, an SB3 or Brax policy), as a differentiable JAX function
(`chaosgym.agents.api.jax_policy`)."""

from __future__ import annotations

import argparse

from chaosgym.agents.api import jax_policy
from chaosgym.diagnostics.command import OUTPUTS, TrainedPolicy, config_from_args, diagnose


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    trained = None
    if config.policy:
        apply, params, run_config = jax_policy(config.policy)
        trained = TrainedPolicy(apply, params, run_config.task, run_config.task_kwargs)
    diagnose(config, trained)
    written = [name for what in config.what for name in OUTPUTS[what]]
    print(f"wrote {', '.join(written)} to {config.out}")
    return 0
