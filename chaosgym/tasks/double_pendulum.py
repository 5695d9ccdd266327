"""ChaosDoublePendulum-v0: swing up and balance a chain of hinged links with a base torque."""

import jax
import jax.numpy as jnp

from chaosgym.tasks.arrays import array_namespace
from chaosgym.tasks.base import Task
from chaosgym.validation import NON_NEGATIVE, int_in

MAX_LINKS = 4


class DoublePendulum(Task):
    """A chain of `num_links` (1-4) links of 0.5 m and 1 kg, driven by a torque at the base joint.

    Observation (3N): cos, sin of each (relative) joint angle and the joint velocities. Reward:
    height of the chain's tip above the base as a fraction of the chain's length (1 when fully
    upright, -1 hanging down) minus 0.01 |a|^2. Reset: hanging down, angles and velocities
    ~ U[-0.1, 0.1] around rest. Unforced from a raised start, the chain is chaotic for 2+ links.
    """

    asset = "double_pendulum.xml"
    frame_skip = 1
    episode_length = 500
    render_camera = "front"
    link_length = 0.5

    def __init__(self, num_links: int = 2, ctrl_cost_weight: float = 0.01):
        int_in(1, MAX_LINKS)("num_links", num_links)
        NON_NEGATIVE("ctrl_cost_weight", ctrl_cost_weight)
        self.num_links, self.ctrl_cost_weight = int(num_links), float(ctrl_cost_weight)

    def edit_spec(self, spec):
        if self.num_links < MAX_LINKS:
            spec.delete(spec.body(f"link{self.num_links}"))

    def bind(self, model):
        self._tip = model.site(f"tip{self.num_links - 1}").id
        self._base_z = float(model.body("link0").pos[2])

    def initial_state(self, key, model):
        ka, kv = jax.random.split(key)
        n = self.num_links
        rest = jnp.zeros(n).at[0].set(jnp.pi)
        qpos = rest + jax.random.uniform(ka, (n,), minval=-0.1, maxval=0.1)
        qvel = jax.random.uniform(kv, (n,), minval=-0.1, maxval=0.1)
        return qpos, qvel

    def observation(self, data):
        xp = array_namespace(data)
        return xp.concatenate([xp.cos(data.qpos), xp.sin(data.qpos), data.qvel])

    def tip_height(self, data):
        return (data.site_xpos[self._tip, 2] - self._base_z) / (self.num_links * self.link_length)

    def reward(self, data, action, next_data):
        height = self.tip_height(next_data)
        xp = array_namespace(next_data)
        ctrl_cost = self.ctrl_cost_weight * xp.sum(xp.square(action))
        return height - ctrl_cost, {"tip_height": height, "ctrl_cost": ctrl_cost}
