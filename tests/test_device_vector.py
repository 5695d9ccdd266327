"""DeviceVectorEnv: Gymnasium's vector env kept on the device, and its arrays seen by torch without a copy."""

import gymnasium
import jax
import numpy as np
import pytest

from chaosgym.faces.device_vector import DeviceVectorEnv
from chaosgym.faces.seeding import episode_seed

CARTPOLE = "ChaosCartPole-v0"


def test_it_gives_what_the_gymnasium_vector_env_gives_for_the_same_key():
    """The vector env's unseeded environments draw their episodes from a key it draws from its
    `np_random`; a DeviceVectorEnv reset with that key's seed gives the same numbers bit for bit,
    across the resets at the end of the first episodes (same-step autoreset: the new episode's
    observation, the last one in `final_obs`, the step's reward, flags and info)."""
    ours = DeviceVectorEnv(CARTPOLE, num_envs=3)
    reference = gymnasium.make_vec(CARTPOLE, num_envs=3, vectorization_mode="vector_entry_point",
                                   autoreset_mode="same_step")
    reference.unwrapped.np_random = np.random.default_rng(7)
    obs, info = ours.reset(seed=episode_seed(np.random.default_rng(7)))
    expected_obs, expected_info = reference.reset()
    np.testing.assert_array_equal(np.asarray(obs), expected_obs)
    for k, v in info.items():
        np.testing.assert_array_equal(np.asarray(v), expected_info[k], err_msg=k)
    actions = np.random.default_rng(0).uniform(-1, 1, (103, 3, 1)).astype(np.float32)
    ends = 0
    for t, action in enumerate(actions):
        step = ours.step(jax.numpy.asarray(action))
        obs, reward, terminated, truncated, info = reference.step(action)
        done = terminated | truncated
        ends += done.sum()
        np.testing.assert_array_equal(np.asarray(step.obs), obs, err_msg=f"step {t}")
        np.testing.assert_array_equal(np.asarray(step.reward), reward)
        np.testing.assert_array_equal(np.asarray(step.terminated), terminated)
        np.testing.assert_array_equal(np.asarray(step.truncated), truncated)
        for k, v in step.info.items():
            if k == "final_obs":
                for i in np.flatnonzero(done):
                    np.testing.assert_array_equal(np.asarray(v[i]), info["final_obs"][i])
            else:
                step_info = np.where(done, info["final_info"][k], info[k]) if done.any() else info[k]
                np.testing.assert_array_equal(np.asarray(v), step_info, err_msg=k)
    assert ends == 3  # every episode ended once, at its time limit


def test_its_arrays_reach_torch_without_a_copy():
    torch = pytest.importorskip("torch")
    env = DeviceVectorEnv(CARTPOLE, num_envs=3)
    env.reset(seed=0)
    step = env.step(np.zeros((3, 1), np.float32))
    tensors = env.as_torch(step)
    assert isinstance(tensors.obs, torch.Tensor) and tensors.terminated.dtype == torch.bool
    for array, tensor in ((step.obs, tensors.obs), (step.reward, tensors.reward), (step.info["upright"],
                                                                                   tensors.info["upright"])):
        assert tensor.data_ptr() == array.unsafe_buffer_pointer()  # the same memory
        np.testing.assert_array_equal(tensor.numpy(), np.asarray(array))
    env.step(np.zeros((3, 1), np.float32))  # the next step leaves the arrays handed out alone
    np.testing.assert_array_equal(tensors.obs.numpy(), np.asarray(step.obs))


def test_bad_arguments_are_refused():
    env = DeviceVectorEnv(CARTPOLE, num_envs=3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=-1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(3, 1\)"):
        env.step(np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="max_episode_steps=5"):
        DeviceVectorEnv(CARTPOLE, num_envs=3, episode_length=5)
