"""The names and settings of gradient flows, estimators, policies and optimisers, as plain data.

Nothing here imports JAX or MuJoCo: a command line builds its flags, and checks a setting, from
these before it pays for either. The modules that use them re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FLOWS = ("full", "truncated", "modified", "stopped")  # gradient flows of `chaosgym.functional.rollout`
ESTIMATORS = (*FLOWS, "combined", "es")  # gradient estimators of `chaosgym.functional.gradients`
POLICIES = ("tanh", "paper")  # policy networks of `chaosgym.functional.policies`
ADAM_FORMS = ("optax", "keras")  # Adam's forms of `chaosgym.agents.optimizer`
CARTPOLE_PHYSICS = ("mjx", "equations")  # the cart pole's `physics` option (`chaosgym.tasks.cartpole`)


def check_flow(flow: str, truncation: int | None, horizon: int) -> None:
    """Refuse a flow name that is not one of `FLOWS`, or a truncated flow without a window that fits."""
    if flow not in FLOWS:
        raise ValueError(f"unknown gradient flow {flow!r}; valid flows: {', '.join(FLOWS)}")
    if flow == "truncated" and (truncation is None or not 1 <= truncation <= horizon):
        raise ValueError(f"the truncated flow needs 1 <= truncation <= horizon ({horizon}), got {truncation!r}")


@dataclass(frozen=True)
class EstimatorConfig:
    """Everything an estimator needs besides the env and the policy (hashable: it keys compiles)."""

    # metadata: help text of the generated flags (chaosgym.flags); the command names the estimator
    name: str = field(default="full", metadata={"help": "gradient estimator", "choices": ESTIMATORS, "flag": False})
    horizon: int = field(default=100, metadata={"help": "rollout length in control steps"})
    objective: str = field(default="return", metadata={
        "help": "task objective to minimise (Task.objectives: return, or e.g. the cart pole's final_state)"})
    truncation: int | None = field(default=None, metadata={"help": "window K of the truncated flow"})
    remat: bool = field(default=False, metadata={"help": "checkpoint the rollout (memory ~ sqrt(horizon), slower)"})
    es_sigma: float = field(default=0.05, metadata={"help": "ES perturbation scale"})
    es_pairs: int = field(default=16, metadata={"help": "ES antithetic pairs per gradient"})
    es_rank_shaping: bool = field(default=False, metadata={"help": "ES: centred ranks of the losses"})
    # applied by the training optimiser (optax), to the estimator's gradient: after combination
    clip_norm: float | None = field(default=None, metadata={
        "help": "clip the gradient's global norm (optax.clip_by_global_norm)"})
    clip_value: float | None = field(default=None, metadata={"help": "clip each gradient component (optax.clip)"})

    def __post_init__(self):
        if self.name not in ESTIMATORS:
            raise ValueError(f"unknown gradient estimator {self.name!r}; valid: {', '.join(ESTIMATORS)}")
        if self.name in FLOWS:
            check_flow(self.name, self.truncation, self.horizon)
        if self.name == "es" and (self.es_sigma <= 0 or self.es_pairs < 1):
            raise ValueError("es needs es_sigma > 0 and es_pairs >= 1")
