"""The flags of `chaosgym train`, `compare` and `render`, and `compare`'s settings, built without JAX.

`chaosgym.agents.cli` builds a command's parser from here, so `--help` and a wrong flag answer at
once; the commands themselves (`chaosgym.agents.train`, `.compare`, `.render`) import JAX, MuJoCo
and, for SB3, torch, only when they run.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

from chaosgym import flags
from chaosgym.agents import config as config_module
from chaosgym.agents.config import TrainConfig, for_task
from chaosgym.agents.registry import AGENTS
from chaosgym.presets import PRESETS
from chaosgym.tasks import check_task_id

MAX_GIF_FPS = 30  # GIF frame delays are whole hundredths of a second; viewers slow faster ones down


# ---- train ---------------------------------------------------------------------------------------

def train_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `chaosgym train`: every `TrainConfig` setting, the run folder, resume."""
    config_module.add_arguments(parser, required=("task", "agent"))
    parser.add_argument("--out", required=True, type=Path, help="output folder (config.json, metrics.csv, checkpoints)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint (flags given change its budget)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def train_check(args: argparse.Namespace) -> dict:
    """What can be checked of `chaosgym train`'s flags without JAX, before the command imports it:
    the task id, the settings the agent reads, the budget it needs, the resumed folder, every value
    (through the config it would build). The settings given, by path (`config.given`)."""
    changes = config_module.given(args)
    task, agent = changes.pop("task"), changes.pop("agent")
    check_task_id(task)
    config_module.check_settings(agent, changes)
    if AGENTS[agent].budget == "env_steps" and "env_steps" not in changes:
        raise ValueError(f"{agent} needs --env-steps (its budget in simulated env steps)")
    if args.resume and not Path(args.out).is_dir():
        raise ValueError(f"--resume: there is no run folder {args.out} (without --resume a new run starts there)")
    for_task(task, agent, **changes)  # refuses a wrong value under the flag that gave it
    return {"task": task, "agent": agent, **changes}


# ---- compare -------------------------------------------------------------------------------------

DEFAULT_ENV_STEPS = 100_000
UNLIMITED_STEPS = 10**12  # the env-step "budget" of a run under a wall-clock budget alone


@dataclass(frozen=True)
class CompareConfig:
    """What `chaosgym compare` runs; every run's own settings are a `TrainConfig` from the task's presets."""

    tasks: str = field(default="ChaosCartPole-v0", metadata={
        "help": "comma-separated task ids, each with options after ':' (ChaosCartPole-v0:num_poles=2)"})
    agents: str = field(default="full,truncated,combined,es,ppo", metadata={
        "help": f"comma-separated agents from {', '.join(AGENTS)} (sac and td3 step "
                "~40 env steps/s on a 2-core CPU: give them a small budget)"})
    seeds: int = field(default=2, metadata={"help": "seeds per task and agent"})
    env_steps: int | None = field(default=None, metadata={
        "help": f"budget per run in simulated env steps (default: {DEFAULT_ENV_STEPS:,}; none when only "
                "--wall-clock is given)"})
    wall_clock: float | None = field(default=None, metadata={
        "help": "budget per run in seconds of training, compilation apart (with --env-steps too, a run stops at "
                "whichever budget ends first)"})

    def __post_init__(self):
        for name in ("seeds", "env_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        # inf passes `> 0` and would never end; nan fails every comparison
        if self.wall_clock is not None and not (math.isfinite(self.wall_clock) and self.wall_clock > 0):
            raise ValueError(f"--wall-clock must be a finite number of seconds > 0, got {self.wall_clock}")
        agents = self.agents.split(",")
        unknown = [a for a in agents if a not in AGENTS]
        if unknown:
            valid = ", ".join(AGENTS)
            raise ValueError(f"unknown agent(s) {unknown} in --agents; valid: {valid}")
        refuse_repeats("--agents", agents)

    def steps_budget(self) -> int:
        """The env-step budget of every run; a wall-clock budget alone leaves the steps unlimited."""
        if self.env_steps is not None:
            return self.env_steps
        return UNLIMITED_STEPS if self.wall_clock is not None else DEFAULT_ENV_STEPS

    def describe(self) -> str:
        """The budget in words, as the summary's title gives it."""
        if self.wall_clock is None:
            return f"{self.steps_budget():,} env steps"
        if self.env_steps is None:
            return f"{self.wall_clock:g} s of training"
        return f"{self.env_steps:,} env steps or {self.wall_clock:g} s of training"


# The main job. Its budget is env steps, the same for every agent, so that it gives the same table on
# a slow or a busy machine (20 s of training gave apg 758 updates on a quiet CPU and 105-211 on a busy
# one). On a 2-core CPU 100,000 env steps were 5.6 and 7.8 s of training for apg and shac (195
# updates of 16 envs x 32 steps), 5.8 s for full (62 updates of 16 x 100 steps) and 16.6 s for PPO.
QUICK = {"tasks": "ChaosCartPole-v0", "agents": "apg,shac,full,ppo", "seeds": 2, "env_steps": 100_000}
# the evaluation protocol's settings: given, they apply to every agent alike
EVALUATION_FIELDS = ("eval_episodes", "eval_seed")
# settings compare decides: the task, agent, seed and budget of every run, and the objective
RUN_FIELDS = ("task", "task_kwargs", "agent", "seed", "updates", "env_steps", "eval_every",
              "checkpoint_every", "estimator.objective", "sb3")


def refuse_repeats(flag: str, names: list[str]) -> None:
    """A name given twice would train (or read back) the same runs twice and count them twice."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{flag} names {', '.join(repeated)} more than once; give each once")


def compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `chaosgym compare`."""
    flags.add_arguments(parser, CompareConfig)
    # every other training setting, for every gradient run (the task's presets where not given)
    flags.add_arguments(parser, TrainConfig, skip=RUN_FIELDS)
    parser.add_argument("--threshold", action="append", default=[], metavar="TASK=SCORE",
                        help="evaluation score that counts as solved (repeatable; default: the task's preset, "
                             + ", ".join(f"{task} {p.threshold:g}" for task, p in sorted(PRESETS.items())) + ")")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder")
    quick = "; ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
    parser.add_argument("--quick", action="store_true",
                        help=f"the main job (6 min measured with cold caches on a 2-core CPU, 22 min on a loaded "
                             f"one): {quick} (the "
                             "tasks, agents, seeds and budget flags given with it replace these values)")


def compare_config(args: argparse.Namespace) -> CompareConfig:
    """The comparison the flags ask for: --quick's values, where given, replaced by the flags given with it."""
    return CompareConfig(**{**(QUICK if args.quick else {}), **flags.given(args, CompareConfig)})


# ---- render --------------------------------------------------------------------------------------

def _whole(least: int, what: str):
    """An argparse type: a whole number >= `least`, named `what` in its error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected {what} (a whole number >= {least}), got {text!r}")
        return value
    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of frames per second > 0, got {text!r}")
    return value


_pixels = _whole(1, "a positive number of pixels")


def render_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `chaosgym render`."""
    parser.add_argument("--run", type=Path, required=True, help="run folder of `chaosgym train` or `compare`")
    parser.add_argument("--out", type=Path, default=None, help="GIF file to write (default: RUN/episode.gif)")
    parser.add_argument("--seed", type=_whole(0, "a Gymnasium seed"), default=0, help="seed of the episode's reset")
    parser.add_argument("--max-steps", type=_whole(1, "a number of steps"), default=None,
                        help="stop after this many steps (default: the time limit)")
    parser.add_argument("--width", type=_pixels, default=320, help="frame width in pixels")
    parser.add_argument("--height", type=_pixels, default=320, help="frame height in pixels")
    parser.add_argument("--fps", type=_rate, default=None,
                        help=f"frames per second of the GIF (default: real time, at most {MAX_GIF_FPS}: "
                             "faster tasks keep every k-th step and play in real time)")
