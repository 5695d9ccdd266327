"""The chaosgym tasks: each one short module plus one MJCF file in `assets/`."""

from chaosgym.tasks.ant import Ant
from chaosgym.tasks.cartpole import CartPole
from chaosgym.tasks.double_pendulum import DoublePendulum

__all__ = ["Ant", "CartPole", "DoublePendulum"]
