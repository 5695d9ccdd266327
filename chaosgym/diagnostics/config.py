"""`chaosgym diagnose`'s settings, `DiagnoseConfig`, and the flags generated from it (`chaosgym.flags`).

Nothing here imports JAX or MuJoCo: `chaosgym diagnose --help` and a wrong flag answer at once; the
diagnostics themselves are `chaosgym.diagnostics.command`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from chaosgym import flags
from chaosgym.functional.settings import ESTIMATORS, EstimatorConfig
from chaosgym.tasks import check_task_id, task_ids
from chaosgym.validation import (LAYERS, SEED, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check_fields, int_at_least,
                                 one_or_more_of, setting, tuple_of)

DIAGNOSTICS = ("lyapunov", "jacobian", "gradvar", "landscape")
MODES = ("unforced", "policy")
CHAOS, GRADVAR, LANDSCAPE = "lyapunov and jacobian", "gradvar", "landscape"  # argument groups of --help


def _setting(default, text: str, check=None, **metadata):
    """A field with its default, help text, rule (`chaosgym.validation`) and the rest of the metadata
    its flag is generated from (`chaosgym.flags`)."""
    return field(default=default, metadata=setting(text, check, **metadata))


POSITIVE_INTS = LAYERS.saying("one or more positive integers, e.g. 10,30")
SCALES = tuple_of(POSITIVE).saying("one or more finite numbers > 0")
# checked only where gradvar runs
GRADVAR_SAMPLES = int_at_least(3).saying(
    "an integer >= 3 (the signal-to-noise ratio's error needs at least 3 gradients)")


@dataclass(frozen=True, kw_only=True)
class DiagnoseConfig:
    """Everything `chaosgym diagnose` does: which diagnostics, of which task and policy, and how.

    The gradient estimators' own settings (truncation window, ES) are the nested `EstimatorConfig`'s;
    which estimators run is `estimators`, and their horizons are `horizons`.
    """

    task: str | None = _setting(None, f"task id ({', '.join(task_ids())}, or module:TaskId of your own); if omitted, "
                                      "the task of --policy")
    task_kwargs: dict | None = _setting(
        None, "task options, e.g. num_links=3; if omitted, those of --policy (or none)")
    what: tuple[str, ...] = _setting(DIAGNOSTICS, f"comma-separated diagnostics out of {','.join(DIAGNOSTICS)}",
                                     one_or_more_of(*DIAGNOSTICS), choices=DIAGNOSTICS, items="diagnostics")
    policy: str | None = _setting(
        None, "run folder of `chaosgym train` or `compare` (any agent): its own trained policy; if omitted, a "
              "random MLP policy")
    hidden: tuple[int, ...] = _setting((100, 100), "hidden layer sizes of the random policy", POSITIVE_INTS,
                                       items="layer sizes")
    seed: int = _setting(0, "seed of the random policy, initial states and directions", SEED)
    out: Path = field(metadata={"help": "output folder for CSV files and plots"})
    start_qpos: tuple[float, ...] | None = _setting(
        None, "comma-separated qpos replacing that of every initial state, e.g. 1.5708,0 for a raised double "
        "pendulum", items="qpos values", example="1.5708,0")
    no_termination: bool = _setting(
        False, "episodes never end inside a rollout (the task's termination is ignored), as in Metz et al.")
    no_progress: bool = _setting(False, "hide the progress bars (what runs and compiles is still said, one line each)")
    overwrite: bool = _setting(False, "replace the files of an earlier diagnose in --out (refused without it)")

    modes: tuple[str, ...] = _setting(MODES, "unforced: zero actions (open loop); policy: the policy in closed loop",
                                      one_or_more_of(*MODES), choices=MODES, items="modes", group=CHAOS)
    num_states: int = _setting(8, "initial states (one estimate each)", POSITIVE_INT, group=CHAOS)
    lyapunov_steps: int = _setting(1000, "control steps averaged per estimate", POSITIVE_INT, group=CHAOS)
    lyapunov_k: int = _setting(2, "number of leading exponents", POSITIVE_INT, group=CHAOS)
    transient: int = _setting(100, "control steps run first and discarded", NON_NEGATIVE_INT, group=CHAOS)
    jacobian_horizon: int = _setting(100, "control steps of the Jacobian trajectory", POSITIVE_INT, group=CHAOS)

    horizons: tuple[int, ...] = _setting((10, 30, 100), "rollout horizons", POSITIVE_INTS, items="horizons",
                                         group=GRADVAR)
    weight_scales: tuple[float, ...] = _setting(
        (1.0,), "factors on the policy's weight matrices, e.g. 0.1,1,3; each also gets the closed loop's maximal "
        "Lyapunov exponent (--lyapunov-steps, --transient)", SCALES, items="positive numbers", example="0.1,1,3",
        group=GRADVAR)
    estimators: tuple[str, ...] = _setting(("full", "es"), f"out of {','.join(ESTIMATORS)}",
                                           one_or_more_of(*ESTIMATORS), choices=ESTIMATORS, items="estimators",
                                           group=GRADVAR)
    gradvar_samples: int = _setting(16, "initial states, one gradient each (at least 3)", group=GRADVAR)
    estimator: EstimatorConfig = field(default_factory=lambda: EstimatorConfig(truncation=10), metadata={
        "help": "settings of the gradient estimators", "group": GRADVAR,
        "only": ("truncation", "es_sigma", "es_pairs", "remat")})
    chunk: int | None = _setting(
        None, "gradients computed at once under vmap (fewer: less memory) (default: all)", POSITIVE_INT.optional(),
        group=GRADVAR)

    landscape_horizons: tuple[int, ...] = _setting((10, 30, 100), "rollout horizons", POSITIVE_INTS, items="horizons",
                                                   group=LANDSCAPE)
    landscape_points: int = _setting(41, "points of the 1-D slice", POSITIVE_INT, group=LANDSCAPE)
    landscape_plane: int = _setting(11, "points per side of the 2-D slice (0: none)", NON_NEGATIVE_INT, group=LANDSCAPE)
    landscape_radius: float = _setting(1.0, "largest offset, in units of the filter-normalised direction", POSITIVE,
                                       group=LANDSCAPE)
    landscape_states: int = _setting(4, "initial states averaged in the loss", POSITIVE_INT, group=LANDSCAPE)
    landscape_chunk: int | None = _setting(
        None, "parameter points evaluated at once under vmap (default: all)", POSITIVE_INT.optional(), group=LANDSCAPE)

    def __post_init__(self):
        if self.task is not None:
            check_task_id(self.task)
        object.__setattr__(self, "out", Path(self.out))
        check_fields(self)
        POSITIVE_INT("truncation", self.estimator.truncation)  # optional to the estimator, given here
        if "gradvar" in self.what:
            GRADVAR_SAMPLES("gradvar_samples", self.gradvar_samples)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_arguments(parser, DiagnoseConfig)


def config_from_args(args: argparse.Namespace) -> DiagnoseConfig:
    """The `DiagnoseConfig` of the flags given; the rest are its defaults."""
    return flags.build(DiagnoseConfig, flags.given(args, DiagnoseConfig))
