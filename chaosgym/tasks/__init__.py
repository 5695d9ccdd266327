"""The chaosgym tasks: each one short module, one MJCF file in `assets/` and one `register` call."""

from chaosgym import presets
from chaosgym.registry import register
from chaosgym.tasks.ant import Ant
from chaosgym.tasks.cartpole import CartPole
from chaosgym.tasks.double_pendulum import DoublePendulum

register("ChaosAnt-v0", Ant, presets=presets.ANT)
register("ChaosCartPole-v0", CartPole, presets=presets.CARTPOLE)
register("ChaosDoublePendulum-v0", DoublePendulum, presets=presets.DOUBLE_PENDULUM)

__all__ = ["Ant", "CartPole", "DoublePendulum"]
