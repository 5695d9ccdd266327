"""The single env's two backends: the same start, the same first steps, the same rules.

Tolerances. MJX runs in float32 and the C engine in float64, so from the same state under the
same actions they agree to float32 rounding, which then grows with the dynamics. Measured over
5 seeds: observations within 9e-6 over the first 30 steps of the cart pole and the pendulum, and
within 6e-5 over the Ant's first 8 steps (velocities of order 10, float32 relative precision).
We assert observations within 1e-4 + 1e-4 * |value|, rewards within 1e-5 + 1e-5 * |value| — about
ten times the measured error. The Ant starts 1 m up so that those steps are in the air: at
contacts MJX orients the pyramidal friction cone differently from the C engine, a modelling
difference (1e-3 in qpos within a step, not rounding) that `benchmarks/backends.py` measures.
"""

import gymnasium
import jax
import numpy as np
import pytest
from mujoco import mjx

import chaosgym
from chaosgym.functional.env import Env
from chaosgym.faces.mujoco_backend import MujocoBackend
from chaosgym.tasks import CartPole

CARTPOLE = "ChaosCartPole-v0"
TASKS = [("ChaosAnt-v0", {}), ("ChaosCartPole-v0", {"num_poles": 3}), ("ChaosDoublePendulum-v0", {})]


@pytest.mark.parametrize(("env_id", "kwargs"), TASKS)
def test_same_seed_same_initial_state(env_id, kwargs):
    ours, theirs = (gymnasium.make(env_id, backend=b, **kwargs) for b in ("mujoco", "mjx"))
    for seed in (0, 1):
        (obs, info), (obs_mjx, info_mjx) = ours.reset(seed=seed), theirs.reset(seed=seed)
        np.testing.assert_array_equal(obs, obs_mjx)
        assert info == info_mjx
    mjx_data, c_data = theirs.unwrapped.state.data, ours.unwrapped.state.data
    np.testing.assert_array_equal(ours.unwrapped._engine.data.qpos, np.asarray(mjx_data.qpos))
    np.testing.assert_array_equal(ours.unwrapped._engine.data.qvel, np.asarray(mjx_data.qvel))
    for name in ("qpos", "qvel", "xpos", "site_xpos"):  # the public state of both, in MJX's precision
        np.testing.assert_allclose(getattr(c_data, name), np.asarray(getattr(mjx_data, name)), rtol=1e-6, atol=1e-6)


def lifted(env: Env, state, height: float):
    data = mjx.forward(env.model, state.data.replace(qpos=state.data.qpos.at[2].add(height)))
    return state.replace(data=data, obs=env.task.observation(data))


@pytest.mark.parametrize(("env_id", "kwargs", "steps", "lift"), [
    ("ChaosAnt-v0", {}, 8, 1.0),
    ("ChaosCartPole-v0", {}, 30, 0.0),
    ("ChaosCartPole-v0", {"num_poles": 3}, 30, 0.0),
    ("ChaosDoublePendulum-v0", {}, 30, 0.0),
    ("ChaosDoublePendulum-v0", {"num_links": 3}, 30, 0.0),
])
def test_first_steps_agree(env_id, kwargs, steps, lift):
    env = chaosgym.make(env_id, **kwargs)
    engine = MujocoBackend(env)
    state = env.jit_reset(jax.random.key(3))
    if lift:
        state = jax.jit(lifted, static_argnums=(0, 2))(env, state, lift)
    obs, _ = engine.reset_to(*jax.device_get((state.data.qpos, state.data.qvel)))
    np.testing.assert_allclose(obs, state.obs, rtol=1e-6, atol=1e-6)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, env.action_size)).astype(np.float32)
    for t, action in enumerate(actions):
        obs, reward, terminated, info = engine.step(action)
        state = env.jit_step(state, action)
        np.testing.assert_allclose(obs, state.obs, rtol=1e-4, atol=1e-4, err_msg=f"step {t}")
        assert reward == pytest.approx(float(state.reward), rel=1e-5, abs=1e-5), f"step {t}"
        assert terminated == bool(state.terminated) and not info["nonfinite_state"]
        assert info.keys() == state.info.keys()


class CartPoleReadingCvel(CartPole):
    def observation(self, data):
        return data.cvel[1]


def test_a_task_reading_a_field_the_c_engine_does_not_provide_is_refused():
    with pytest.raises(ValueError, match=r"CartPoleReadingCvel reads .*'cvel'.*backend='mjx'"):
        MujocoBackend(Env(CartPoleReadingCvel()))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of 'mujoco', 'mjx'"):
        gymnasium.make(CARTPOLE, backend="warp")


# ---- the rules every backend follows -------------------------------------------------------------


def physics(env) -> tuple[np.ndarray, np.ndarray]:
    data = env.unwrapped.state.data
    return np.array(data.qpos), np.array(data.qvel)


def set_physics(env, qpos, qvel) -> None:
    state = env.unwrapped.state
    env.unwrapped.state = state.replace(data=state.data.replace(qpos=qpos, qvel=qvel))


BACKENDS = ["mujoco", "mjx"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("action", [np.zeros(2, np.float32), np.array(["a"]), np.array([np.nan], np.float32)])
def test_bad_actions_raise_and_step_nothing(backend, action):
    env, twin = gymnasium.make(CARTPOLE, backend=backend), gymnasium.make(CARTPOLE, backend=backend)
    env.reset(seed=0)
    twin.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(action)
    step, twin_step = env.step(np.array([0.3], np.float32)), twin.step(np.array([0.3], np.float32))
    np.testing.assert_array_equal(step[0], twin_step[0])
    assert step[1:] == twin_step[1:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_actions_are_clipped(backend):
    env, twin = gymnasium.make(CARTPOLE, backend=backend), gymnasium.make(CARTPOLE, backend=backend)
    env.reset(seed=0)
    twin.reset(seed=0)
    np.testing.assert_array_equal(env.step(np.array([40.0], np.float32))[0], twin.step(np.array([1.0], np.float32))[0])
    np.testing.assert_array_equal(env.step(np.array([-3], np.int64))[0], twin.step(np.array([-1.0], np.float32))[0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("blow_up", ["huge velocity", "NaN position"])
def test_a_non_finite_state_undoes_the_step_and_terminates(backend, blow_up):
    env = gymnasium.make(CARTPOLE, backend=backend)
    env.reset(seed=0)
    qpos, qvel = physics(env)
    if blow_up == "huge velocity":
        qvel = np.full_like(qvel, 1e20)
    else:
        qpos = np.where(np.arange(qpos.size) == 1, np.nan, qpos).astype(qpos.dtype)
    set_physics(env, qpos, qvel)
    obs, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert terminated and not truncated and info["nonfinite_state"] and reward == 0.0
    assert np.all(np.isfinite(obs)) or blow_up == "NaN position"  # the undone state's own obs
    for before, after in zip((qpos, qvel), physics(env)):
        np.testing.assert_array_equal(after, before)  # undone
    obs, info = env.reset(seed=0)
    assert np.all(np.isfinite(obs)) and not info["nonfinite_state"]
    obs, _, terminated, _, info = env.step(np.zeros(1, np.float32))
    assert not terminated and not info["nonfinite_state"] and np.all(np.isfinite(obs))


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_and_render_need_a_reset(backend):
    env = gymnasium.make(CARTPOLE, backend=backend, render_mode="rgb_array", width=32, height=24).unwrapped
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=0)
    assert env.render().shape == (24, 32, 3)
