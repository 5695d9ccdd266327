"""Per-task settings: what each agent starts from on a task, as plain data, with where it was read.

A task's `Presets` hold the score that counts as solved in `chaosgym compare` and, per agent, the
changes to that agent's own settings (`chaosgym.agents.settings`) it starts from on the task, each
with its source (`AgentPreset`). They are given to `chaosgym.register` with the task; a task
registered without presets gets `Presets()`, so every agent starts from its own defaults there.

The Ant's presets are each agent's authors' published settings. A setting that cannot carry over
from the authors' system to chaosgym's Ant is named in the preset's `differs`: DiffRL's Ant (SHAC,
AHAC) is a dflex model with its own reward (forward velocity + 0.1 up + heading + height, no action
cost, termination below 0.27 m, actions x 200) where chaosgym's is Brax's MJX Ant (forward velocity
+ 1 while healthy - 0.5 |a|^2, termination outside [0.2, 1.0] m); episodes are 1000 steps in both.
So settings carry over, scores do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# the gradient estimators (`chaosgym.functional.settings.ESTIMATORS`), named here JAX-free
ESTIMATOR_AGENTS = ("full", "truncated", "modified", "stopped", "combined", "es")


@dataclass(frozen=True)
class AgentPreset:
    """Changes to an agent's settings on a task (field -> value; the estimator's own as
    `estimator.<field>`), where they were read, and what of the source does not carry over."""

    settings: dict[str, Any]
    source: str
    differs: str = ""


@dataclass(frozen=True)
class Presets:
    """Settings a task suggests; every field has a default, so a new task may give none."""

    threshold: float = 0.0  # evaluation score (episode return) that counts as solved
    agents: dict[str, AgentPreset] = field(default_factory=dict)

    def of(self, agent: str) -> AgentPreset:
        """The preset of `agent` on this task (no changes where the task gives none)."""
        return self.agents.get(agent, AgentPreset({}, "the agent's own defaults (chaosgym.agents.settings)"))


def _estimators(source: str, truncation: int, **settings) -> dict[str, AgentPreset]:
    """The same preset for every gradient estimator; `truncated` also gets its window."""
    return {name: AgentPreset({**settings, **({"estimator.truncation": truncation} if name == "truncated" else {})},
                              source) for name in ESTIMATOR_AGENTS}


def _carried(source: str, **settings) -> dict[str, AgentPreset]:
    """The same preset for apg and shac, and for ahac with its own window (the published maximum
    horizon, 64, and its minimum 8 where the window allows)."""
    return {"apg": AgentPreset(settings, source), "shac": AgentPreset(
        {**settings, "critic_learning_rate": settings.get("learning_rate", 1e-3)}, source),
        "ahac": AgentPreset({**settings, "window": 64, "critic_learning_rate": settings.get("learning_rate", 1e-3)},
                            source)}


# ---- the multi-pole cart pole --------------------------------------------------------------------

_CARTPOLE_SOURCE = ("chaosgym's own, tuned on the 1-pole cart pole: 100-step episodes, so a whole-episode "
                    "rollout and 32-step windows of 16 envs")
CARTPOLE = Presets(threshold=50.0, agents={
    **_estimators(_CARTPOLE_SOURCE, truncation=20, learning_rate=3e-3, **{"estimator.horizon": 100}),
    **_carried(_CARTPOLE_SOURCE, num_envs=16, window=32, learning_rate=3e-3, hidden=(100, 100)),
    # 100-step episodes: shorter rollouts give more updates in a small budget
    "ppo": AgentPreset({"n_steps": 64, "batch_size": 256}, _CARTPOLE_SOURCE),
    "sac": AgentPreset({"learning_starts": 1_000}, _CARTPOLE_SOURCE),
    "td3": AgentPreset({"learning_starts": 1_000}, _CARTPOLE_SOURCE),
})

# ---- the double pendulum ---------------------------------------------------------------------------

_PENDULUM_SOURCE = "chaosgym's own defaults"
DOUBLE_PENDULUM = Presets(threshold=0.0, agents={
    **_estimators(_PENDULUM_SOURCE, truncation=20, learning_rate=1e-3, **{"estimator.horizon": 100}),
    **_carried(_PENDULUM_SOURCE, num_envs=16, window=32, learning_rate=1e-3, hidden=(100, 100)),
})

# ---- the Ant: each agent's authors' settings -------------------------------------------------------

# An Ant that stands still earns ~1 per step (the healthy reward), up to 1000 per 1000-step episode
# (untrained near-zero policies scored 876): 1500 asks for walking at ~0.5 m/s over whole episodes.
ANT_THRESHOLD = 1500.0

# AHAC's contact threshold C and dual step beta in MJX's units. The published C = 500 and beta = 5e-4
# are in dflex's units (contact forces of a 4e4-stiff penalty model); MJX's stiffness signal
# (`chaosgym.agents.ahac.stiffness`) is about 20x smaller on the Ant, so C = 500 never binds and H
# never leaves 8. Measured by experiments/ahac_stiffness.py (docs/data/ahac_stiffness.json): under
# AHAC's initial policy (tanh of a Gaussian of std e^-1 around ~0) the per-step stiffness averaged
# over the envs has median 29, 10th and 90th percentiles 23 and 37 (zero actions: 9; uniform random
# actions: 54). C is that median, so the dual ascent moves the horizon up when the policy's contacts
# grow stiffer and down when they soften; beta is set so that a stiffness the 10-90 % width (14)
# away from C carries H across [8, 64] in about half of a 4.1 M-step run of 128 envs x 64 steps (500
# updates): H ~ 8 exp(beta^2 (s - C) n^2 / 2) at n = 250 gives beta = 2.2e-3, rounded to 2e-3, with
# which the rule itself reaches 64 after about 270 updates (tests/test_ahac.py).
ANT_CONTACT_THRESHOLD = 30.0
ANT_DUAL_LEARNING_RATE = 2e-3

_DIFFRL_ANT = ("DiffRL's Ant is a dflex model with another reward (forward velocity + 0.1 up + heading + "
               "height above 0.27 m, no action cost) and actions x 200: settings carry over, scores do not. "
               "DiffRL's critic minibatches are not shuffled; chaosgym's are.")
ANT = Presets(threshold=ANT_THRESHOLD, agents={
    "apg": AgentPreset(
        {"num_envs": 64, "window": 32, "learning_rate": 1e-4, "lr_schedule": "exponential", "lr_decay": 0.997,
         "max_grad_norm": None, "clip_value": 1.0, "b1": 0.7, "b2": 0.95, "hidden": (32, 32, 32, 32),
         "activation": "elu", "layer_norm": True, "policy": "normal_tanh", "normalize_observations": True},
        "google/brax v0.14.2 (f489566): brax/training/agents/apg/train.py defaults (horizon_length 32, "
        "learning_rate 1e-4, adam_b (0.7, 0.95), use_schedule with schedule_decay 0.997 per update, "
        "optax.clip(1.0), max_gradient_norm 1e9) and apg/networks.py (4 x 32 ELU with LayerNorm, "
        "NormalTanhDistribution var_scale 0.1); num_envs 64 and normalize_observations from "
        "google-deepmind/mujoco mjx/training_apg.ipynb (the MJX APG tutorial). Brax publishes no Ant "
        "preset for this API (its Ant APG settings in brax#38/#144 are for the old API)",
        "hidden layers LeCun-normal where Brax's are orthogonal(0.01): LayerNorm after each cancels their "
        "scale; the envs start their episodes together where Brax scrambles each env's step counter"),
    "shac": AgentPreset(
        {"num_envs": 64, "window": 32, "learning_rate": 2e-3, "critic_learning_rate": 2e-3,
         "lr_schedule": "linear", "lr_final": 1e-5, "target_alpha": 0.2, "critic_iterations": 16,
         "critic_minibatches": 4, "gamma": 0.99, "lam": 0.95, "b1": 0.7, "b2": 0.95, "max_grad_norm": 1.0,
         "critic_max_grad_norm": 1.0, "hidden": (128, 64, 32), "critic_hidden": (64, 64), "activation": "elu",
         "layer_norm": True, "policy": "gaussian", "log_std_init": -1.0, "normalize_observations": True},
        "NVlabs/DiffRL (a4c0dd1): examples/cfg/shac/ant.yaml (64 actors, steps_num 32, 2000 epochs, actor "
        "[128, 64, 32] and critic [64, 64] ELU MLPs, lr 2e-3 both, linear lr schedule, target_critic_alpha "
        "0.2, critic_iterations 16, num_batch 4, gamma 0.99, lambda 0.95, betas [0.7, 0.95], grad_norm 1.0, "
        "obs_rms) and algorithms/shac.py, models/actor.py, models/critic.py (LayerNorm after each hidden "
        "layer, ActorStochasticMLP: tanh of a Gaussian sample, logstd init -1, the linear schedule ends at 1e-5)",
        _DIFFRL_ANT),
    "ahac": AgentPreset(
        {"num_envs": 128, "window": 64, "min_window": 8, "contact_threshold": ANT_CONTACT_THRESHOLD,
         "dual_learning_rate": ANT_DUAL_LEARNING_RATE, "learning_rate": 2e-3, "critic_learning_rate": 5e-4, "lr_schedule": "linear",
         "lr_final": 1e-5, "critic_iterations": None, "critic_minibatches": 4, "gamma": 0.99, "lam": 0.95,
         "b1": 0.7, "b2": 0.95, "max_grad_norm": 1.0, "critic_max_grad_norm": None, "num_critics": 2,
         "hidden": (400, 200, 100), "critic_hidden": (400, 200, 100), "activation": "elu", "layer_norm": True,
         "policy": "gaussian", "log_std_init": -1.0, "normalize_observations": True},
        "imgeorgiev/DiffRL (bb59db5, the AHAC authors' fork): scripts/cfg/alg/ahac.yaml (steps_min 8, "
        "steps_max 64, contact_threshold 500, lambd_lr 5e-4, linear lr schedule, critic_iterations empty: "
        "early stopping, critic_batches 4, gamma 0.99, lam 0.95, grad_norm 1.0) with scripts/cfg/env/ant.yaml's "
        "shac section (128 envs, actor_lr 2e-3, critic_lr 5e-4, [400, 200, 100] ELU MLPs, 2000 epochs) and "
        "src/shac/algorithms/ahac.py (betas (0.7, 0.95), no critic clipping, no target critic, double critic)",
        _DIFFRL_ANT + " C = 500 and lambd_lr 5e-4 are in dflex's units: calibrated to MJX's "
        "(ANT_CONTACT_THRESHOLD, ANT_DUAL_LEARNING_RATE). The published "
        "code simulates round(H) steps per epoch; chaosgym's window is always 64 steps cut into pieces of "
        "round(H), so 2000 published epochs are not 2000 updates here: runs are compared at equal env steps. "
        "Its dual step (lambd_lr) is not decayed with the learning rates."),
    "ppo": AgentPreset(
        {"num_envs": 16, "n_epochs": 10, "learning_rate": 3e-4, "gamma": 0.99,
         "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5,
         "hidden": (64, 64), "activation": "tanh", "normalize": True},
        "DLR-RM/rl-baselines3-zoo (22e3ff2): hyperparams/ppo.yml's Ant-v4 entry (normalize: true, MlpPolicy, "
        "everything else SB3's PPO defaults: n_steps 2048, batch_size 64, n_epochs 10, lr 3e-4, gamma 0.99, "
        "gae_lambda 0.95, clip_range 0.2, ent_coef 0, vf_coef 0.5, max_grad_norm 0.5, [64, 64] tanh); its "
        "2048-step rollout of one env spread over 16 envs (n_steps 128) as CleanRL and Brax scale a batch with "
        "the env count (`--set ppo.num_envs=N` keeps n_steps x N = 2048 unless n_steps is given)",
        "RL Zoo's 1 env steps 2048 steps per rollout; here 16 envs step 128 each (the same 2048-step batch)"),
})

PRESETS: dict[str, Presets] = {}  # filled by chaosgym.register


def presets(env_id: str) -> Presets:
    """The presets a task was registered with (the defaults for a task registered without)."""
    return PRESETS.get(env_id.rpartition(":")[2], Presets())
