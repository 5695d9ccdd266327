"""Each agent's own settings, as frozen dataclasses: what `chaosgym train --agent X` takes beside
the run's shared settings, and what `config.json` records under "settings". Nothing here imports
JAX, torch or SB3: the command line builds its flags (one per field, `chaosgym.flags`) and checks
every value (each field's rule, `chaosgym.validation`) before paying for any of them.

* `EstimatorSettings`: the gradient estimators (full, truncated, modified, stopped, combined, es):
  a policy network, a batch of fresh initial states per update, the estimator's own settings
  (`chaosgym.functional.settings.EstimatorConfig`, of which each estimator reads its own).
* `APGSettings`, `SHACSettings`, `AHACSettings`: the carried-state agents. Their networks and
  optimiser schedules cover what each agent's authors published (ELU + LayerNorm MLPs, Gaussian or
  tanh-normal stochastic actors, linear or exponential learning-rate decay), so that a task's
  presets can give each agent its authors' settings (`chaosgym.presets`).
* `PPOSettings`, `SACSettings`, `TD3Settings`: Stable-Baselines3's algorithms.
* Brax's own PPO and APG: `chaosgym.agents.brax_config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from chaosgym.functional.settings import POLICIES, EstimatorConfig
from chaosgym.validation import (ADAM_BETA, BOOL, FRACTION, LAYERS, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE,
                                 POSITIVE_INT, Check, InvalidSetting, UserError, check_fields, is_number, one_of,
                                 setting)

ACTIVATIONS = ("tanh", "elu", "relu", "swish")
# the actor's output: a deterministic tanh; DiffRL's Gaussian with a learnt state-independent log
# std, squashed by tanh; Brax's tanh-normal whose scale the network outputs
POLICY_HEADS = ("deterministic", "gaussian", "normal_tanh")
LR_SCHEDULES = ("constant", "linear", "exponential")
OPTIONAL_POSITIVE = POSITIVE.optional()


class Settings:
    """What every agent's settings class does: check its fields, read and write plain JSON."""

    def __post_init__(self):
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Rules between fields (a field's own rule is in its metadata)."""

    def to_json(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict):
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(f"{cls.__name__} has no setting(s) {', '.join(unknown)}; its settings: {', '.join(known)}")
        values = {}
        for name, value in data.items():
            default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING \
                else known[name].default
            if dataclasses.is_dataclass(default):
                value = type(default)(**value)
            elif isinstance(default, tuple) or (isinstance(value, list) and name in _TUPLE_FIELDS):
                value = tuple(value)
            values[name] = value
        return cls(**values)


_TUPLE_FIELDS = {"hidden", "critic_hidden", "policy_hidden_layer_sizes", "value_hidden_layer_sizes"}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


# ---- gradient estimators ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EstimatorSettings(Settings):
    """An estimator agent: a policy network trained by Adam on the gradient `estimator` gives of
    the rollout loss from `batch_size` fresh initial states per update."""

    batch_size: int = field(default=16, metadata=setting("initial states per update", POSITIVE_INT))
    learning_rate: float = field(default=1e-3, metadata=setting("Adam step size", POSITIVE))
    hidden: tuple[int, ...] = field(default=(100, 100), metadata=setting(
        "hidden layer sizes of the policy, e.g. 100,100", LAYERS, items="layer sizes"))
    policy: str = field(default="tanh", metadata=setting(
        "policy network: tanh (tanh output in [-1, 1]) or paper (Schnell & Thuerey's linear-output controller)",
        one_of(*POLICIES), choices=POLICIES))
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig, metadata={"help": "gradient estimator"})


# ---- carried-state agents ----------------------------------------------------------------------

