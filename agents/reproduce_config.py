"""`chaosgym reproduce stable-bptt`'s settings and arguments: the paper's protocol as plain data.

Nothing here imports JAX or MuJoCo: `chaosgym reproduce --help` and a wrong argument answer at once;
the reproduction itself is `chaosgym.agents.reproduce`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from chaosgym.agents.commands import cluster_arguments, cluster_options, output_path
from chaosgym.agents.config import machine_memory
from chaosgym.functional.settings import ADAM_FORMS, CARTPOLE_PHYSICS as PHYSICS
from chaosgym.measured import MEASURED
from chaosgym.validation import UserError

FLOWS = {"R": "full", "M": "modified", "S": "stopped", "C": "combined"}
CLIPS = ("NONE", "VALUE", "NORM")


@dataclass(frozen=True)
class Protocol:
    """The paper's settings (its run script's values are the defaults), and how chaosgym runs them."""

    states: int = 256
    batch_size: int = 8
    epochs: int = 1000
    learning_rate: float = 1e-3
    adam_eps: float = 1e-7
    adam: str = "keras"
    clip_number: float = 1.0
    horizon: int = 100
    hidden: tuple[int, ...] = (100, 100)
    data_seed: int = 42
    physics: str = "mjx"

    def __post_init__(self):
        if self.adam not in ADAM_FORMS:
            raise UserError(f"adam must be one of {', '.join(ADAM_FORMS)}, got {self.adam!r}")
        if self.physics not in PHYSICS:
            raise UserError(f"physics must be one of {', '.join(PHYSICS)}, got {self.physics!r}")
        if self.states < self.batch_size or self.states % self.batch_size:
            raise UserError(f"states must be a positive multiple of the batch size {self.batch_size}, "
                             f"got {self.states}")

    @property
    def updates_per_epoch(self) -> int:
        return self.states // self.batch_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", choices=["stable-bptt"], help="the experiment to reproduce")
    parser.add_argument("--poles", default="1,2,3,4", help="pole counts N")
    parser.add_argument("--flows", default="R,M,S,C", help="gradient flows: R full, M modified, S stopped, C combined")
    parser.add_argument("--clip", default="NONE,VALUE,NORM", help="clipping modes (NONE, VALUE, NORM)")
    parser.add_argument("--seeds", type=int, default=3, help="network initialisations per setting")
    parser.add_argument("--epochs", type=int, default=Protocol.epochs, help="epochs of 32 updates each")
    parser.add_argument("--states", type=int, default=Protocol.states, help="training (and test) initial states")
    parser.add_argument("--physics", choices=PHYSICS, default=Protocol.physics,
                        help="the cart pole's physics: MJX's step, or the paper's closed-form equations inside "
                             "the same task (the same system, ~27x cheaper per update on a CPU)")
    parser.add_argument("--adam", choices=ADAM_FORMS, default=Protocol.adam,
                        help="Adam's form: Keras 2's (eps before the bias correction, what the paper ran) or optax's")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="epochs between checkpoints")
    parser.add_argument("--out", type=output_path, default=Path("runs/stable_bptt"), help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the tables and figure from the epochs --out holds so far")
    cluster_arguments(parser, unit="a pole count's group each, one vmapped program")
    parser.epilog = GRID_COST


# what the default (full) grid costs, measured with benchmarks/stable_bptt_cost.py (docs/stable_bptt.md)
GRID_COST = ("The defaults run the paper's whole grid: 4 pole counts x 36 runs (4 flows x 3 clipping modes x "
             "3 seeds) x 32,000 updates, one program per pole count, resumable at every checkpoint. On a "
             f"2-core CPU that is about {MEASURED['stable_bptt_grid_mjx']} with --physics mjx (the default) and "
             f"{MEASURED['stable_bptt_grid_equations']} with --physics "
             "equations, by the CPU and its load (benchmarks/stable_bptt_cost.py; docs/stable_bptt.md).")


def _choices(text: str, valid, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if len(items) > 1 and "" in items:
        raise UserError(f"{what}: an empty item in {text!r}; give comma-separated values from "
                         f"{', '.join(map(str, valid))}")
    items = [t for t in items if t]
    bad = [t for t in items if t not in valid]
    repeated = sorted({t for t in items if items.count(t) > 1})
    problem = ("unknown " + ", ".join(bad) if bad else "repeated " + ", ".join(repeated) if repeated
               else "none given" if not items else None)
    if problem:
        raise UserError(f"{what}: {problem}; valid: {', '.join(map(str, valid))}")
    return items


def from_args(args: argparse.Namespace) -> tuple[list[int], list[str], list[str], int, Protocol]:
    """(pole counts, flows, clipping modes, seeds, protocol) of the arguments, each checked; the Ray
    options (`--workers`, `--ray-address`) in `args.cluster`."""
    poles = [int(p) for p in _choices(args.poles, [str(n) for n in range(1, 5)], "--poles")]
    flows = _choices(args.flows, FLOWS, "--flows")
    clips = _choices(args.clip, CLIPS, "--clip")
    for flag, value in (("--seeds", args.seeds), ("--epochs", args.epochs), ("--checkpoint-every", args.checkpoint_every)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    protocol = Protocol(epochs=args.epochs, states=args.states, physics=args.physics, adam=args.adam)
    args.cluster = cluster_options(args)
    # the training and test states, drawn in float64: (x, theta_i, and their rates) per state
    needed = 2 * protocol.states * 2 * (1 + max(poles)) * 8
    if needed > machine_memory():
        raise UserError(f"--states {protocol.states} needs at least {needed / 2**30:,.0f} GiB for the initial states "
                         f"alone, more than this machine's {machine_memory() / 2**30:,.0f} GiB")
    return poles, flows, clips, args.seeds, protocol
