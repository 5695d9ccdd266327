"""ChaosAnt-v0: Brax's MJX Ant, the quadruped Metz et al. used to show exploding BPTT gradients.

As Brax models it: only a sphere at each leg tip touches the floor, and episodes start from its
standing pose (the MJCF's keyframe "home").
"""

import jax
import jax.numpy as jnp
import mujoco

from chaosgym.tasks.arrays import array_namespace
from chaosgym.tasks.base import Task


class Ant(Task):
    """Run forward. Reward = x-velocity of the torso + 1 (while healthy) - 0.5 |a|^2.

    Observation (27): qpos without the torso's x, y (13) and qvel (14). The episode terminates when
    the torso height leaves [0.2, 1.0]. Reset: the standing pose (torso at 0.55 m, ankles bent 1 rad)
    + U(-0.1, 0.1), qvel = 0.1 N(0, 1), as Brax's Ant.
    """

    asset = "ant.xml"
    frame_skip = 5
    episode_length = 1000
    render_camera = "track"
    healthy_z = (0.2, 1.0)
    ctrl_cost_weight = 0.5
    reset_noise = 0.1

    def bind(self, model: mujoco.MjModel) -> None:
        self._torso = model.body("torso").id

    def initial_state(self, key, model):
        kq, kv = jax.random.split(key)
        noise = self.reset_noise
        qpos = jnp.asarray(model.key("home").qpos) + jax.random.uniform(kq, (model.nq,), minval=-noise, maxval=noise)
        qvel = noise * jax.random.normal(kv, (model.nv,))
        return qpos, qvel

    def observation(self, data):
        return array_namespace(data).concatenate([data.qpos[2:], data.qvel])

    def _healthy(self, data):
        low, high = self.healthy_z
        return (data.qpos[2] >= low) & (data.qpos[2] <= high)

    def reward(self, data, action, next_data):
        xp = array_namespace(next_data)
        dt = next_data.time - data.time
        x_velocity = (next_data.xpos[self._torso, 0] - data.xpos[self._torso, 0]) / xp.maximum(dt, 1e-9)
        healthy = self._healthy(next_data).astype(x_velocity.dtype)
        ctrl_cost = self.ctrl_cost_weight * xp.sum(xp.square(action))
        reward = x_velocity + healthy - ctrl_cost
        return reward, {
            "forward_reward": x_velocity,
            "healthy_reward": healthy,
            "ctrl_cost": ctrl_cost,
            "x_position": next_data.xpos[self._torso, 0],
        }

    def terminated(self, data):
        return ~self._healthy(data)
