"""Any chaosgym task as a Brax environment, for Brax's own trainers (`pip install chaosgym[brax]`).

    from brax.training.agents.ppo import train as ppo
    from chaosgym.brax import BraxEnv

    env = BraxEnv("ChaosAnt-v0")
    make_policy, params, _ = ppo.train(environment=env, episode_length=env.episode_length, ...)

`BraxEnv` is a `brax.envs.Env` (the abstract interface, not `PipelineEnv`: the physics is the
functional `chaosgym.Env`'s, frame skip, action clipping and non-finite-step rule included). Its
`reset` and `step` are those of `chaosgym.make(env_id, **task_kwargs)`, bit for bit; they map the
chaosgym `State` onto Brax's `State` so that Brax's training wrappers (`brax.envs.training.wrap`:
vmap, `EpisodeWrapper`, `AutoResetWrapper`) drive it as they drive Brax's own envs:

* `pipeline_state`: the whole chaosgym `State`. `step` continues from it, and `AutoResetWrapper`,
  which restores `pipeline_state` and `obs` where an episode ended (from `info["first_pipeline_state"]`),
  restores all of it, chaosgym's step counter included.
* `obs`, `reward`: chaosgym's.
* `done`: chaosgym's `terminated`, as 0.0 / 1.0. The time limit is Brax's: `EpisodeWrapper` counts
  `info["steps"]`, sets `done` at `episode_length` and marks such ends in `info["truncation"]`, from
  which PPO bootstraps the value of a cut episode instead of treating it as terminal. Give Brax's
  `train` the task's limit, `episode_length=env.episode_length`, and both limits agree (chaosgym's
  own `truncated` flag stays inside `pipeline_state`; nothing of Brax's reads it).
* `metrics`: the task's scalar `info` (its reward terms and `nonfinite_state`), as floats:
  `EpisodeWrapper` sums them per episode, and Brax's evaluator reports them as `eval/episode_<name>`.
* `info`: left to Brax's wrappers, which keep their own entries there.

Brax 0.14.2, the newest release, replicates its training state with `jax.device_put_replicated`,
which JAX removed in 0.10. Where JAX lacks it, importing this module puts it back, as Brax itself
later wrote it in place (google/brax@303d89dfac42919e5fde7c91f24c28a505373b24, "In-line definitions
of `jax.device_put_sharded` and `jax.device_put_replicated`"), so that Brax's trainers run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import chaosgym
from chaosgym import _mjx  # noqa: F401  (MJX first, its notice about Warp held back: Brax imports MJX too)

try:
    from brax.envs.base import Env as _BraxEnvInterface
    from brax.envs.base import State as BraxState
except ModuleNotFoundError as error:
    if error.name is None or error.name.split(".")[0] != "brax":
        raise  # Brax is there but one of its own dependencies is not: that error says which
    raise ModuleNotFoundError("chaosgym.brax needs Brax: pip install chaosgym[brax]", name="brax") from None

__all__ = ["BraxEnv", "BraxState"]


def _device_put_replicated(x, devices):
    """`x` stacked once per device along a new leading axis, one slice on each (Brax's own in-lined
    definition, google/brax@303d89df:brax/training/pmap.py)."""
    sharding = jax.NamedSharding(jax.sharding.Mesh(np.array(devices), ("_device_put_sharded",)),
                                 jax.P("_device_put_sharded"))

    def replicate(leaf):
        stack = jnp.stack if isinstance(leaf, jax.Array) else np.stack
        return jax.device_put(stack([leaf] * len(devices)), sharding)

    return jax.tree_util.tree_map(replicate, x)


if not hasattr(jax, "device_put_replicated"):
    jax.device_put_replicated = _device_put_replicated


class BraxEnv(_BraxEnvInterface):
    """The chaosgym task `env_id` (with its options `task_kwargs`) as a `brax.envs.Env`.

    `env` is the functional `chaosgym.Env` it wraps (`chaosgym.make`'s, shared with every other
    face of the same task and options); `episode_length` is the task's time limit, to give Brax's
    `train`. `episode_length=` here changes that limit as it does in `chaosgym.make`.
    """

    def __init__(self, env_id: str, episode_length: int | None = None, **task_kwargs):
        self.env = chaosgym.make(env_id, episode_length=episode_length, **task_kwargs)
        self.env_id = env_id

    def __repr__(self) -> str:
        return f"BraxEnv({self.env_id!r}, obs={self.observation_size}, act={self.action_size})"

    def reset(self, rng: jax.Array) -> BraxState:
        return self._brax_state(self.env.reset(rng))

    def step(self, state: BraxState, action: jax.Array) -> BraxState:
        # `metrics` and `info` keep what Brax's wrappers put there (the evaluator's `reward` metric;
        # steps, truncation, first states), as Brax's own envs keep it: a scan needs the same keys
        return self._brax_state(self.env.step(state.pipeline_state, action), state.metrics, state.info)

    def _brax_state(self, state: chaosgym.State, metrics: dict | None = None, info: dict | None = None) -> BraxState:
        dtype = state.reward.dtype
        # scalars only (per env, under vmap): Brax sums metrics over an episode, element by element
        task_metrics = {name: value.astype(dtype) for name, value in state.info.items() if jnp.ndim(value) == 0}
        return BraxState(pipeline_state=state, obs=state.obs, reward=state.reward, done=state.terminated.astype(dtype),
                         metrics={**(metrics or {}), **task_metrics}, info={} if info is None else info)

    @property
    def observation_size(self) -> int:
        return self.env.observation_size

    @property
    def action_size(self) -> int:
        return self.env.action_size

    @property
    def backend(self) -> str:
        return "mjx"

    @property
    def episode_length(self) -> int:
        return self.env.episode_length

    @property
    def dt(self) -> float:
        """Seconds of simulated time per step (the physics step times the task's frame skip)."""
        return self.env.dt
