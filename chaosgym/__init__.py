"""chaosgym: chaotic control tasks on MuJoCo MJX.

Every task is a Gymnasium environment (`gymnasium.make("ChaosAnt-v0")`), a batched vector
environment (`gymnasium.make_vec`), and a pure differentiable JAX function (`chaosgym.make`).
"""

import importlib
import sys
import types
from pathlib import Path

# In a source checkout (the repository root on sys.path, e.g. `python -c` there) the subpackages
# `chaosgym.agents` and `chaosgym.assets` are the top-level folders agents/ and assets/, which
# pyproject.toml maps into the package at install time: let them import the same way here.
_root = Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "agents" / "__init__.py").is_file():
    __path__.append(str(_root))

from chaosgym import _setup  # noqa: E402,F401  (headless GL and the compilation cache, before jax and mujoco)
from chaosgym import task_ids  # noqa: E402,F401  (registers the built-in ids with Gymnasium)

# The public names load on first use (PEP 562): `import chaosgym` imports neither JAX nor MuJoCo, so
# a command's --help, a Gymnasium id lookup and an argument error cost no JAX import.
_PUBLIC = {"Env": "chaosgym.env", "State": "chaosgym.env", "Task": "chaosgym.env", "Presets": "chaosgym.presets",
           "TASKS": "chaosgym.registry", "make": "chaosgym.registry", "register": "chaosgym.registry",
           "task_options": "chaosgym.registry", "rollout": "chaosgym.rollout"}
# the submodules `import chaosgym` used to import as a side effect, still reachable as attributes
_SUBMODULES = ("env", "presets", "registry", "tasks")

__all__ = ["Env", "Presets", "State", "Task", "TASKS", "make", "register", "rollout", "task_options"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"chaosgym.{name}")
    else:
        raise AttributeError(f"module 'chaosgym' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, *_SUBMODULES})


class _Package(types.ModuleType):
    """`chaosgym.rollout` is the function (documented as `chaosgym.rollout(...)`): importing the
    submodule of that name would otherwise set the attribute to the module."""

    def __setattr__(self, name: str, value) -> None:
        if name == "rollout" and isinstance(value, types.ModuleType):
            value = value.rollout
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
