"""What each task promises: sizes, reset distribution, reward, termination, model settings, chaos."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import chaosgym


@pytest.mark.parametrize("num_poles", [1, 2, 3, 4])
def test_cartpole_sizes_follow_num_poles(num_poles):
    env = chaosgym.make("ChaosCartPole-v0", num_poles=num_poles)
    assert (env.observation_size, env.action_size) == (2 + 2 * num_poles, 1)
    assert env.mj_model.nq == 2 * num_poles + 1  # a cart and a pole per pair, and the reference mass
    assert (env.dt, env.episode_length) == (pytest.approx(0.01), 100)


@pytest.mark.parametrize("num_links", [1, 2, 3, 4])
def test_pendulum_sizes_follow_num_links(num_links):
    env = chaosgym.make("ChaosDoublePendulum-v0", num_links=num_links)
    assert (env.observation_size, env.action_size, env.mj_model.nq) == (3 * num_links, 1, num_links)


def test_ant_is_the_differentiable_brax_set_up():
    env = chaosgym.make("ChaosAnt-v0")
    model = env.mj_model
    assert (env.observation_size, env.action_size) == (27, 8)
    assert (env.frame_skip, env.dt, env.episode_length) == (5, pytest.approx(0.05), 1000)
    assert model.opt.solver == mujoco.mjtSolver.mjSOL_NEWTON
    assert (model.opt.iterations, model.opt.ls_iterations) == (1, 4)
    assert model.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_EULERDAMP
    colliding = {model.geom(i).name for i in range(model.ngeom) if model.geom_contype[i] or model.geom_conaffinity[i]}
    assert colliding == {"floor", "foot_1", "foot_2", "foot_3", "foot_4"}


def test_cartpole_reset_distribution(cartpole):
    states = jax.jit(jax.vmap(cartpole.reset))(jax.random.split(jax.random.key(0), 256))
    obs = np.asarray(states.obs)  # x, x', theta, theta' for one pole
    assert np.all(np.abs(obs[:, [0, 1, 3]]) <= 1.0)
    assert np.all(np.abs(obs[:, 2] - np.pi) <= np.pi / 6 + 1e-6)
    # the whole range is used, not a point: samples spread over most of each interval
    assert np.ptp(obs[:, 0]) > 1.5 and np.ptp(obs[:, 2]) > 0.8 and np.ptp(obs[:, 1]) > 1.5


def test_cartpole_reward_is_mean_cos_and_objective_is_final_state_loss():
    env = chaosgym.make("ChaosCartPole-v0", num_poles=2)
    state = env.jit_reset(jax.random.key(3))
    # pair 0's pole upright, pair 1's pole horizontal
    upright = state.data.replace(qpos=jnp.array([0.0, 0.0, 0.0, np.pi / 2, 0.0]))
    reward, _ = env.task.reward(state.data, jnp.zeros(1), upright)
    assert float(reward) == pytest.approx(0.5, abs=1e-6)
    assert float(env.task.objective("final_state")(jnp.zeros(5), upright)) == pytest.approx(0.5, abs=1e-6)
    assert float(env.task.objective("return")(jnp.array([0.5, 0.25]), upright)) == pytest.approx(-0.75)


def test_pendulum_reward_measures_tip_height(pendulum):
    data = pendulum.jit_reset(jax.random.key(0)).data
    physics_step = jax.jit(pendulum.physics_step)
    def reward_at(qpos, action):
        next_data = physics_step(data.replace(qpos=jnp.asarray(qpos), qvel=jnp.zeros(2)), jnp.zeros(1))
        return float(pendulum.task.reward(data, jnp.asarray(action), next_data)[0])
    # one physics step from rest moves the tip by well under 1e-3 of the chain length
    assert reward_at([0.0, 0.0], [0.0]) == pytest.approx(1.0, abs=1e-3)
    assert reward_at([np.pi, 0.0], [0.0]) == pytest.approx(-1.0, abs=1e-3)
    assert reward_at([np.pi, 0.0], [1.0]) == pytest.approx(-1.01, abs=1e-3)


def test_ant_terminates_outside_healthy_height():
    env = chaosgym.make("ChaosAnt-v0")
    data = env.jit_reset(jax.random.key(0)).data
    heights = {0.1: True, 0.5: False, 1.5: True}
    for z, expected in heights.items():
        assert bool(env.task.terminated(data.replace(qpos=data.qpos.at[2].set(z)))) is expected


def separation(num_links: int, qpos: list[float], perturbation: list[float], seconds: float) -> np.ndarray:
    """Distance in (qpos, qvel) between two unforced MuJoCo C (float64) runs from nearby starts."""
    model = chaosgym.make("ChaosDoublePendulum-v0", num_links=num_links).mj_model
    def trajectory(start):
        data = mujoco.MjData(model)
        data.qpos[:] = start
        states = []
        for _ in range(int(round(seconds / model.opt.timestep))):
            mujoco.mj_step(model, data)
            states.append(np.concatenate([data.qpos, data.qvel]))
        return np.array(states)
    return np.linalg.norm(trajectory(qpos) - trajectory(np.add(qpos, perturbation)), axis=1)


def growth_rate(separations: np.ndarray, dt: float) -> float:
    """Slope of a least-squares line through log(separation) against time (1/s)."""
    time = dt * np.arange(1, len(separations) + 1)
    return float(np.polyfit(time, np.log(separations), 1)[0])


@pytest.mark.parametrize("perturbation", [[1e-8, 0.0], [0.0, 1e-8]])
def test_unforced_double_pendulum_is_chaotic(perturbation):
    # a raised start: the first link 57 degrees from upright, the second bent 57 degrees further
    gap = separation(2, [1.0, 1.0], perturbation, seconds=6.0)
    assert growth_rate(gap, 0.01) > 1.0
    assert gap[-1] / 1e-8 > 1e4


def test_single_pendulum_is_not_chaotic():
    """The control: the same measurement on one link grows only polynomially."""
    gap = separation(1, [1.0], [1e-8], seconds=6.0)
    assert gap[-1] / 1e-8 < 1e3
    assert growth_rate(gap, 0.01) < 1.0
