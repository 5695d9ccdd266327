"""A task from user code (docs/custom_tasks.md): a module outside the package with its own MJCF file
(or string), registered by `chaosgym.register`, used by Gymnasium, the functional API, the agents
and the command line through Gymnasium's `module:EnvId` form."""

import json
import os
import subprocess
import sys
import textwrap

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym

PENDULUM_XML = """
<mujoco model="user_pendulum">
  <option timestep="0.02" solver="Newton" iterations="1" ls_iterations="4">
    <flag eulerdamp="disable"/>
  </option>
  <worldbody>
    <body name="pole" pos="0 0 1">
      <joint name="hinge" type="hinge" axis="0 1 0" damping="0.05"/>
      <geom type="capsule" fromto="0 0 0 0 0 -0.5" size="0.04" mass="1" contype="0" conaffinity="0"/>
      <site name="tip" pos="0 0 -0.5"/>
    </body>
  </worldbody>
  <actuator><motor joint="hinge" gear="2" ctrlrange="-1 1" ctrllimited="true"/></actuator>
</mujoco>
"""

MODULE = textwrap.dedent('''
    import jax
    import jax.numpy as jnp

    import chaosgym
    from chaosgym.tasks.arrays import array_namespace

    XML = {xml!r}


    class UserPendulum(chaosgym.Task):
        asset = "pendulum.xml"
        frame_skip = 2
        episode_length = 50

        def __init__(self, ctrl_cost_weight: float = 0.01):
            self.ctrl_cost_weight = ctrl_cost_weight

        def bind(self, model):
            self._tip = model.site("tip").id

        def initial_state(self, key, model):
            return jnp.array([jnp.pi]) + 0.1 * jax.random.normal(key, (1,)), jnp.zeros(1)

        def observation(self, data):
            xp = array_namespace(data)
            return xp.concatenate([xp.cos(data.qpos), xp.sin(data.qpos), data.qvel])

        def reward(self, data, action, next_data):
            xp = array_namespace(next_data)
            height = next_data.site_xpos[self._tip, 2]
            cost = self.ctrl_cost_weight * xp.sum(xp.square(action))
            return height - cost, {{"height": height}}


    class StringPendulum(UserPendulum):
        asset = ""
        xml = XML


    chaosgym.register("UserPendulum-v0", UserPendulum)
    chaosgym.register("StringPendulum-v0", StringPendulum)
''')


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "user_tasks.py").write_text(MODULE.format(xml=PENDULUM_XML))
    (folder / "pendulum.xml").write_text(PENDULUM_XML)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


@pytest.mark.parametrize("env_id", ["user_tasks:UserPendulum-v0", "user_tasks:StringPendulum-v0"])
def test_gymnasium_make_and_make_vec_and_the_functional_env_run_a_task_of_user_code(user_module, env_id):
    env = gymnasium.make(env_id, ctrl_cost_weight=0.5)
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.ones(1, np.float32))
    assert obs.shape == (3,) and np.isfinite(reward) and "height" in info
    assert env.unwrapped.env.task.ctrl_cost_weight == 0.5
    assert env.spec.max_episode_steps == 50
    vector = gymnasium.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    obs, _ = vector.reset(seed=1)
    assert vector.step(np.zeros((3, 1), np.float32))[0].shape == (3, 3)
    functional = chaosgym.make(env_id)
    states = jax.vmap(functional.reset)(jax.random.split(jax.random.key(0), 2))
    loss, _ = chaosgym.rollout(functional, lambda p, o: jnp.tanh(p * o[:1]), jnp.ones(()), states, 5)
    assert np.isfinite(float(loss))


def test_a_missing_model_file_is_named():
    class Nowhere(chaosgym.Task):
        asset = "no_such_model.xml"
        frame_skip, episode_length = 1, 10

    with pytest.raises(FileNotFoundError, match="no_such_model.xml"):
        Nowhere().mj_model()


def _chaosgym(user_module, tmp_path, *args, timeout=900):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_module), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "chaosgym.agents.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_command_line_trains_and_reads_back_a_task_of_user_code(user_module, tmp_path):
    done = _chaosgym(user_module, tmp_path, "train", "--task", "user_tasks:UserPendulum-v0", "--agent", "apg",
                     "--updates", "2", "--num-envs", "4", "--window", "8", "--hidden", "8", "--eval-episodes", "2",
                     "--out", "run", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["task"] == "user_tasks:UserPendulum-v0"  # a new process finds the task again from it
    done = _chaosgym(user_module, tmp_path, "render", "--run", "run", "--out", "episode.gif", "--max-steps", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "episode.gif").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["full", "es", "apg", "shac", "ahac", "ppo"])
def test_every_agent_trains_on_a_task_of_user_code(user_module, tmp_path, agent):
    from chaosgym.agents import train

    small = {"full": {"batch_size": 2, "horizon": 8, "hidden": (8,)},
             "es": {"batch_size": 2, "horizon": 8, "hidden": (8,), "es_pairs": 2},
             "apg": {"num_envs": 4, "window": 8, "hidden": (8,)},
             "shac": {"num_envs": 4, "window": 8, "hidden": (8,), "critic_hidden": (8,)},
             "ahac": {"num_envs": 4, "window": 8, "min_window": 4, "hidden": (8,), "critic_hidden": (8,)},
             "ppo": {"num_envs": 2, "n_steps": 8, "batch_size": 8}}[agent]
    budget = {"env_steps": 32} if agent == "ppo" else {"updates": 2}
    result = train("user_tasks:UserPendulum-v0", agent, tmp_path / agent, eval_episodes=2, progress=False,
                   **budget, **small)
    assert np.isfinite(result.final["eval_score"])
    assert result.policy(np.zeros(3, np.float32)).shape == (1,)
