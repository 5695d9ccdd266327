"""`chaosgym train`: the config `chaosgym.agents.commands.train_check` built from the flags (once),
trained by the Python API (`chaosgym.agents.api`), and one line of what it gave."""

from __future__ import annotations

import argparse

from chaosgym.agents.api import train_config


def run(args: argparse.Namespace) -> int:
    result = train_config(args.config, args.out, resume=args.resume, progress=not args.no_progress)
    final, config = result.final, result.config
    updates = f"{final['update']} updates, " if "update" in final else ""
    skipped = f", skipped {final['skipped_updates']}" if "skipped_updates" in final else ""
    print(f"{config.agent} on {config.task}: {updates}{final['env_steps']:,} env steps, held-out score "
          f"{final['eval_score']:.4g}, objective {final['eval_objective']:.4g}{skipped}; results in {args.out}")
    return 0
