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

`batched_evaluation` plays the same episodes all at once, batched in MJX (what training uses
between updates): episode i starts from the key `held_out_keys` gives, the key
`reset(seed=seed + i)` draws.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.utils.seeding import np_random

import chaosgym  # noqa: F401  (registers the task ids with Gymnasium)
from chaosgym.functional.env import Env
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


class EpisodePrograms(NamedTuple):
    """The compiled programs of a batched evaluation that do not depend on the policy: every policy
    evaluated on one env with one episode count shares them (`episode_programs`)."""

    start: Callable  # keys (count,) -> (states, alive, rewards, failed) before step 0
    advance: Callable  # (states, alive, rewards, failed, actions, t) -> the same after step t
    score: Callable  # (rewards, final states, failed) -> (mean return, mean objective)


@functools.lru_cache(maxsize=None)
@keyed_by_arguments
def episode_programs(env: Env, count: int, *, key) -> EpisodePrograms:
    """The policy-free programs of `count` batched episodes on `env`, compiled once for every policy:
    what a rollout's scan does per step (`chaosgym.functional.rollout.rollout`: the step of every env,
    its reward while the episode is alive, whether a non-finite action was given while alive) and
    the scoring at the end."""
    objective = env.task.objective(env.task.reported_objective)

    def start(keys):  # what `advance` carries, made here: arguments of one kind every call, one program
        states = jax.vmap(env.reset)(keys)
        alive = jnp.ones(states.reward.shape, states.reward.dtype)
        return states, alive, jnp.zeros((env.episode_length,) + alive.shape, alive.dtype), jnp.zeros(alive.shape, bool)

    def advance(states, alive, rewards, failed, actions, t):
        failed = failed | (~jnp.all(jnp.isfinite(actions), axis=-1) & (alive > 0))
        next_states = jax.vmap(env.step)(states, actions)
        rewards = rewards.at[t].set(next_states.reward * alive)
        alive = alive * (1.0 - next_states.terminated.astype(alive.dtype))
        return next_states, alive, rewards, failed

    def score(rewards, final, failed):
        returns = jnp.where(failed, -jnp.inf, rewards.sum(axis=0))
        objectives = jnp.where(failed, jnp.nan, jax.vmap(objective, in_axes=(1, 0))(rewards, final.data))
        return jnp.mean(returns), jnp.mean(objectives)

    return EpisodePrograms(cached_jit(start, (key, "start")),
                           cached_jit(advance, (key, "advance"), donate_argnums=(2,)),
                           cached_jit(score, (key, "score")))


@functools.lru_cache(maxsize=None)
@keyed_by_arguments
def batched_evaluation(env: Env, policy: Callable, policy_name: str, *, key):
    """`evaluate(params, keys) -> (mean return, mean objective)` of the deterministic `policy`
    (named `policy_name`; its compiled program is keyed by every argument, `keyed_by_arguments`) for
    whole episodes from `keys`, all at once; failed episodes as in `evaluate`.

    The episodes are stepped from Python, one batched step at a time: the policy's own program is
    only its batched action (`act`), and the env's programs (`episode_programs`) are compiled once
    for every policy evaluated on that env, where one scan per policy would compile the env's
    reset and step into each (on the Ant, about 10 s of a 2-core CPU's compiling per agent). The
    numbers are those of one `rollout` over the episode length, bit for bit
    (tests/test_evaluation.py). The price is a dispatch per step: on a 2-core CPU 16 Ant episodes
    took 1.69 s against the scan's 1.33 s, 16 cart-pole episodes 0.070 s against 0.003 s
    (`python benchmarks/evaluation_cost.py`, 2026-12-05), outside the training clock.
    """
    def act(params, obs):
        return jax.vmap(policy, in_axes=(None, 0))(params, obs)

    act = cached_jit(act, (key, "act"))

    def evaluate(params, keys):
        programs = episode_programs(env, keys.shape[0])
        states, alive, rewards, failed = programs.start(keys)
        for t in range(env.episode_length):
            states, alive, rewards, failed = programs.advance(states, alive, rewards, failed,
                                                              act(params, states.obs), jnp.int32(t))
        return programs.score(rewards, states, failed)

    return evaluate
