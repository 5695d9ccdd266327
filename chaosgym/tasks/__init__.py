"""The chaosgym tasks, and the one table of the built-in ones (`BUILTIN`), known without JAX.

A built-in task is one entry of `BUILTIN` (its class as "module:Class" and its presets), one short
module here and one MJCF file in `assets/`. `import chaosgym` registers every built-in id with
Gymnasium from this table without importing JAX or MuJoCo: the time limit Gymnasium needs is read
from the class's source (`episode_length = ...`), not by importing it. The task classes themselves
load with `chaosgym.registry`, on first use (`chaosgym.tasks.Ant` works too). A task of your own
is a `chaosgym.register` call from your own module (docs/custom_tasks.md).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path
from typing import NamedTuple

import gymnasium

from chaosgym import presets
from chaosgym.presets import PRESETS, Presets
from chaosgym.validation import UserError


class Builtin(NamedTuple):
    """A built-in task: its class ("module:Class") and the settings agents start from on it."""

    task_class: str
    presets: Presets


# id -> the task class and its presets, in the order every listing shows them
BUILTIN: dict[str, Builtin] = {
    "ChaosAnt-v0": Builtin("chaosgym.tasks.ant:Ant", presets.ANT),
    "ChaosCartPole-v0": Builtin("chaosgym.tasks.cartpole:CartPole", presets.CARTPOLE),
    "ChaosDoublePendulum-v0": Builtin("chaosgym.tasks.double_pendulum:DoublePendulum", presets.DOUBLE_PENDULUM),
}


def load_class(path: str) -> type:
    """The class "module:Class" names, its module imported."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def episode_length_of(path: str) -> int:
    """The `episode_length` a task class ("module:Class") sets in its own body, read from its source
    without importing it (the module imports JAX); a test checks it against the imported class."""
    module, _, name = path.partition(":")
    source = Path(importlib.util.find_spec(module).origin).read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            for item in node.body:
                if (isinstance(item, ast.Assign) and any(getattr(t, "id", None) == "episode_length" for t in item.targets)
                        and isinstance(item.value, ast.Constant)):
                    return int(item.value.value)
    raise LookupError(f"{path} sets no `episode_length = <int>` in its class body")


def register_with_gymnasium(env_id: str, episode_length: int) -> None:
    """`gymnasium.make(env_id)` and `gymnasium.make_vec(env_id, ...)`, through chaosgym's adapters."""
    if env_id not in gymnasium.registry:
        gymnasium.register(
            env_id,
            entry_point="chaosgym.faces.gym_env:ChaosEnv",
            vector_entry_point="chaosgym.faces.gym_env:ChaosVectorEnv",
            max_episode_steps=episode_length,
            kwargs={"env_id": env_id},
        )


def task_ids() -> list[str]:
    """Every registered task id: the built-ins, then those given to `chaosgym.register` since
    (each registered task has presets)."""
    return list(PRESETS)


def check_task_id(env_id: str) -> str:
    """The plain id of `env_id`, refusing an id no task is registered under (listing the valid
    ones). An id in Gymnasium's `module:EnvId` form imports its module first, whose
    `chaosgym.register` call registers the task."""
    plain = resolve_task_id(env_id)
    if plain not in PRESETS:
        raise UserError(f"unknown task id {env_id!r}; valid ids: {', '.join(task_ids())}")
    return plain


def resolve_task_id(env_id: str) -> str:
    """For an id in Gymnasium's `module:EnvId` form, import the module (which registers the task)
    and return the plain id; any other id as it is."""
    module, sep, plain = env_id.rpartition(":")
    if not sep:
        return env_id
    if plain not in PRESETS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            raise UserError(f"task id {env_id!r}: cannot import its module {module!r} ({error})") from None
    return plain


def parse_task_kwargs(text: str | None) -> dict:
    """`"num_poles=3,foo=1.5"` -> `{"num_poles": 3, "foo": 1.5}` (values are Python literals)."""
    kwargs = {}
    for item in filter(None, (text or "").split(",")):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"malformed --task-kwargs item {item!r}; expected NAME=VALUE[,NAME=VALUE...]")
        try:
            kwargs[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[name.strip()] = value.strip()
    return kwargs


def __getattr__(name: str):
    """`chaosgym.tasks.Ant` and the other built-in classes, imported on first use."""
    for builtin in BUILTIN.values():
        if builtin.task_class.rpartition(":")[2] == name:
            return load_class(builtin.task_class)
    raise AttributeError(f"module 'chaosgym.tasks' has no attribute {name!r}")


for _env_id, _builtin in BUILTIN.items():
    PRESETS.setdefault(_env_id, _builtin.presets)
    register_with_gymnasium(_env_id, episode_length_of(_builtin.task_class))
