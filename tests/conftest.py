"""Shared fixtures. Environments are built once per session, so their compiled functions are too.

`chaosgym.make` caches functional environments by id and options, and every Gymnasium adapter over
the same options reuses them; the fixtures here just make that sharing explicit and cheap to ask for.
"""

import gymnasium
import jax
import pytest

import chaosgym


@pytest.fixture(scope="session")
def cartpole() -> chaosgym.Env:
    return chaosgym.make("ChaosCartPole-v0")


@pytest.fixture(scope="session")
def pendulum() -> chaosgym.Env:
    return chaosgym.make("ChaosDoublePendulum-v0")


@pytest.fixture(scope="session")
def cartpole_start(cartpole) -> chaosgym.State:
    return cartpole.jit_reset(jax.random.key(0))


@pytest.fixture(scope="session")
def make_vector_env():
    """`make_vector_env(env_id, num_envs, **kwargs)`: one vector env per distinct argument set.

    Every test that uses one starts with `reset(seed=...)`, which restores all of its state.
    """
    built = {}

    def make_vector_env(env_id: str, num_envs: int, **kwargs) -> gymnasium.vector.VectorEnv:
        key = (env_id, num_envs, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = gymnasium.make_vec(env_id, num_envs=num_envs,
                                            vectorization_mode="vector_entry_point", **kwargs)
        return built[key]

    yield make_vector_env
    for env in built.values():
        env.close()

