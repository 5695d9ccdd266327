"""chaosgym: chaotic control tasks on MuJoCo MJX.

Every task is a Gymnasium environment (`gymnasium.make("ChaosAnt-v0")`), a batched vector
environment (`gymnasium.make_vec`), and a pure differentiable JAX function (`chaosgym.make`).
"""

from pathlib import Path

# In a source checkout (the repository root on sys.path, e.g. `python -c` there) the subpackages
# `chaosgym.agents` and `chaosgym.assets` are the top-level folders agents/ and assets/, which
# pyproject.toml maps into the package at install time: let them import the same way here.
_root = Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "agents" / "__init__.py").is_file():
    __path__.append(str(_root))

from chaosgym import _setup  # noqa: F401  (headless GL and the compilation cache, before mujoco)
from chaosgym.env import Env, State, Task
from chaosgym.presets import Presets
from chaosgym.registry import TASKS, make, register, task_options
from chaosgym.rollout import rollout  # the function, documented as chaosgym.rollout(...)
from chaosgym import tasks  # noqa: F401,E402  (registers the built-in tasks)

__all__ = ["Env", "Presets", "State", "Task", "TASKS", "make", "register", "rollout", "task_options"]
__version__ = "0.1.0"
