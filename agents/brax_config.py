"""Settings of Brax's own PPO and APG as chaosgym agents (`brax-ppo`, `brax-apg`; `chaosgym.agents.brax_agents`).

One frozen dataclass per agent; each field is a keyword of Brax's `train` (or of its network
factory) under Brax's own name, with the default of a published source, named beside it. Nothing
here imports JAX or Brax: the command line builds its flags from the fields (their metadata's
"help") and checks every value before paying for either.

Sources (`BX` = google/brax@f489566dcc44abb7aefa5a1b2d3b64246c54eb9d, tag v0.14.2):

* PPO: Brax's training notebook's preset for its Ant (BX:notebooks/training.ipynb, JSON line 250),
  the rest `brax.training.agents.ppo.train`'s defaults (BX:brax/training/agents/ppo/train.py
  L176-242) and `make_ppo_networks`' (BX:brax/training/agents/ppo/networks.py L91-107).
* APG: `brax.training.agents.apg.train`'s defaults (BX:brax/training/agents/apg/train.py L57-86)
  and `make_apg_networks`' (BX:brax/training/agents/apg/networks.py L62), but `num_envs` and
  `normalize_observations` from the MJX APG tutorial (google-deepmind/mujoco@a7255075b003506ff5f34b512d88e02df12a73c6:
  mjx/training_apg.ipynb, JSON lines 1370-1381): Brax publishes no APG preset for the current API.

`num_evals` counts evaluation points, the untrained policy's included, as Brax's `train` does;
chaosgym scores the policy on its own protocol at each (`chaosgym.evaluation`), and 11 puts them
at every tenth of the budget.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from chaosgym.validation import (ADAM_BETA, BOOL, FRACTION, LAYERS, NON_NEGATIVE, POSITIVE, POSITIVE_INT, Check,
                                 InvalidSetting, UserError, check_fields, int_at_least, number_in, setting, tuple_of)

EVALUATION_POINTS = setting(
    "evaluation points, the untrained policy's included (Brax's num_evals): 11 scores every tenth of the budget",
    int_at_least(2))


class _BraxSettings:
    """Checks every field's rule on construction; reads and writes plain JSON (tuples as lists)."""

    def __post_init__(self):
        check_fields(self)
        for f in dataclasses.fields(self):  # JSON gives lists: keep the frozen value hashable
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Rules between fields."""

    def to_json(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{cls.__name__} has no setting(s) {', '.join(unknown)}; its settings: {', '.join(known)}")
        return cls(**data)


@dataclass(frozen=True)
class BraxPPOConfig(_BraxSettings):
    """Brax's PPO (`brax.training.agents.ppo.train.train`) on a chaosgym task."""

    # BX:notebooks/training.ipynb L250 (Ant)
    num_envs: int = field(default=4096, metadata=setting("environments stepped in parallel", POSITIVE_INT))
    # BX:notebooks/training.ipynb L250 (Ant)
    batch_size: int = field(default=2048, metadata=setting("trajectories per minibatch", POSITIVE_INT))
    # BX:notebooks/training.ipynb L250 (Ant)
    unroll_length: int = field(default=5, metadata=setting("steps per trajectory", POSITIVE_INT))
    # BX:notebooks/training.ipynb L250 (Ant)
    num_minibatches: int = field(default=32, metadata=setting(
        "minibatches per batch of experience", POSITIVE_INT))
    # BX:notebooks/training.ipynb L250 (Ant)
    num_updates_per_batch: int = field(default=4, metadata=setting(
        "passes over each batch of experience", POSITIVE_INT))
    # BX:notebooks/training.ipynb L250 (Ant)
    learning_rate: float = field(default=3e-4, metadata=setting("Adam step size", POSITIVE))
    # BX:notebooks/training.ipynb L250 (Ant)
    entropy_cost: float = field(default=1e-2, metadata=setting("weight of the entropy bonus", NON_NEGATIVE))
    # BX:notebooks/training.ipynb L250 (Ant)
    discounting: float = field(default=0.97, metadata=setting("discount", FRACTION))
    # BX:notebooks/training.ipynb L250 (Ant)
    reward_scaling: float = field(default=10.0, metadata=setting("factor on rewards in the loss", POSITIVE))
    # BX:notebooks/training.ipynb L250 (Ant)
    normalize_observations: bool = field(default=True, metadata=setting(
        "normalise observations by running statistics", BOOL))
    # BX:brax/training/agents/ppo/train.py L206
    clipping_epsilon: float = field(default=0.3, metadata=setting("PPO's ratio clip", POSITIVE))
    # BX:brax/training/agents/ppo/train.py L208
    gae_lambda: float = field(default=0.95, metadata=setting("GAE's lambda", FRACTION))
    # BX:brax/training/agents/ppo/train.py L209
    max_grad_norm: float | None = field(default=None, metadata=setting(
        "clip the gradient to this global norm (None: no clipping)", POSITIVE.optional()))
    # BX:brax/training/agents/ppo/networks.py L95
    policy_hidden_layer_sizes: tuple[int, ...] = field(default=(32,) * 4, metadata=setting(
        "hidden layer sizes of the policy, e.g. 32,32,32,32", LAYERS, items="layer sizes"))
    # BX:brax/training/agents/ppo/networks.py L96
    value_hidden_layer_sizes: tuple[int, ...] = field(default=(256,) * 5, metadata=setting(
        "hidden layer sizes of the value network", LAYERS, items="layer sizes"))
    # BX:notebooks/training.ipynb L250 (Ant)
    action_repeat: int = field(default=1, metadata=setting("physics steps per action", POSITIVE_INT))
    # chaosgym's: every tenth of the budget (the notebook's Ant: 10)
    num_evals: int = field(default=11, metadata=EVALUATION_POINTS)

    @property
    def env_steps_per_training_step(self) -> int:
        """Env steps one of Brax's training steps collects (BX:brax/training/agents/ppo/train.py L367-369)."""
        return self.batch_size * self.unroll_length * self.num_minibatches * self.action_repeat

    def check(self) -> None:
        # Brax asserts it (BX:brax/training/agents/ppo/train.py L339): the unrolls fill the minibatches
        if self.batch_size * self.num_minibatches % self.num_envs:
            raise InvalidSetting("num_envs", f"({self.num_envs}) must divide batch_size x num_minibatches "
                                 f"({self.batch_size} x {self.num_minibatches}), as Brax's PPO requires")


