"""chaosgym: chaotic control tasks on MuJoCo MJX.

Every task is a Gymnasium environment (`gymnasium.make("ChaosAnt-v0")`), a batched vector
environment (`gymnasium.make_vec`), and a pure differentiable JAX function (`chaosgym.make`).
"""

import importlib
import signal
import sys
from pathlib import Path

# The `chaosgym` command (its console script, or `python -m chaosgym.agents.cli`): a stop that comes
# while the package imports is held until the command's handler is in place (`chaosgym.agents.cli.main`
# unblocks it), so that no import's broad `except` can swallow it. A library import holds nothing.
HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_AS_COMMAND = Path(sys.argv[0]).name == "chaosgym" or list(getattr(sys, "orig_argv", [])[1:3]) == [
    "-m", "chaosgym.agents.cli"]
if _AS_COMMAND:
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)

# In a source checkout (the repository root on sys.path, e.g. `python -c` there) the subpackages
# `chaosgym.agents` and `chaosgym.assets` are the top-level folders agents/ and assets/, which
# pyproject.toml maps into the package at install time: let them import the same way here.
_root = Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "agents" / "__init__.py").is_file():
    __path__.append(str(_root))

from chaosgym import _setup  # noqa: E402,F401  (headless GL and the compilation cache, before jax and mujoco)
from chaosgym import tasks  # noqa: E402,F401  (registers the built-in ids with Gymnasium)

# The public names load on first use (PEP 562): `import chaosgym` imports neither JAX nor MuJoCo, so
# a command's --help, a Gymnasium id lookup and an argument error cost no JAX import.
_PUBLIC = {"Env": "chaosgym.functional.env", "State": "chaosgym.functional.env", "Task": "chaosgym.tasks.base",
           "Presets": "chaosgym.presets",
           "TASKS": "chaosgym.registry", "make": "chaosgym.registry", "register": "chaosgym.registry",
           "task_options": "chaosgym.registry", "rollout": "chaosgym.functional.rollout"}
# subpackages and modules reachable as attributes (`chaosgym.functional`, ...), imported on first use
_SUBMODULES = ("diagnostics", "faces", "functional", "presets", "registry", "tasks")

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

