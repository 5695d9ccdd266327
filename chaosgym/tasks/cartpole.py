"""ChaosCartPole-v0: Schnell & Thuerey's multi-pole cart pole (ICLR 2024), on MJX.

The paper's system, as its published code integrates it: every pole i obeys the classic
frictionless single-pole cart-pole equation under the same force F (g = 9.8, pole 0.1 kg, total
mass 1.1 kg, a uniform 1 m rod), and no pole feels another; semi-implicit Euler with dt = 0.01 for
100 steps. The MJCF (`assets/cartpole.xml`) is therefore N independent cart + pole pairs pushed by
one force. The paper's single cart x, which only reaches the policy as an input, follows
x'' = (F + m l sum_i C_i) / M with C_i the pole terms of pair i; a free 1.1 kg reference mass under
the same force (x_ref'' = F / M) gives it exactly, because the integrator is linear in the
accelerations: x = sum_i x_i - (N - 1) x_ref, and the same for its velocity.

`physics="equations"` (opt-in) integrates the same system from the paper's closed-form equations
instead of `mjx.step`: the same state, observation, reward and gradients (tested equal to the MJX
step to 1e-9 in float64 over 100 steps), at a fraction of MJX's cost per step, for protocols that
run the system tens of millions of times (`chaosgym reproduce stable-bptt --physics equations`).
Only qpos, qvel, qacc and time are advanced: MJX's derived fields (body poses, inertias, ...) keep
their values from the reset, which no part of the task reads. MJX-only: the C backend runs MuJoCo.
"""

import jax
import jax.numpy as jnp
import mujoco

from chaosgym.tasks.arrays import array_namespace
from chaosgym.tasks.base import Task
from chaosgym.functional.settings import CARTPOLE_PHYSICS as PHYSICS  # defined JAX-free, for the command line
from chaosgym.validation import POSITIVE, int_in, one_of

MAX_POLES = 4
OBSERVATIONS = ("raw", "cos_sin")
# assets/cartpole.xml's pairs: a 1 kg cart, a uniform 1 m rod of 0.1 kg, g = 9.8 (the paper's constants)
GRAVITY, POLE_MASS, TOTAL_MASS, HALF_LENGTH = 9.8, 0.1, 1.1, 0.5


