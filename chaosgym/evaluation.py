"""The one evaluation protocol every agent is scored by, gradient-based or model-free.

A policy runs in the Gymnasium environment on MJX (`gymnasium.make(env_id, backend="mjx",
**task_kwargs)`, the physics the gradient agents train on) for whole episodes (until termination
or the task's time limit) from a fixed, seeded set of initial states: episode i starts from
`reset(seed=seed + i)`. The policy is called on one observation at a time
and should act deterministically. The protocol reports the episode return and the task objective
the task reports beside it (`Task.reported_objective`, lower is better; e.g. the cart pole's
final-state loss 1 - mean cos(angle) after the last step). An agent's `eval_score` in its
`metrics.csv` is the mean episode return on this protocol.

An episode whose policy gives a non-finite action (e.g. from diverged parameters) fails: its
return is -inf and its objective NaN, so a diverged run never ranks above a working one.

`batched_evaluation` plays the same episodes in one batched MJX rollout (what training uses
between updates): episode i starts from the key `held_out_keys` gives, the key
`reset(seed=seed + i)` draws.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.utils.seeding import np_random

import chaosgym  # noqa: F401  (registers the task ids with Gymnasium)
from chaosgym.functional.env import Env
from chaosgym.functional.rollout import rollout
from chaosgym.functional.trace_cache import cached_jit, keyed_by_arguments
from chaosgym.validation import POSITIVE_INT

# held-out initial states: far from the small seeds training runs use
EVAL_SEED = 1_000_000
EVAL_EPISODES = 16


def evaluate(policy_fn: Callable[[np.ndarray], np.ndarray], env_id: str, task_kwargs: dict | None = None,
             num_episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED) -> dict:
    """Score `policy_fn` (observation `(obs_dim,)` float32 -> action `(act_dim,)`) on the protocol,
    over `num_episodes` (a positive integer) episodes.

    Returns `mean_return`, `std_return`, `mean_objective`, `std_objective`, `mean_length`,
    `failed_episodes` (non-finite actions), and the per-episode lists `returns`, `objectives` and
    `lengths`.
    """
    POSITIVE_INT("num_episodes", num_episodes)
    # MJX: the physics the gradient agents train and evaluate on, so their scores are these exactly
    env = gymnasium.make(env_id, backend="mjx", **(task_kwargs or {}))
    task = env.unwrapped.env.task
    objective = task.objective(task.reported_objective)
    returns, objectives, lengths = [], [], []
    try:
        for episode in range(num_episodes):
            obs, _ = env.reset(seed=seed + episode)
            rewards, done, failed = [], False, False
            while not done:
                action = np.asarray(policy_fn(obs))
                if not np.all(np.isfinite(action)):
                    failed = True
                    break
                obs, reward, terminated, truncated, _ = env.step(action)
                rewards.append(reward)
                done = terminated or truncated
            lengths.append(len(rewards))
            if failed:
                returns.append(-np.inf)
                objectives.append(np.nan)
                continue
            final_data = env.unwrapped.state.data
            returns.append(float(np.sum(rewards)))
            objectives.append(float(objective(jnp.asarray(rewards, jnp.float32), final_data)))
    finally:
        env.close()
    return {
        "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
        "mean_objective": float(np.mean(objectives)), "std_objective": float(np.std(objectives)),
        "mean_length": float(np.mean(lengths)), "failed_episodes": int(np.sum(np.isneginf(returns))),
        "returns": returns, "objectives": objectives, "lengths": lengths,
    }


def held_out_keys(seed: int, count: int) -> jax.Array:
    """The reset keys of `gymnasium.make(task).reset(seed=seed + i)` for i < count."""
    seeds = [int(np_random(seed + i)[0].integers(0, 2**31 - 1)) for i in range(count)]
    return jax.vmap(jax.random.key)(np.array(seeds, np.uint32))


@functools.lru_cache(maxsize=None)
@keyed_by_arguments
def batched_evaluation(env: Env, policy: Callable, policy_name: str, *, key):
    """`evaluate(params, keys) -> (mean return, mean objective)` of the deterministic `policy`
    (named `policy_name`; the compiled program is keyed by every argument, `keyed_by_arguments`) for
    whole episodes from `keys`, in one batched rollout; failed episodes as in `evaluate`."""
    objective = env.task.objective(env.task.reported_objective)

    def evaluate(params, keys):
        states = jax.vmap(env.reset)(keys)
        _, trajectory = rollout(env, policy, params, states, env.episode_length)
        failed = trajectory.failed  # a non-finite action while the episode was alive, as in `evaluate`
        returns = jnp.where(failed, -jnp.inf, trajectory.rewards.sum(axis=0))
        objectives = jnp.where(failed, jnp.nan, jax.vmap(objective, in_axes=(1, 0))(trajectory.rewards,
                                                                                     trajectory.final_state.data))
        return jnp.mean(returns), jnp.mean(objectives)

    return cached_jit(evaluate, key)