@dataclass(frozen=True)
class CarriedSettings(Settings):
    """Many envs, each carrying one long trajectory from update to update; an update
    backpropagates through a window of `window` steps of all of them."""

    num_envs: int = field(default=64, metadata=setting("environments, each carrying one trajectory", POSITIVE_INT))
    window: int = field(default=32, metadata=setting("steps backpropagated per update", POSITIVE_INT))
    learning_rate: float = field(default=1e-3, metadata=setting("Adam step size of the actor", POSITIVE))
    lr_schedule: str = field(default="constant", metadata=setting(
        "learning-rate schedule: constant; linear (to --lr-final over --decay-updates updates, DiffRL's); "
        "exponential (times --lr-decay per update, Brax APG's)", one_of(*LR_SCHEDULES), choices=LR_SCHEDULES))
    lr_final: float = field(default=1e-5, metadata=setting("linear schedule: the rate it ends at", POSITIVE))
    lr_decay: float = field(default=0.997, metadata=setting(
        "exponential schedule: the factor per update", Check(lambda v: is_number(v) and 0 < v <= 1, "in (0, 1]")))
    decay_updates: int | None = field(default=None, metadata=setting(
        "linear schedule: updates it decays over (default: the run's budget)", POSITIVE_INT.optional()))
    max_grad_norm: float | None = field(default=1.0, metadata=setting(
        "clip the actor's gradient to this global norm (none: no clipping)", OPTIONAL_POSITIVE))
    clip_value: float | None = field(default=None, metadata=setting(
        "clip each component of the actor's gradient to +-this (Brax APG's optax.clip(1.0))", OPTIONAL_POSITIVE))
    b1: float = field(default=0.7, metadata=setting("Adam's b1", ADAM_BETA))
    b2: float = field(default=0.95, metadata=setting("Adam's b2", ADAM_BETA))
    hidden: tuple[int, ...] = field(default=(64, 64), metadata=setting(
        "hidden layer sizes of the actor, e.g. 64,64", LAYERS, items="layer sizes"))
    activation: str = field(default="tanh", metadata=setting(
        "hidden activation of the networks", one_of(*ACTIVATIONS), choices=ACTIVATIONS))
    layer_norm: bool = field(default=False, metadata=setting("LayerNorm after each hidden layer's activation", BOOL))
    policy: str = field(default="deterministic", metadata=setting(
        "the actor's output while training: deterministic (tanh of the network), gaussian (tanh of a sample "
        "with a learnt state-independent std, DiffRL's) or normal_tanh (Brax's: the network gives the scale); "
        "evaluation acts on the mean", one_of(*POLICY_HEADS), choices=POLICY_HEADS))
    log_std_init: float = field(default=-1.0, metadata=setting("gaussian policy: initial log std",
                                                               Check(is_number, "a finite number")))
    init_output_scale: float = field(default=0.01, metadata=setting(
        "scale of the output layer's initial weights (near-zero first actions)", POSITIVE))
    normalize_observations: bool = field(default=True, metadata=setting(
        "normalise observations by running statistics", BOOL))

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.window


@dataclass(frozen=True)
class APGSettings(CarriedSettings):
    """APG along carried trajectories (Brax's updated analytic policy gradient)."""


@dataclass(frozen=True)
class CriticSettings(CarriedSettings):
    """A carried agent with a critic fitted to TD(lambda) targets of each window."""

    gamma: float = field(default=0.99, metadata=setting("discount", FRACTION))
    lam: float = field(default=0.95, metadata=setting("TD(lambda)'s lambda", FRACTION))
    critic_learning_rate: float = field(default=1e-3, metadata=setting("Adam step size of the critic", POSITIVE))
    critic_iterations: int | None = field(default=8, metadata=setting(
        "epochs of the critic fit per update (none: until its loss flattens, at most 64: AHAC's)",
        POSITIVE_INT.optional()))
    critic_minibatches: int = field(default=4, metadata=setting("minibatches per critic epoch", POSITIVE_INT))
    critic_hidden: tuple[int, ...] = field(default=(64, 64), metadata=setting(
        "hidden layer sizes of the critic", LAYERS, items="layer sizes"))
    critic_max_grad_norm: float | None = field(default=1.0, metadata=setting(
        "clip the critic's gradient to this global norm (none: no clipping)", OPTIONAL_POSITIVE))

    def check(self) -> None:
        super().check()
        if (self.num_envs * self.window) % self.critic_minibatches:
            raise InvalidSetting("critic_minibatches", f"({self.critic_minibatches}) must divide num_envs x window "
                                 f"({self.num_envs * self.window})")


