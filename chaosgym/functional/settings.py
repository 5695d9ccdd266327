"""The names and settings of gradient flows, estimators, policies and optimisers, as plain data.

Nothing here imports JAX or MuJoCo: a command line builds its flags, and checks a setting, from
these before it pays for either. The modules that use them re-export them.

An estimator is one entry of `ESTIMATOR_SPECS` (its name, the flows whose backward passes it
combines, the settings it reads, its diagnostics' names, its rollouts per update) and one function
in `chaosgym.functional.gradients` (`register_estimator` adds both). Everything that knows
estimators reads them from there: `make_estimator`, the diagnostics, `reproduce`'s grid program,
the agents' registry and the run folders' metrics columns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from chaosgym.validation import BOOL, POSITIVE, POSITIVE_INT, UserError, check_fields

FLOWS = ("full", "truncated", "modified", "stopped")  # gradient flows of `chaosgym.functional.rollout`


@dataclass(frozen=True)
class EstimatorSpec:
    """What is known of a gradient estimator before any JAX: the facts commands and tables need."""

    name: str
    summary: str
    # the gradient flows whose backward passes it takes, in order (none: forward passes only, ES)
    flows: tuple[str, ...]
    # the `EstimatorConfig` settings it reads beyond those every estimator reads (COMMON_SETTINGS)
    reads: frozenset[str] = frozenset()
    # its own diagnostics, by name: metrics.csv columns after the common ones
    metrics: tuple[str, ...] = ()
    # rollouts of batch x horizon steps it simulates per gradient
    rollouts: Callable[[EstimatorConfig], int] = lambda config: 1
    # its own settings' defaults where `EstimatorConfig`'s do not serve it (the truncated flow's window)
    defaults: tuple[tuple[str, object], ...] = ()


# every estimator reads these settings of `EstimatorConfig`
COMMON_SETTINGS = frozenset({"horizon", "objective", "clip_norm", "clip_value"})
ESTIMATOR_SPECS: dict[str, EstimatorSpec] = {spec.name: spec for spec in (
    EstimatorSpec("full", "backpropagation through the whole rollout", ("full",), frozenset({"remat"})),
    EstimatorSpec("truncated", "backpropagation through windows of --truncation steps", ("truncated",),
                  frozenset({"remat", "truncation"}), defaults=(("truncation", 20),)),
    EstimatorSpec("modified", "Stable BPTT's modified flow: the state's path through the policy cut", ("modified",),
                  frozenset({"remat"})),
    EstimatorSpec("stopped", "the sum of one-step gradients: every state a constant", ("stopped",),
                  frozenset({"remat"})),
    EstimatorSpec("combined", "per parameter, the modified gradient where it agrees with the full one",
                  ("modified", "full"), frozenset({"remat"}), ("cosine_modified_full", "fraction_zeroed"),
                  rollouts=lambda config: 2),
    EstimatorSpec("es", "antithetic evolution strategies: no gradient through the simulator", (),
                  frozenset({"es_sigma", "es_pairs", "es_rank_shaping"}), rollouts=lambda config: 2 * config.es_pairs),
)}
# the built-in estimators' names (`ESTIMATOR_SPECS` holds any registered since)
ESTIMATORS = tuple(ESTIMATOR_SPECS)
POLICIES = ("tanh", "paper")  # policy networks of `chaosgym.functional.policies`
ADAM_FORMS = ("optax", "keras")  # Adam's forms of `chaosgym.agents.optimizer`
CARTPOLE_PHYSICS = ("mjx", "equations")  # the cart pole's `physics` option (`chaosgym.tasks.cartpole`)


def check_flow(flow: str, truncation: int | None, horizon: int) -> None:
    """Refuse a flow name that is not one of `FLOWS`, or a truncated flow without a window that fits."""
    if flow not in FLOWS:
        raise UserError(f"unknown gradient flow {flow!r}; valid flows: {', '.join(FLOWS)}")
    if flow == "truncated" and (truncation is None or not 1 <= truncation <= horizon):
        raise UserError(f"the truncated flow needs 1 <= truncation <= horizon ({horizon}), got {truncation!r}")


@dataclass(frozen=True)
class EstimatorConfig:
    """Everything an estimator needs besides the env and the policy (hashable: it keys compiles)."""

    # metadata: help text of the generated flags (chaosgym.flags); the command names the estimator
    name: str = field(default="full", metadata={"help": "gradient estimator", "choices": ESTIMATORS, "flag": False})
    horizon: int = field(default=100, metadata={"help": "rollout length in control steps", "check": POSITIVE_INT})
    objective: str = field(default="return", metadata={
        "help": "task objective to minimise (Task.objectives: return, or e.g. the cart pole's final_state)"})
    truncation: int | None = field(default=None, metadata={"help": "window K of the truncated flow",
                                                            "check": POSITIVE_INT.optional()})
    remat: bool = field(default=False, metadata={"help": "checkpoint the rollout (memory ~ sqrt(horizon), slower)",
                                                 "check": BOOL})
    es_sigma: float = field(default=0.05, metadata={"help": "ES perturbation scale", "check": POSITIVE})
    es_pairs: int = field(default=16, metadata={"help": "ES antithetic pairs per gradient", "check": POSITIVE_INT})
    es_rank_shaping: bool = field(default=False, metadata={"help": "ES: centred ranks of the losses", "check": BOOL})
    # applied by the training optimiser (optax), to the estimator's gradient: after combination
    clip_norm: float | None = field(default=None, metadata={
        "help": "clip the gradient's global norm (optax.clip_by_global_norm)", "check": POSITIVE.optional()})
    clip_value: float | None = field(default=None, metadata={"help": "clip each gradient component (optax.clip)",
                                                             "check": POSITIVE.optional()})

    def __post_init__(self):
        check_fields(self)
        if self.name not in ESTIMATOR_SPECS:
            raise UserError(f"unknown gradient estimator {self.name!r}; valid: {', '.join(ESTIMATOR_SPECS)}")
        if self.name in FLOWS:
            check_flow(self.name, self.truncation, self.horizon)

    @property
    def spec(self) -> EstimatorSpec:
        return ESTIMATOR_SPECS[self.name]

    def read(self) -> dict:
        """The settings this estimator reads (what a run's config.json records)."""
        names = {"name"} | COMMON_SETTINGS | self.spec.reads
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names}
