"""The SB3 VecEnv's own contract beyond tests/test_sb3.py: a closed VecEnv refuses to go on."""

import gymnasium
import numpy as np
import pytest

from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv


def test_a_closed_vec_env_refuses_to_step_and_reset_as_the_gymnasium_envs_do():
    venv = ChaosSB3VecEnv("ChaosCartPole-v0", num_envs=2)
    venv.reset()
    venv.close()
    with pytest.raises(gymnasium.error.ClosedEnvironmentError, match=r"step\(\) on a closed ChaosSB3VecEnv"):
        venv.step(np.zeros((2, 1), np.float32))
    with pytest.raises(gymnasium.error.ClosedEnvironmentError, match=r"reset\(\) on a closed ChaosSB3VecEnv"):
        venv.reset()
