"""chaosgym: chaotic control tasks on MuJoCo MJX.

Every task is a Gymnasium environment (`gymnasium.make("ChaosAnt-v0")`), a batched vector
environment (`gymnasium.make_vec`), and a pure differentiable JAX function (`chaosgym.make`).
"""

from chaosgym import _setup  # noqa: F401  (headless GL and the compilation cache, before mujoco)
from chaosgym.env import Env, State, Task
from chaosgym.registry import TASKS, make, register_gymnasium, task_options

register_gymnasium()

__all__ = ["Env", "State", "Task", "TASKS", "make", "task_options"]
__version__ = "0.1.0"
