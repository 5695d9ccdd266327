"""ChaosCartPole-v0: swing up N independent poles on one cart (Schnell & Thuerey, ICLR 2024)."""

import jax
import jax.numpy as jnp
import numpy as np

from chaosgym.env import Task

MAX_POLES = 4


class CartPole(Task):
    """One horizontal force on a cart swings up `num_poles` (1-4) poles that start hanging down.

    Observation (2 + 3N): cart x, cart velocity, then cos, sin and angular velocity of each pole
    (angle 0 is upright). Reward per step: mean over poles of cos(angle). The training objective is
    the final-state loss of the paper, 1 - mean cos(angle) after the last step. Reset: cart x and
    every velocity ~ U[-1, 1], each pole angle ~ pi + U[-pi/6, pi/6]. The action is the force in
    units of 50 N.
    """

    asset = "cartpole.xml"
    frame_skip = 1
    episode_length = 100
    render_camera = "track"

    def __init__(self, num_poles: int = 1):
        if isinstance(num_poles, bool) or not isinstance(num_poles, (int, np.integer)) or not 1 <= num_poles <= MAX_POLES:
            raise ValueError(f"num_poles must be an integer in 1..{MAX_POLES}, got {num_poles!r}")
        self.num_poles = int(num_poles)

    def edit_spec(self, spec):
        for i in range(self.num_poles, MAX_POLES):
            spec.delete(spec.body(f"pole{i}"))

    def initial_state(self, key, model):
        kx, ka, kv = jax.random.split(key, 3)
        n = self.num_poles
        x = jax.random.uniform(kx, (1,), minval=-1.0, maxval=1.0)
        angles = jnp.pi + jax.random.uniform(ka, (n,), minval=-jnp.pi / 6, maxval=jnp.pi / 6)
        qvel = jax.random.uniform(kv, (n + 1,), minval=-1.0, maxval=1.0)
        return jnp.concatenate([x, angles]), qvel

    def observation(self, data):
        angles = data.qpos[1:]
        return jnp.concatenate([data.qpos[:1], data.qvel[:1], jnp.cos(angles), jnp.sin(angles), data.qvel[1:]])

    def reward(self, data, action, next_data):
        upright = jnp.mean(jnp.cos(next_data.qpos[1:]))
        return upright, {"upright": upright, "cart_position": next_data.qpos[0]}

    def objective(self, rewards, final_data):
        return 1.0 - jnp.mean(jnp.cos(final_data.qpos[1:]))