class CartPole(Task):
    """One force swings up `num_poles` (1-4) poles that start hanging down; lower loss is better.

    * Action: the force on every cart in units of `force_scale` newtons (default 1000 N; in the paper's
      protocol the learning flows stay far below it, see docs/stable_bptt.md), clipped to [-1, 1].
    * Observation `"raw"` (default, the paper's network input, 2 + 2N): x, x', then theta_i,
      theta_i' for each pole, theta unwrapped (0 upright, pi hanging). `"cos_sin"`: x, x', cos
      theta_i, sin theta_i, theta_i'.
    * Reward per step: mean over poles of cos theta after the step. Objectives: `return` (minus
      the sum of rewards) and the paper's `final_state` loss, 1 - mean cos theta after the last step.
    * Reset: x, x' and every theta_i' ~ U[-1, 1]; theta_i ~ pi + U[-1, 1] pi / 6 (the paper's
      distribution). Episodes last 100 steps (1 s) and never terminate early.
    * Physics `"mjx"` (default): `mjx.step`. `"equations"`: the paper's closed form (see the module).
    """

    asset = "cartpole.xml"
    frame_skip = 1
    episode_length = 100
    render_camera = "track"
    reported_objective = "final_state"

    def __init__(self, num_poles: int = 1, observation: str = "raw", force_scale: float = 1000.0,
                 physics: str = "mjx"):
        int_in(1, MAX_POLES)("num_poles", num_poles)
        one_of(*OBSERVATIONS)("observation", observation)
        POSITIVE.saying("a positive finite number of newtons")("force_scale", force_scale)
        one_of(*PHYSICS)("physics", physics)
        self.physics_override = None if physics == "mjx" else physics
        self.num_poles = int(num_poles)
        self.observation_kind = observation
        self.force_scale = float(force_scale)

    def edit_spec(self, spec):
        n = self.num_poles
        for i in range(n, MAX_POLES):
            spec.delete(spec.body(f"cart{i}"))
            spec.delete(spec.geom(f"rail{i}"))
        drive = spec.add_tendon(name="drive")  # one force, the same on every slider
        for name in [f"slider{i}" for i in range(n)] + ["slider_ref"]:
            drive.wrap_joint(name, 1.0)
        spec.add_actuator(name="force", trntype=mujoco.mjtTrn.mjTRN_TENDON, target="drive",
                          gear=[self.force_scale, 0, 0, 0, 0, 0], ctrllimited=True, ctrlrange=[-1, 1])

    def mjx_step(self, model, data):
        if self.physics_override is None:
            return super().mjx_step(model, data)
        # every pair: the classic cart-pole equations under the same force; the reference mass: F / M
        force = data.ctrl[0] * self.force_scale
        theta, theta_dot = self.poles(data)
        sin, cos = jnp.sin(theta), jnp.cos(theta)
        a = (force + POLE_MASS * HALF_LENGTH * sin * theta_dot ** 2) / TOTAL_MASS
        theta_ddot = (GRAVITY * sin - cos * a) / (HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * cos ** 2 / TOTAL_MASS))
        x_ddot = (force + POLE_MASS * HALF_LENGTH * (sin * theta_dot ** 2 - theta_ddot * cos)) / TOTAL_MASS
        qacc = jnp.concatenate([jnp.stack([x_ddot, theta_ddot], axis=-1).ravel(), (force / TOTAL_MASS)[None]])
        dt = model.opt.timestep
        qvel = data.qvel + dt * qacc  # MuJoCo's Euler: velocities first, positions with the new ones
        return data.replace(qpos=data.qpos + dt * qvel, qvel=qvel, qacc=qacc, time=data.time + dt)

    # qpos and qvel hold (x_i, theta_i) for each pair, then x_ref.
    def cart(self, data) -> tuple[jax.Array, jax.Array]:
        """The paper's cart position and velocity."""
        n, xp = self.num_poles, array_namespace(data)
        return ((xp.sum(data.qpos[0:2 * n:2]) - (n - 1) * data.qpos[-1]),
                (xp.sum(data.qvel[0:2 * n:2]) - (n - 1) * data.qvel[-1]))

    def poles(self, data) -> tuple[jax.Array, jax.Array]:
        """Every pole's angle (unwrapped, 0 upright) and angular velocity."""
        return data.qpos[1:2 * self.num_poles:2], data.qvel[1:2 * self.num_poles:2]

    def qpos_qvel(self, x, x_dot, theta, theta_dot) -> tuple[jax.Array, jax.Array]:
        """`(qpos, qvel)` of the paper's state: every cart at x, x', the reference mass too."""
        x, x_dot = jnp.broadcast_to(x, theta.shape), jnp.broadcast_to(x_dot, theta.shape)
        qpos = jnp.concatenate([jnp.stack([x, theta], axis=-1).ravel(), x[:1]])
        qvel = jnp.concatenate([jnp.stack([x_dot, theta_dot], axis=-1).ravel(), x_dot[:1]])
        return qpos, qvel

    def initial_state(self, key, model):
        kx, ka, kv = jax.random.split(key, 3)
        n = self.num_poles
        x, x_dot = jax.random.uniform(kx, (2,), minval=-1.0, maxval=1.0)
        theta = jnp.pi + jax.random.uniform(ka, (n,), minval=-1.0, maxval=1.0) * (jnp.pi / 6)
        theta_dot = jax.random.uniform(kv, (n,), minval=-1.0, maxval=1.0)
        return self.qpos_qvel(x, x_dot, theta, theta_dot)

    def observation(self, data):
        xp = array_namespace(data)
        x, x_dot = self.cart(data)
        theta, theta_dot = self.poles(data)
        if self.observation_kind == "raw":
            return xp.concatenate([xp.stack([x, x_dot]), xp.stack([theta, theta_dot], axis=-1).ravel()])
        return xp.concatenate([xp.stack([x, x_dot]), xp.cos(theta), xp.sin(theta), theta_dot])

    def reward(self, data, action, next_data):
        xp = array_namespace(next_data)
        upright = xp.mean(xp.cos(self.poles(next_data)[0]))
        return upright, {"upright": upright, "cart_position": self.cart(next_data)[0],
                         "force": action[0] * self.force_scale}

    def objectives(self):
        return {**super().objectives(),
                "final_state": lambda rewards, final_data: 1.0 - jnp.mean(jnp.cos(self.poles(final_data)[0]))}