@dataclass(frozen=True)
class SHACSettings(CriticSettings):
    """SHAC (Xu et al., ICLR 2022): the window's tail bootstrapped by a target critic."""

    target_alpha: float = field(default=0.2, metadata=setting(
        "Polyak rate of the target critic: V' <- alpha V' + (1 - alpha) V", FRACTION))


@dataclass(frozen=True)
class AHACSettings(CriticSettings):
    """AHAC (Georgiev et al., ICML 2024): SHAC whose backpropagated piece length adapts by a dual
    ascent on contact stiffness; a double critic and no target critic."""

    window: int = field(default=64, metadata=setting("steps per update: the maximum horizon (steps_max)", POSITIVE_INT))
    min_window: int | None = field(default=None, metadata=setting(
        "the minimum horizon (steps_min), where it starts (default: 8, as published, or the window if shorter)",
        POSITIVE_INT.optional()))
    contact_threshold: float = field(default=500.0, metadata=setting(
        "C: the stiffness the horizon's dual ascent holds the pieces under", NON_NEGATIVE))
    dual_learning_rate: float = field(default=5e-4, metadata=setting("beta: step of the dual and the horizon",
                                                                     POSITIVE))
    num_critics: int = field(default=2, metadata=setting("critics, bootstrapping with their minimum", POSITIVE_INT))
    critic_learning_rate: float = field(default=2e-3, metadata=setting("Adam step size of the critic", POSITIVE))
    learning_rate: float = field(default=2e-3, metadata=setting("Adam step size of the actor", POSITIVE))
    critic_iterations: int | None = field(default=None, metadata=setting(
        "epochs of the critic fit per update (none: until its loss flattens, at most 64, as published)",
        POSITIVE_INT.optional()))
    critic_max_grad_norm: float | None = field(default=None, metadata=setting(
        "clip the critic's gradient to this global norm (none, as published)", OPTIONAL_POSITIVE))

    def __post_init__(self):
        if self.min_window is None:
            object.__setattr__(self, "min_window", min(8, self.window))
        super().__post_init__()

    def check(self) -> None:
        super().check()
        if self.min_window > self.window:
            raise InvalidSetting("min_window", f"({self.min_window}) must not exceed window ({self.window})")


# ---- Stable-Baselines3 ------------------------------------------------------------------------------

SB3_DEVICES = ("auto", "cpu", "cuda")
ROLLOUT, MINIBATCHES = 2048, 32  # SB3's PPO: 2048 steps per rollout, minibatches of 64


@dataclass(frozen=True)
class SB3Settings(Settings):
    """What every SB3 agent shares: its env count, observation/reward normalisation, network, device,
    and any other keyword of the SB3 class (`extra`)."""

    num_envs: int = field(default=16, metadata=setting("environments stepped together (one MJX call)",
                                                       POSITIVE_INT))
    normalize: bool = field(default=True, metadata=setting(
        "VecNormalize the observations and rewards", BOOL))
    learning_rate: float = field(default=3e-4, metadata=setting("Adam step size", POSITIVE))
    gamma: float = field(default=0.99, metadata=setting("discount", FRACTION))
    hidden: tuple[int, ...] = field(default=(64, 64), metadata=setting(
        "hidden layer sizes of the policy and value networks (SB3's net_arch)", LAYERS, items="layer sizes"))
    activation: str = field(default="tanh", metadata=setting(
        "hidden activation (SB3's activation_fn)", one_of("tanh", "relu", "elu"), choices=("tanh", "relu", "elu")))
    device: str = field(default="auto", metadata=setting(
        "torch device of the networks: auto (the GPU where torch sees one), cpu or cuda",
        one_of(*SB3_DEVICES), choices=SB3_DEVICES))
    extra: dict = field(default_factory=dict, metadata=setting(
        "other keyword arguments of the SB3 class, e.g. use_sde=True (values are Python literals)",
        Check(lambda v: isinstance(v, dict), "a dict")))


