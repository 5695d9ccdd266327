"""The SB3 VecEnv's own contract beyond tests/test_sb3.py: a closed VecEnv refuses to go on."""

import gymnasium
import numpy as np
import pytest

from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv

CARTPOLE = "ChaosCartPole-v0"


def test_a_closed_vec_env_refuses_to_step_and_reset_as_the_gymnasium_envs_do():
    venv = ChaosSB3VecEnv("ChaosCartPole-v0", num_envs=2)
    venv.reset()
    venv.close()
    with pytest.raises(gymnasium.error.ClosedEnvironmentError, match=r"step\(\) on a closed ChaosSB3VecEnv"):
        venv.step(np.zeros((2, 1), np.float32))
    with pytest.raises(gymnasium.error.ClosedEnvironmentError, match=r"reset\(\) on a closed ChaosSB3VecEnv"):
        venv.reset()


def test_sb3_vec_env_refuses_out_of_order_async_calls():
    env = ChaosSB3VecEnv(CARTPOLE, num_envs=2)
    env.reset()
    with pytest.raises(RuntimeError, match="step_async"):
        env.step_wait()
    env.step_async(np.zeros((2, 1), np.float32))
    with pytest.raises(RuntimeError, match="step_wait"):
        env.step_async(np.zeros((2, 1), np.float32))
    obs, reward, dones, infos = env.step_wait()
    assert obs.shape == (2, 4) and len(infos) == 2
    with pytest.raises(ValueError, match=r"render width must be an integer in 1\.\."):
        ChaosSB3VecEnv(CARTPOLE, num_envs=2, render_mode="rgb_array", width=0)


def test_sb3s_vector_env_refuses_a_batch_that_cannot_fit_before_allocating():
    with pytest.raises(ValueError, match="GiB of host memory"):
        ChaosSB3VecEnv("ChaosCartPole-v0", num_envs=10**9)
