"""The task ids chaosgym knows before any task, JAX or MuJoCo is imported.

`import chaosgym` registers every built-in id with Gymnasium from `BUILTIN` and fills in its presets
(`chaosgym.presets.PRESETS`): `gymnasium.make("ChaosAnt-v0")` finds the id, and a command line lists
the ids, checks them and shows each task's presets, all without importing JAX. The task classes
themselves load with `chaosgym.registry` (which imports and registers `chaosgym.tasks`) on first use.
"""

from __future__ import annotations

import ast

import gymnasium

from chaosgym import presets
from chaosgym.presets import PRESETS, Presets

# id -> (episode length, presets) of every built-in task `chaosgym.registry` registers, in its order; a test
# (tests/test_task_ids.py) checks this against the task classes
BUILTIN: dict[str, tuple[int, Presets]] = {
    "ChaosAnt-v0": (1000, presets.ANT),
    "ChaosCartPole-v0": (100, presets.CARTPOLE),
    "ChaosDoublePendulum-v0": (500, presets.DOUBLE_PENDULUM),
}


def register_with_gymnasium(env_id: str, episode_length: int) -> None:
    """`gymnasium.make(env_id)` and `gymnasium.make_vec(env_id, ...)`, through chaosgym's adapters."""
    if env_id not in gymnasium.registry:
        gymnasium.register(
            env_id,
            entry_point="chaosgym.gym_adapters:ChaosEnv",
            vector_entry_point="chaosgym.gym_adapters:ChaosVectorEnv",
            max_episode_steps=episode_length,
            kwargs={"env_id": env_id},
        )


def task_ids() -> list[str]:
    """Every registered task id: the built-ins, then those given to `chaosgym.register` since
    (each registered task has presets)."""
    return list(PRESETS)


def check_task_id(env_id: str) -> None:
    """Refuse an id no task is registered under, listing the valid ones."""
    if env_id not in PRESETS:
        raise ValueError(f"unknown task id {env_id!r}; valid ids: {', '.join(task_ids())}")


def parse_task_kwargs(text: str | None) -> dict:
    """`"num_poles=3,foo=1.5"` -> `{"num_poles": 3, "foo": 1.5}` (values are Python literals)."""
    kwargs = {}
    for item in filter(None, (text or "").split(",")):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"malformed --task-kwargs item {item!r}; expected NAME=VALUE[,NAME=VALUE...]")
        try:
            kwargs[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[name.strip()] = value.strip()
    return kwargs


for _env_id, (_length, _presets) in BUILTIN.items():
    PRESETS.setdefault(_env_id, _presets)
    register_with_gymnasium(_env_id, _length)