@dataclass(frozen=True)
class PPOSettings(SB3Settings):
    """SB3's PPO; its defaults are SB3's own, which RL Zoo's MuJoCo Ant entry keeps."""

    n_steps: int | None = field(default=None, metadata=setting(
        "steps per env per rollout (default: 2048 // num_envs, SB3's 2048-step rollout spread over the envs)",
        POSITIVE_INT.optional()))
    batch_size: int | None = field(default=None, metadata=setting(
        "minibatch size (default: n_steps x num_envs // 32, CleanRL's 32 minibatches: SB3's 64 at 2048)",
        POSITIVE_INT.optional()))
    n_epochs: int = field(default=10, metadata=setting("epochs per rollout", POSITIVE_INT))
    gae_lambda: float = field(default=0.95, metadata=setting("GAE's lambda", FRACTION))
    clip_range: float = field(default=0.2, metadata=setting("PPO's clip range", POSITIVE))
    ent_coef: float = field(default=0.0, metadata=setting("entropy coefficient", NON_NEGATIVE))
    vf_coef: float = field(default=0.5, metadata=setting("value-loss coefficient", NON_NEGATIVE))
    max_grad_norm: float = field(default=0.5, metadata=setting("global gradient-norm clip", POSITIVE))
    log_std_init: float = field(default=0.0, metadata=setting("initial log std of the Gaussian policy",
                                                              Check(is_number, "a finite number")))
    ortho_init: bool = field(default=True, metadata=setting("orthogonal initialisation", BOOL))

    def __post_init__(self):
        # the defaults scale SB3's 2048-step batch to the env count (CleanRL's and Brax's convention)
        if self.n_steps is None:
            object.__setattr__(self, "n_steps", max(1, ROLLOUT // self.num_envs))
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", max(1, self.n_steps * self.num_envs // MINIBATCHES))
        super().__post_init__()


@dataclass(frozen=True)
class OffPolicySettings(SB3Settings):
    num_envs: int = field(default=1, metadata=setting("environments stepped together (one MJX call)", POSITIVE_INT))
    normalize: bool = field(default=False, metadata=setting("VecNormalize the observations and rewards", BOOL))
    learning_starts: int = field(default=10_000, metadata=setting(
        "env steps of random actions before learning (at most a tenth of the budget)", NON_NEGATIVE_INT))
    buffer_size: int = field(default=1_000_000, metadata=setting(
        "replay buffer size (at most the budget)", POSITIVE_INT))
    batch_size: int = field(default=256, metadata=setting("minibatch size", POSITIVE_INT))
    tau: float = field(default=0.005, metadata=setting("Polyak rate of the target networks",
                                                       Check(lambda v: is_number(v) and 0 < v <= 1, "in (0, 1]")))
    train_freq: int = field(default=1, metadata=setting("env steps between updates", POSITIVE_INT))
    gradient_steps: int = field(default=1, metadata=setting(
        "gradient steps per update (-1: as many as env steps collected)",
        Check(lambda v: isinstance(v, int) and not isinstance(v, bool) and (v >= 1 or v == -1), "an integer >= 1, or -1")))
    hidden: tuple[int, ...] = field(default=(256, 256), metadata=setting(
        "hidden layer sizes of the actor and critics (SB3's net_arch)", LAYERS, items="layer sizes"))
    activation: str = field(default="relu", metadata=setting(
        "hidden activation (SB3's activation_fn)", one_of("tanh", "relu", "elu"), choices=("tanh", "relu", "elu")))


@dataclass(frozen=True)
class SACSettings(OffPolicySettings):
    """SB3's SAC with its own defaults."""


@dataclass(frozen=True)
class TD3Settings(OffPolicySettings):
    """SB3's TD3 with its own defaults and Gaussian exploration noise."""

    learning_rate: float = field(default=1e-3, metadata=setting("Adam step size", POSITIVE))
    hidden: tuple[int, ...] = field(default=(400, 300), metadata=setting(
        "hidden layer sizes of the actor and critics (SB3's net_arch)", LAYERS, items="layer sizes"))
    action_noise: float = field(default=0.1, metadata=setting("std of the Gaussian exploration noise",
                                                              NON_NEGATIVE))
