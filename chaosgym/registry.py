"""Task ids, `register`, `make`: a task is registered once, here and with Gymnasium.

Importing this module registers the built-in tasks (the table `chaosgym.tasks.BUILTIN`), and imports
JAX and MJX; the ids alone, and their presets, are known without either (`chaosgym.tasks`). Every
function that takes a task id also takes Gymnasium's `module:EnvId` form, which imports the
module that registers the task.
"""

from __future__ import annotations

import functools
import inspect

import jax
import numpy as np

from chaosgym.functional.env import Env, Task, check_episode_length
from chaosgym.presets import PRESETS, Presets
from chaosgym.tasks import BUILTIN, load_class, register_with_gymnasium, resolve_task_id
from chaosgym.tasks import parse_task_kwargs  # noqa: F401  (re-exported)
from chaosgym.validation import InvalidSetting, UnknownOption, UserError

TASKS: dict[str, type[Task]] = {}  # filled by `register`


def register(env_id: str, task_class: type[Task], presets: Presets | None = None) -> None:
    """Make `task_class` a chaosgym task: `chaosgym.make(env_id)`, `gymnasium.make(env_id)`,
    `gymnasium.make_vec(env_id, ...)`, and every `chaosgym` command. `presets` are the settings
    agents start from on it (`chaosgym.presets.Presets`; the defaults if not given).
    """
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise TypeError(f"register({env_id!r}, ...) expects a subclass of chaosgym.Task, got {task_class!r}")
    if env_id in TASKS and TASKS[env_id] is not task_class:
        raise UserError(f"task id {env_id!r} is already registered to {TASKS[env_id].__name__}")
    import gymnasium

    if env_id in gymnasium.registry and gymnasium.registry[env_id].entry_point != "chaosgym.faces.gym_env:ChaosEnv":
        raise UserError(f"task id {env_id!r} is Gymnasium's {gymnasium.registry[env_id].entry_point}; "
                         "choose an id of your own")
    TASKS[env_id] = task_class
    PRESETS[env_id] = presets or Presets()
    register_with_gymnasium(env_id, task_class.episode_length)


def task_options(env_id: str) -> dict[str, object]:
    """The keyword options of a task and their defaults."""
    params = inspect.signature(_task_class(env_id)).parameters
    return {name: p.default for name, p in params.items()}


def _task_class(env_id: str) -> type[Task]:
    try:
        return TASKS[resolve_task_id(env_id)]
    except KeyError:
        raise UserError(f"unknown task id {env_id!r}; valid ids: {', '.join(TASKS)}") from None


def make_task(env_id: str, **kwargs) -> Task:
    options = task_options(env_id)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
        raise UnknownOption(f"{env_id} got unknown option(s) {', '.join(unknown)}; valid options (with defaults): {valid}")
    try:
        return _task_class(env_id)(**kwargs)
    except InvalidSetting as error:  # a task option, never a command's flag: the message as the task wrote it
        raise UserError(str(error)) from None


@functools.lru_cache(maxsize=None)
def _cached_env(env_id: str, options: tuple, episode_length: int | None, dtype: str) -> Env:
    return Env(make_task(env_id, **dict(options)), episode_length=episode_length)


def make(env_id: str, episode_length: int | None = None, **kwargs) -> Env:
    """The functional environment of a task, e.g. `make("ChaosCartPole-v0", num_poles=3)`.

    Environments are cached by id, options, episode length and JAX's float type (float64 once
    `jax_enable_x64` is on: the model's arrays are made in it), so every caller shares one set of
    compiled functions. Unknown ids and invalid options raise an error that lists what is valid.
    """
    env_id = resolve_task_id(env_id)
    make_task(env_id, **kwargs)  # validate before caching (where True would be 1)
    check_episode_length(episode_length)
    dtype = str(jax.dtypes.canonicalize_dtype(np.float64))
    return _cached_env(env_id, tuple(sorted(kwargs.items())), episode_length, dtype)


# the built-in tasks, from their one table
for _env_id, _builtin in BUILTIN.items():
    register(_env_id, load_class(_builtin.task_class), _builtin.presets)