@dataclass(frozen=True)
class BraxAPGConfig(_BraxSettings):
    """Brax's APG (`brax.training.agents.apg.train.train`) on a chaosgym task."""

    # google-deepmind/mujoco@a7255075b003506ff5f34b512d88e02df12a73c6:mjx/training_apg.ipynb L1374 (apg.train: 1)
    num_envs: int = field(default=64, metadata=setting("environments, each carrying one trajectory", POSITIVE_INT))
    # BX:brax/training/agents/apg/train.py L63
    horizon_length: int = field(default=32, metadata=setting("steps backpropagated per update", POSITIVE_INT))
    # BX:brax/training/agents/apg/train.py L69
    learning_rate: float = field(default=1e-4, metadata=setting("Adam step size", POSITIVE))
    # BX:brax/training/agents/apg/train.py L70
    adam_b: tuple[float, float] = field(default=(0.7, 0.95), metadata=setting(
        "Adam's b1 and b2, e.g. 0.7,0.95",
        Check(lambda v: len(v) == 2 and tuple_of(ADAM_BETA).test(v), "two numbers in [0, 1), e.g. 0.7,0.95"),
        items="b1,b2"))
    # BX:brax/training/agents/apg/train.py L71
    use_schedule: bool = field(default=True, metadata=setting(
        "decay the learning rate by schedule_decay every update", BOOL))
    # BX:brax/training/agents/apg/train.py L73
    schedule_decay: float = field(default=0.997, metadata=setting(
        "factor on the learning rate per update", number_in(0, 1, low_open=True)))
    # BX:brax/training/agents/apg/train.py L75
    max_gradient_norm: float = field(default=1e9, metadata=setting(
        "clip the gradient to this global norm (after Brax's fixed element-wise clip at 1)", POSITIVE))
    # google-deepmind/mujoco@a7255075b003506ff5f34b512d88e02df12a73c6:mjx/training_apg.ipynb L1380 (apg.train: False)
    normalize_observations: bool = field(default=True, metadata=setting(
        "normalise observations by running statistics", BOOL))
    # BX:brax/training/agents/apg/networks.py L62
    hidden_layer_sizes: tuple[int, ...] = field(default=(32,) * 4, metadata=setting(
        "hidden layer sizes of the policy, e.g. 32,32,32,32", LAYERS, items="layer sizes"))
    # BX:brax/training/agents/apg/train.py L66
    action_repeat: int = field(default=1, metadata=setting("physics steps per action", POSITIVE_INT))
    # chaosgym's: every tenth of the budget (apg.train: 1, BX:brax/training/agents/apg/train.py L65)
    num_evals: int = field(default=11, metadata=EVALUATION_POINTS)

    @property
    def env_steps_per_update(self) -> int:
        """Env steps one policy update simulates (BX:brax/training/agents/apg/train.py L292)."""
        return self.num_envs * self.horizon_length

    def check(self) -> None:
        if self.horizon_length % self.action_repeat:
            raise InvalidSetting("horizon_length", f"({self.horizon_length}) must be a multiple of action_repeat "
                                 f"({self.action_repeat}): Brax's APG unrolls horizon_length // action_repeat actions")


BRAX_SETTINGS = {"brax-ppo": BraxPPOConfig, "brax-apg": BraxAPGConfig}
