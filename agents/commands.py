"""The flags of `chaosgym train`, `compare` and `render`, and `compare`'s settings, built without JAX.

`chaosgym.agents.cli` builds a command's parser from here, so `--help` and a wrong flag answer at
once; the commands themselves (`chaosgym.agents.train_command`, `.compare`, `.render`) import JAX, MuJoCo
and, for SB3, torch, only when they run.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from chaosgym import flags
from chaosgym.agents.config import RunSettings, TrainConfig, for_task, settings_read, with_changes
from chaosgym.agents.registry import AGENTS
from chaosgym.agents.run import Run
from chaosgym.measured import MEASURED
from chaosgym.presets import PRESETS, presets
from chaosgym.tasks import check_task_id
from chaosgym.validation import SEED, UserError, argparse_type

MAX_GIF_FPS = 30  # GIF frame delays are whole hundredths of a second; viewers slow faster ones down


def output_path(text: str) -> Path:
    """An argparse `type` for an output path: an empty one (an unset variable in `--out "$OUT"`)
    is refused, never taken as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (is a variable in it unset?)")
    return Path(text)


# ---- train ---------------------------------------------------------------------------------------

def _flag_in(argv: list[str], flag: str) -> str | None:
    """The value `flag VALUE` (or `flag=VALUE`) gives in `argv`, if any."""
    for i, word in enumerate(argv):
        if word == flag and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(flag + "="):
            return word.partition("=")[2]
    return None


