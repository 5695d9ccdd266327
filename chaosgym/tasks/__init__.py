"""The chaosgym tasks: each one short module and one MJCF file in `assets/`, registered under its
id by `chaosgym.registry` (a task of your own: one `chaosgym.register` call)."""

from chaosgym.tasks.ant import Ant
from chaosgym.tasks.cartpole import CartPole
from chaosgym.tasks.double_pendulum import DoublePendulum

__all__ = ["Ant", "CartPole", "DoublePendulum"]
