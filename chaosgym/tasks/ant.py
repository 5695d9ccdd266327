"""ChaosAnt-v0: Brax's MJX Ant, the quadruped Metz et al. used to show exploding BPTT gradients.

As Brax models it: only a sphere at each leg tip touches the floor, and episodes start from its
standing pose (the MJCF's keyframe "home").
"""

import jax
import jax.numpy as jnp
import mujoco

from chaosgym.tasks.arrays import array_namespace
from chaosgym.tasks.base import Task
from chaosgym.validation import BOOL, NON_NEGATIVE, InvalidSetting, is_number


class Ant(Task):
    """Run forward. Reward = x-velocity of the torso + 1 (while healthy) - 0.5 |a|^2 (the weights are
    options, below).

    Observation (27): qpos without the torso's x, y (13) and qvel (14). The episode terminates when
    the torso height leaves [0.2, 1.0]. Reset: the standing pose (torso at 0.55 m, ankles bent 1 rad)
    + U(-0.1, 0.1), qvel = 0.1 N(0, 1), as Brax's Ant.

    Info, under Gymnasium's `Ant-v5` names: `reward_forward` (the x-velocity), `reward_ctrl` (minus
    the control cost), `reward_survive`, `x_position`, `y_position`, `distance_from_origin` (of the
    torso's x, y from the standing pose's), `x_velocity` and `y_velocity`; the reward has no contact
    cost, so there is no `reward_contact`. chaosgym 0.1's names `forward_reward`, `healthy_reward`
    and `ctrl_cost` (the cost itself) stay for this release as aliases, and go in the next.
    """

    asset = "ant.xml"
    frame_skip = 5
    episode_length = 1000
    render_camera = "track"

    def __init__(self, forward_reward_weight: float = 1.0, ctrl_cost_weight: float = 0.5, healthy_reward: float = 1.0,
                 terminate_when_unhealthy: bool = True, healthy_z_range: tuple[float, float] = (0.2, 1.0),
                 reset_noise_scale: float = 0.1):
        """The reward's weights and the episode's rules, under Gymnasium's Ant-v5 names (its defaults
        are Brax's Ant's): `gymnasium.make("ChaosAnt-v0", ctrl_cost_weight=0.1)`."""
        for name, value in (("forward_reward_weight", forward_reward_weight), ("ctrl_cost_weight", ctrl_cost_weight),
                            ("healthy_reward", healthy_reward), ("reset_noise_scale", reset_noise_scale)):
            NON_NEGATIVE(name, value)
        BOOL("terminate_when_unhealthy", terminate_when_unhealthy)
        low, high = healthy_z_range if isinstance(healthy_z_range, (tuple, list)) and len(healthy_z_range) == 2 \
            else (None, None)
        if not (is_number(low) and is_number(high) and low < high):
            raise InvalidSetting("healthy_z_range", f"must be two numbers (low, high) with low < high, got "
                                 f"{healthy_z_range!r}")
        self.forward_reward_weight, self.ctrl_cost_weight = float(forward_reward_weight), float(ctrl_cost_weight)
        self.healthy_reward, self.terminate_when_unhealthy = float(healthy_reward), terminate_when_unhealthy
        self.healthy_z_range, self.reset_noise_scale = (float(low), float(high)), float(reset_noise_scale)

    def bind(self, model: mujoco.MjModel) -> None:
        self._torso = model.body("torso").id
        self._home_xy = tuple(float(v) for v in model.key("home").qpos[:2])

    def initial_state(self, key, model):
        kq, kv = jax.random.split(key)
        noise = self.reset_noise_scale
        qpos = jnp.asarray(model.key("home").qpos) + jax.random.uniform(kq, (model.nq,), minval=-noise, maxval=noise)
        qvel = noise * jax.random.normal(kv, (model.nv,))
        return qpos, qvel

    def observation(self, data):
        return array_namespace(data).concatenate([data.qpos[2:], data.qvel])

    def _healthy(self, data):
        low, high = self.healthy_z_range
        return (data.qpos[2] >= low) & (data.qpos[2] <= high)

    def reward(self, data, action, next_data):
        xp = array_namespace(next_data)
        dt = next_data.time - data.time
        x, y = next_data.xpos[self._torso, 0], next_data.xpos[self._torso, 1]
        x_velocity = (x - data.xpos[self._torso, 0]) / xp.maximum(dt, 1e-9)
        y_velocity = (y - data.xpos[self._torso, 1]) / xp.maximum(dt, 1e-9)
        healthy = self._healthy(next_data).astype(x_velocity.dtype)
        survive = self.healthy_reward * healthy  # as Gymnasium's Ant-v5: paid while healthy
        forward = self.forward_reward_weight * x_velocity
        ctrl_cost = self.ctrl_cost_weight * xp.sum(xp.square(action))
        reward = forward + survive - ctrl_cost
        home_x, home_y = self._home_xy
        return reward, {
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_survive": survive,
            "x_position": x,
            "y_position": y,
            "distance_from_origin": xp.sqrt(xp.square(x - home_x) + xp.square(y - home_y)),
            "x_velocity": x_velocity,
            "y_velocity": y_velocity,
            # chaosgym 0.1's names, for this release
            "forward_reward": forward,
            "healthy_reward": survive,
            "ctrl_cost": ctrl_cost,
        }

    def terminated(self, data):
        if not self.terminate_when_unhealthy:
            return array_namespace(data).asarray(False)
        return ~self._healthy(data)