def train_arguments(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """The flags of `chaosgym train`: the run's settings, then those of the agent `--agent` names
    (each agent has its own: `chaosgym train --agent apg --help` lists apg's), the run folder, resume."""
    flags.add_arguments(parser, RunSettings, required=("task", "agent"), choices={"agent": tuple(AGENTS)},
                        group="the run")
    agent = _flag_in(argv or [], "--agent")
    if agent in AGENTS:
        task = _flag_in(argv or [], "--task")
        preset = presets(task).of(agent) if task else None
        texts = {path: f"{value!r}, the preset of {task}" for path, value in (preset.settings if preset else {}).items()}
        flags.add_arguments(parser, AGENTS[agent].settings_class(), only=tuple(settings_read(agent)),
                            default_texts=texts, group=f"{agent}'s own settings (defaults: its own, or with --task "
                                                       "the task's presets, chaosgym.presets)")
    else:
        parser.epilog = "Each agent has its own settings: chaosgym train --agent NAME --help lists them."
    parser.add_argument("--out", required=True, type=output_path,
                        help="output folder (config.json, metrics.csv, checkpoints)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint (flags given change its budget)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def given_settings(args: argparse.Namespace) -> dict:
    """The run's and the agent's settings the user gave, by path."""
    given = flags.given(args, RunSettings)
    agent = given.get("agent")
    if agent in AGENTS:
        given |= {k: v for k, v in flags.given(args, AGENTS[agent].settings_class()).items() if k in settings_read(agent)}
    return given


def train_check(args: argparse.Namespace) -> None:
    """What can be checked of `chaosgym train`'s flags without JAX, before the command imports it:
    the task id, the settings the agent reads, the budget it needs, the run folder, every value
    (through the config it would build, kept in `args.config`: built once, here)."""
    changes = given_settings(args)
    task, agent = changes.pop("task"), changes.pop("agent")
    check_task_id(task)
    if AGENTS[agent].budget == "env_steps" and "env_steps" not in changes and not args.resume:
        raise UserError(f"{agent} needs --env-steps (its budget in simulated env steps)")
    out = Path(args.out)
    if args.resume:
        if not out.is_dir():
            raise UserError(f"--resume: there is no run folder {out} (without --resume a new run starts there)")
    elif (out / "config.json").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it, or choose another folder")
    args.config = resumed_config(out, task, agent, changes) if args.resume else for_task(task, agent, **changes)


def resumed_config(out: Path, task: str, agent: str, changes: dict) -> TrainConfig:
    """A resumed run keeps its saved settings; the flags given change its budget (others are
    refused when the folder opens). A budget smaller than what the run has done is refused."""
    saved = Run(out).config if (out / "config.json").exists() else None
    if saved is None:
        return for_task(task, agent, **changes)
    if (saved.task, saved.agent) != (task, agent):
        raise UserError(f"cannot resume {out}: it is a run of {saved.agent} on {saved.task}")
    if "env_steps" in changes and "updates" not in changes and saved.spec.budget == "updates":
        changes["updates"] = max(1, changes["env_steps"] // saved.steps_per_update())
    return with_changes(saved, changes)


# ---- compare -------------------------------------------------------------------------------------

DEFAULT_ENV_STEPS = 100_000
MAX_SEEDS = 1_000
UNLIMITED_STEPS = 10**12  # the env-step "budget" of a run under a wall-clock budget alone


@dataclass(frozen=True)
class CompareConfig:
    """What `chaosgym compare` runs; every run's own settings are a `TrainConfig` from the task's presets."""

    tasks: str = field(default="ChaosCartPole-v0", metadata={
        "help": "comma-separated task ids, each with options after ':' "
                "(ChaosCartPole-v0:num_poles=2,force_scale=5,ChaosAnt-v0)"})
    agents: str = field(default="full,truncated,combined,es,ppo", metadata={
        "help": f"comma-separated agents from {', '.join(AGENTS)} (sac and td3 step "
                "~40 env steps/s on a 2-core CPU: give them a small budget)"})
    seeds: int = field(default=2, metadata={"help": f"seeds per task and agent (at most {MAX_SEEDS:,})"})
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
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.seeds > MAX_SEEDS:  # one folder and one evaluation each: a typo, not a grid
            raise UserError(f"--seeds {self.seeds:,}: at most {MAX_SEEDS:,} seeds per task and agent")
        # inf passes `> 0` and would never end; nan fails every comparison
        if self.wall_clock is not None and not (math.isfinite(self.wall_clock) and self.wall_clock > 0):
            raise UserError(f"--wall-clock must be a finite number of seconds > 0, got {self.wall_clock}")
        agents = self.agents.split(",")
        unknown = [a for a in agents if a not in AGENTS]
        if unknown:
            valid = ", ".join(AGENTS)
            raise UserError(f"unknown agent(s) {unknown} in --agents; valid: {valid}")
        refuse_repeats("--agents", agents)

    def steps_budget(self) -> int:
        """The env-step budget of every run; a wall-clock budget alone leaves the steps unlimited."""
        if self.env_steps is not None:
            return self.env_steps
        return UNLIMITED_STEPS if self.wall_clock is not None else DEFAULT_ENV_STEPS

    def folder_name(self) -> str:
        """The default output folder's name: the tasks and the budget."""
        budget = [f"{self.env_steps}-steps" if self.env_steps else None,
                  f"{self.wall_clock:g}s" if self.wall_clock is not None else None]
        name = "_".join([self.tasks.replace(",", "+").replace(":", "-").replace("=", ""),
                         *(b for b in budget if b)] or ["default"])
        return "".join(c if c.isalnum() or c in "-_+." else "-" for c in name)

    def describe(self) -> str:
        """The budget in words, as the summary's title gives it."""
        if self.wall_clock is None:
            return f"{self.steps_budget():,} env steps"
        if self.env_steps is None:
            return f"{self.wall_clock:g} s of training"
        return f"{self.env_steps:,} env steps or {self.wall_clock:g} s of training"


# The main job. Its budget is env steps, the same for every agent, so that it gives the same table on
# a slow or a busy machine (20 s of training gave apg very different numbers of updates on a quiet and
# a busy CPU: chaosgym/measured.py's apg_updates_20s_*); the training seconds of each agent's 100,000
# env steps are its quick_training_* entries.
QUICK = {"tasks": "ChaosCartPole-v0", "agents": "apg,shac,full,ppo", "seeds": 2, "env_steps": 100_000}
# the evaluation protocol's settings: given, they apply to every agent alike
EVALUATION_FIELDS = ("eval_episodes", "eval_seed")


def refuse_repeats(flag: str, names: list[str]) -> None:
    """A name given twice would train (or read back) the same runs twice and count them twice."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{flag} names {', '.join(repeated)} more than once; give each once")


def compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `chaosgym compare`."""
    flags.add_arguments(parser, CompareConfig)
    flags.add_arguments(parser, RunSettings, only=EVALUATION_FIELDS, group="the evaluation, for every agent")
    parser.add_argument("--set", action="append", default=[], metavar="[AGENT.]SETTING=VALUE", dest="overrides",
                        help="change an agent's setting from its task preset (repeatable): apg.num_envs=1024 for "
                             "apg, num_envs=1024 for every agent that has it; values are Python literals")
    parser.add_argument("--threshold", action="append", default=[], metavar="TASK=SCORE",
                        help="evaluation score that counts as solved (repeatable; default: the task's preset, "
                             + ", ".join(f"{task} {p.threshold:g}" for task, p in sorted(PRESETS.items())) + ")")
    parser.add_argument("--out", type=output_path, default=None, help="output folder (default: runs/compare/ followed by the "
                        "tasks and the budget, so that another comparison never writes over this one)")
    quick = "; ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
    parser.add_argument("--quick", action="store_true",
                        help=f"the main job ({MEASURED['quick_job_cold']} measured with cold caches on a 2-core "
                             f"CPU, {MEASURED['quick_job_loaded']} on a loaded one): {quick} (the "
                             "tasks, agents, seeds and budget flags given with it replace these values)")
    cluster_arguments(parser, unit="a run each: one task, agent and seed")


def compare_config(args: argparse.Namespace) -> CompareConfig:
    """The comparison the flags ask for: --quick's values, where given, replaced by the flags given
    with it; every run's config is built (and so checked) here, before anything trains."""
    compare = CompareConfig(**{**(QUICK if args.quick else {}), **flags.given(args, CompareConfig)})
    overrides = parse_overrides(args.overrides, compare.agents.split(","))
    for task in task_specs(compare.tasks):
        check_task_id(split_task_spec(task)[0])
    if args.out is None:
        args.out = Path("runs") / "compare" / compare.folder_name()
    if (Path(args.out) / "config.json").exists():
        raise UserError(f"{args.out} is a training run's folder (it holds config.json); compare writes a folder "
                        "of its own: choose another --out")
    args.compare, args.agent_overrides, args.cluster = compare, overrides, cluster_options(args)
    return compare


def task_specs(text: str) -> list[str]:
    """`--tasks`' items: comma-separated ids, each with options after ':' that may themselves be
    comma-separated ("ChaosCartPole-v0:num_poles=2,force_scale=5,ChaosAnt-v0" is two tasks): an
    item holding '=' but no ':' is one more option of the task before it."""
    specs: list[str] = []
    for item in text.split(","):
        if "=" in item and ":" not in item and specs:
            specs[-1] += "," + item
        else:
            specs.append(item)
    return specs


def split_task_spec(spec: str) -> tuple[str, str]:
    """`"ChaosCartPole-v0:num_poles=2"` -> `("ChaosCartPole-v0", "num_poles=2")`; the id may be
    Gymnasium's `module:EnvId` form (options follow its last ':', and hold '=')."""
    head, sep, tail = spec.rpartition(":")
    return (head, tail) if sep and "=" in tail else (spec, "")


def parse_overrides(items: list[str], agents: list[str]) -> dict[str, dict]:
    """`--set` items as {agent: {setting path: value}}: `AGENT.SETTING=VALUE` for that agent,
    `SETTING=VALUE` for every agent of the comparison that has the setting (at least one must)."""
    overrides: dict[str, dict] = {agent: {} for agent in agents}
    for item in items:
        target, equals, text = item.partition("=")
        if not equals or not target:
            raise UserError(f"--set expects [AGENT.]SETTING=VALUE, e.g. apg.num_envs=1024; got {item!r}")
        value = _literal(text)
        head, dot, rest = target.partition(".")
        if dot and head in AGENTS:
            if head not in agents:
                raise UserError(f"--set {item}: {head} is not among --agents ({', '.join(agents)})")
            takers = [head]
            path = rest
        else:
            path = target
            takers = [a for a in agents if path in _paths(a)]
            if not takers:
                raise UserError(f"--set {item}: no agent of --agents ({', '.join(agents)}) has a setting {path!r}")
        if path in ("estimator.objective", "objective"):
            raise UserError(f"--set {item}: every agent of a comparison optimises, and is ranked by, the return")
        for agent in takers:
            if path not in _paths(agent):
                raise UserError(f"--set {item}: {agent} has no setting {path!r}; its settings: "
                                f"{', '.join(sorted(_paths(agent)))}")
            overrides[agent][path] = value
    return overrides


def _paths(agent: str) -> set[str]:
    return settings_read(agent)


def _literal(text: str):
    """A `--set` value: a Python literal (`1024`, `1e-4`, `(64, 64)`, `64,64`, `None`, `True`), else the text."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


# ---- grids on Ray (compare, reproduce) ------------------------------------------------------------

@dataclass(frozen=True)
class ClusterOptions:
    """Where a grid's units run (`chaosgym.agents.cluster`): `workers` at a time (None: as many as the
    cluster's resources allow), on the Ray cluster at `address` or, without one, on a local Ray instance
    started for the command; every worker compiles into `compile_cache` (None: the driver's cache)."""

    workers: int | None = None
    address: str | None = None
    compile_cache: Path | None = None
    cpus_per_unit: int = 1


def cluster_arguments(parser: argparse.ArgumentParser, unit: str) -> None:
    """The flags that send a grid's independent units (each `unit`) to Ray workers."""
    group = parser.add_argument_group("running the grid on Ray (pip install 'chaosgym[cluster]'; docs/cluster.md)")
    group.add_argument("--workers", type=_whole(1, "a number of workers"), default=None, metavar="N",
                       help=f"run the grid's units ({unit}) as Ray tasks, at most N at once: on a local "
                            "Ray instance started for the command, or on --ray-address's cluster; every unit writes "
                            "its own folder, the tables and figures are built from the folders afterwards")
    group.add_argument("--ray-address", default=None, metavar="ADDRESS",
                       help="run the units on this existing Ray cluster instead (auto: the one this machine has "
                            "joined; `ray start --head` prints the address)")
    group.add_argument("--compile-cache", type=Path, default=None, metavar="FOLDER",
                       help="JAX's compilation cache of every worker, so that a program one worker compiled is "
                            "loaded by the others (default: this machine's, CHAOSGYM_CACHE_DIR or "
                            "~/.cache/chaosgym/jax); on a cluster, a folder every node shares")
    group.add_argument("--cpus-per-unit", type=_whole(1, "a number of CPUs"), default=None, metavar="K",
                       help="CPUs each unit reserves on its worker (default: 1; a unit also reserves one GPU "
                            "where the cluster has GPUs)")


def cluster_options(args: argparse.Namespace) -> ClusterOptions | None:
    """The Ray options the flags give, or None (no Ray: the grid runs in this process, Ray is not imported)."""
    if args.workers is None and args.ray_address is None:
        extra = [flag for flag, value in (("--compile-cache", args.compile_cache), ("--cpus-per-unit", args.cpus_per_unit))
                 if value is not None]
        if extra:
            raise UserError(f"{' and '.join(extra)} apply to Ray workers: give --workers N or --ray-address too")
        return None
    if importlib.util.find_spec("ray") is None:
        raise UserError("--workers and --ray-address run the grid on Ray, which is not installed: "
                        "pip install 'chaosgym[cluster]'")
    if args.ray_address is not None and not args.ray_address.strip():
        raise UserError("--ray-address needs an address (host:port, ray://host:port, or auto)")
    # the driver's JAX (not imported yet) takes GPU memory as it needs it, not 75% of a GPU a unit may get
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return ClusterOptions(args.workers, args.ray_address, args.compile_cache, args.cpus_per_unit or 1)


# ---- convert-checkpoint -----------------------------------------------------------------------------

def convert_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `chaosgym convert-checkpoint` (chaosgym.agents.convert)."""
    parser.add_argument("run", type=Path, help="the run folder (of chaosgym train, compare or reproduce) to convert")
    parser.add_argument("--i-trust-this-folder", dest="trust", action="store_true", required=True,
                        help="required: the old files are unpickled, which runs any code they hold")


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


def render_check(args: argparse.Namespace) -> None:
    """`chaosgym render`'s run folder, checked before JAX and MuJoCo load."""
    if not (Path(args.run) / "config.json").exists():
        raise UserError(f"{args.run} is not a run folder of `chaosgym train` (it has no config.json)")


def render_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `chaosgym render`."""
    parser.add_argument("--run", type=Path, required=True, help="run folder of `chaosgym train` or `compare`")
    parser.add_argument("--out", type=output_path, default=None, help="GIF file to write (default: RUN/episode.gif)")
    parser.add_argument("--seed", type=argparse_type(SEED), default=0, help="seed of the episode's reset")
    parser.add_argument("--max-steps", type=_whole(1, "a number of steps"), default=None,
                        help="stop after this many steps (default: the time limit)")
    parser.add_argument("--width", type=_pixels, default=320, help="frame width in pixels")
    parser.add_argument("--height", type=_pixels, default=320, help="frame height in pixels")
    parser.add_argument("--fps", type=_rate, default=None,
                        help=f"frames per second of the GIF (default: real time, at most {MAX_GIF_FPS}: "
                             "faster tasks keep every k-th step and play in real time)")
