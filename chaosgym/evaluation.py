"""The one evaluation protocol every agent is scored by, gradient-based or model-free.

A policy runs in the Gymnasium environment on MJX (`gymnasium.make(env_id, backend="mjx",
**task_kwargs)`, the physics the gradient agents train on) for whole episodes (until termination
or the task's time limit) from a fixed, seeded set of initial states: episode i starts from
`reset(seed=seed + i)`. The policy is called on one observation at a time
and should act deterministically. The protocol reports the episode return and the task objective
the task reports beside it (`Task.reported_objective`, lower is better; e.g. the cart pole's
final-state loss 1 - mean cos(angle) after the last step). An agent's `eval_score` in its
`metrics.csv` is the mean episode return on this protocol.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium
import jax.numpy as jnp
import numpy as np

import chaosgym  # noqa: F401  (registers the task ids with Gymnasium)

# held-out initial states: far from the small seeds training runs use
EVAL_SEED = 1_000_000
EVAL_EPISODES = 16


def evaluate(policy_fn: Callable[[np.ndarray], np.ndarray], env_id: str, task_kwargs: dict | None = None,
             num_episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED) -> dict:
    """Score `policy_fn` (observation `(obs_dim,)` float32 -> action `(act_dim,)`) on the protocol.

    Returns `mean_return`, `std_return`, `mean_objective`, `std_objective`, `mean_length`, and the
    per-episode lists `returns`, `objectives` and `lengths`.
    """
    # MJX: the physics the gradient agents train and evaluate on, so their scores are these exactly
    env = gymnasium.make(env_id, backend="mjx", **(task_kwargs or {}))
    task = env.unwrapped.env.task
    objective = task.objective(task.reported_objective)
    returns, objectives, lengths = [], [], []
    try:
        for episode in range(num_episodes):
            obs, _ = env.reset(seed=seed + episode)
            rewards, done = [], False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(np.asarray(policy_fn(obs)))
                rewards.append(reward)
                done = terminated or truncated
            final_data = env.unwrapped._state.data
            returns.append(float(np.sum(rewards)))
            objectives.append(float(objective(jnp.asarray(rewards, jnp.float32), final_data)))
            lengths.append(len(rewards))
    finally:
        env.close()
    return {
        "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
        "mean_objective": float(np.mean(objectives)), "std_objective": float(np.std(objectives)),
        "mean_length": float(np.mean(lengths)),
        "returns": returns, "objectives": objectives, "lengths": lengths,
    }
