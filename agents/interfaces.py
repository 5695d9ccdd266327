"""What the training loop drives, as plain types: the algorithm modules (apg, shac, ahac, the
estimators) return these and import nothing else of the agents' machinery, and the loop
(`chaosgym.agents.loop`) takes them. Nothing here imports JAX."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Core(NamedTuple):
    """An agent's update in the form the loop drives, for one config: pure functions, jitted."""

    init: Callable  # key -> (params, opt_state)
    update: Callable  # (params, opt_state, seed_key, index) -> (params, opt_state, diagnostics)
    apply: Callable  # (params, obs) -> action: the deterministic policy that is evaluated
    name: str  # what the policy's compiled evaluation goes by


class Carried(NamedTuple):
    """An agent whose envs each carry one long trajectory from update to update (apg, shac, ahac):
    the functions of its module, for its settings object (`chaosgym.agents.settings`). `params` are
    what `policy` evaluates; the train state is the agent's whole state."""

    init: Callable  # (env, settings, key, env_state=None) -> train state
    # (env, settings) -> pure (train state, key, fresh=None) -> (train state, metrics); `env_state` and
    # `fresh`, where given, are `reset_batch(env, init_env_key(key) or update_env_key(key), num_envs)`
    make_update: Callable
    inference_params: Callable  # train state -> what `policy` evaluates
    policy: Callable  # (params, obs) -> action (deterministic)
    name: str  # the module's name: what its compiled programs go by
    # the keys its batches of fresh states are drawn with, so that the loop draws them in one program
    # shared by every carried agent with that env and batch size (`chaosgym.agents.loop.restart_program`)
    init_env_key: Callable  # init's key -> the key of the envs' first states
    update_env_key: Callable  # an update's key -> the key of the states that ended episodes restart from
