"""The Gymnasium faces under hostile use (issue 21 items 1, 5, 10; issue 22 item 1): copies and
pickles of live envs, SB3's subprocesses, closed envs, bad reset options, batches too large for the
machine, and a `make` that builds no MJX program. Each test failed on the code before the mend."""

import copy
import os
import pickle
import subprocess
import sys
import textwrap

import cloudpickle
import gymnasium
import numpy as np
import pytest
from mujoco import mjx

import chaosgym
from chaosgym.faces import gym_env as gym_adapters
from chaosgym.functional.env import Env
from chaosgym.faces.mujoco_backend import MujocoBackend
from chaosgym.registry import make_task

CARTPOLE = "ChaosCartPole-v0"
BACKENDS = ["mujoco", "mjx"]


def steps(env, actions) -> list:
    return [env.step(a) for a in actions]


def assert_same(a, b):
    """Exact equality of nested tuples, lists, dicts and arrays."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


# ---- copies and pickles ------------------------------------------------------------------------

COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda env: pickle.loads(pickle.dumps(env)),
          "cloudpickle": lambda env: cloudpickle.loads(cloudpickle.dumps(env))}


@pytest.mark.parametrize("how", COPIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_copy_of_a_live_env_steps_on_exactly_as_the_original(backend, how):
    env = gymnasium.make(CARTPOLE, backend=backend)
    env.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 1)).astype(np.float32)
    steps(env, actions[:4])
    twin = COPIES[how](env)
    assert_same(steps(twin, actions[4:]), steps(env, actions[4:]))
    # the seed stream goes on too: the next episodes start where the original's do
    assert_same(twin.reset(), env.reset())
    assert_same(twin.reset(), env.reset())


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_env_not_yet_reset_copies_and_then_resets_as_a_new_one(backend):
    twin = copy.deepcopy(gymnasium.make(CARTPOLE, backend=backend))
    assert_same(twin.reset(seed=1), gymnasium.make(CARTPOLE, backend=backend).reset(seed=1))


def test_a_vector_env_pickles_mid_episode(make_vector_env):
    env = make_vector_env(CARTPOLE, 3)
    env.reset(seed=7)
    actions = np.random.default_rng(1).uniform(-1, 1, (6, 3, 1)).astype(np.float32)
    steps(env, actions[:3])
    twin = cloudpickle.loads(cloudpickle.dumps(env))
    assert_same(steps(twin, actions[3:]), steps(env, actions[3:]))


@pytest.mark.slow  # two fresh processes import JAX, MJX and torch: about a minute on 2 loaded cores
def test_sb3_subprocesses_run_pickled_envs_as_a_dummy_vec_env_does():
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    envs = [gymnasium.make(CARTPOLE) for _ in range(2)]
    for i, env in enumerate(envs):
        env.reset(seed=i)  # live envs: the subprocesses get their seed streams and states
    dummy = DummyVecEnv([lambda env=copy.deepcopy(env): env for env in envs])
    subprocesses = SubprocVecEnv([lambda env=env: env for env in envs])
    try:
        for vec in (dummy, subprocesses):
            vec.seed(5)
        assert_same(subprocesses.reset(), dummy.reset())
        for action in np.random.default_rng(2).uniform(-1, 1, (4, 2, 1)).astype(np.float32):
            ours, theirs = subprocesses.step(action), dummy.step(action)
            assert_same(ours[:3], theirs[:3])
    finally:
        subprocesses.close()


# ---- resets drawn ahead ----------------------------------------------------------------------------


def test_c_engine_resets_drawn_ahead_are_mjx_resets_whatever_the_seed_stream_does():
    """The C engine computes the initial states of the seeds its next resets will draw in one call;
    a reset seeded anew, or a draw from `np_random` between resets, must not give a stale one."""
    ours, theirs = gymnasium.make(CARTPOLE), gymnasium.make(CARTPOLE, backend="mjx")
    for env in (ours, theirs):
        env.reset(seed=0)
    for i in range(40):
        if i == 10:
            for env in (ours, theirs):
                env.unwrapped.np_random.random()  # the user's own draw: later seeds all move
        seed = 5 if i == 20 else None
        assert_same(ours.reset(seed=seed), theirs.reset(seed=seed))


# ---- closed envs and reset options ---------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_closed_env_refuses_to_step_and_reset(backend):
    env = gymnasium.make(CARTPOLE, backend=backend)
    env.reset(seed=0)
    env.close()
    env.close()  # closing twice is allowed, as Gymnasium says
    with pytest.raises(gymnasium.error.ClosedEnvironmentError, match=r"step\(\) on a closed ChaosEnv"):
        env.step(np.zeros(1, np.float32))
    with pytest.raises(gymnasium.error.ClosedEnvironmentError, match=r"reset\(\) on a closed ChaosEnv"):
        env.reset(seed=0)


def test_a_closed_vector_env_refuses_to_step_and_reset():
    env = gymnasium.make_vec(CARTPOLE, num_envs=3, vectorization_mode="vector_entry_point")
    env.close()
    with pytest.raises(gymnasium.error.ClosedEnvironmentError, match=r"reset\(\) on a closed ChaosVectorEnv"):
        env.reset(seed=0)
    with pytest.raises(gymnasium.error.ClosedEnvironmentError, match=r"step\(\) on a closed ChaosVectorEnv"):
        env.step(np.zeros((3, 1), np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("options", "message"), [
    (5, "options must be None or a dict, got 5"),
    ({"reset_mask": None}, "unknown reset option.*'reset_mask'.*accepts none"),
    ({"qpos": [0.0]}, "unknown reset option.*'qpos'"),
])
def test_single_env_reset_options_are_checked(backend, options, message):
    env = gymnasium.make(CARTPOLE, backend=backend)
    with pytest.raises(ValueError, match=message):
        env.reset(seed=0, options=options)
    obs, _ = env.reset(seed=0, options={})  # what SB3's DummyVecEnv passes
    assert obs.shape == env.observation_space.shape


def test_vector_env_unknown_options_name_the_accepted_ones():
    env = gymnasium.make_vec(CARTPOLE, num_envs=3, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) 'mask'; the accepted ones: 'reset_mask'"):
        env.reset(options={"mask": None})


# ---- sizes ---------------------------------------------------------------------------------------


def test_a_batch_larger_than_the_machine_is_refused_before_anything_is_allocated(monkeypatch):
    def allocated(*args, **kwargs):
        raise AssertionError("allocated a batch before checking its size")

    monkeypatch.setattr(gym_adapters, "batch_space", allocated)
    monkeypatch.setattr(gym_adapters, "ResetSeeds", allocated)
    with pytest.raises(ValueError, match=r"num_envs=1,000,000,000 needs at least [\d,.]+ GiB of host memory "
                                         r"\(.* per environment.*\), more than the [\d,.]+ GiB available"):
        gymnasium.make_vec(CARTPOLE, num_envs=10**9, vectorization_mode="vector_entry_point")


# ---- a fast make ---------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", sorted(chaosgym.TASKS))
def test_building_an_env_and_its_c_engine_traces_no_mjx_physics(env_id, monkeypatch):
    """MJX's forward and step take seconds to trace: a `gymnasium.make` on the C engine needs neither."""
    def traced(*args, **kwargs):
        raise AssertionError("traced MJX physics while building the env")

    monkeypatch.setattr(mjx, "forward", traced)
    monkeypatch.setattr(mjx, "step", traced)
    env = Env(make_task(env_id))  # not chaosgym.make: its cache may hold one built by another test
    MujocoBackend(env)


MAKE_EVERY_TASK = textwrap.dedent("""
    import time
    import gymnasium, chaosgym
    for env_id in sorted(chaosgym.TASKS):
        start = time.perf_counter()
        gymnasium.make(env_id)
        print(env_id, time.perf_counter() - start)
""")


def test_gymnasium_make_returns_within_seconds_in_a_fresh_process():
    """Measured at 0.3-0.6 s per task here (2 shared cores); the bound leaves room for a loaded machine."""
    out = subprocess.run([sys.executable, "-c", MAKE_EVERY_TASK], capture_output=True, text=True, check=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
    times = {env_id: float(t) for env_id, t in (line.split() for line in out.stdout.splitlines())}
    assert times.keys() == set(chaosgym.TASKS)
    assert max(times.values()) < 15, times


def test_sb3s_vector_env_refuses_a_batch_that_cannot_fit_before_allocating():
    from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv

    with pytest.raises(ValueError, match="GiB of host memory"):
        ChaosSB3VecEnv("ChaosCartPole-v0", num_envs=10**9)


# ---- float64 and subprocesses --------------------------------------------------------------------

FLOAT64 = textwrap.dedent("""
    import numpy as np, gymnasium, chaosgym
    vector = gymnasium.make_vec("ChaosCartPole-v0", num_envs=2, vectorization_mode="vector_entry_point")
    vector.reset(seed=0)
    obs = vector.step(np.zeros((2, 1), np.float32))[0]
    single = gymnasium.make("ChaosCartPole-v0")
    first, _ = single.reset(seed=0)
    stepped = single.step(np.zeros(1, np.float32))[0]
    print(obs.dtype, first.dtype, single.observation_space.contains(first), stepped.dtype)
""")


def test_with_float64_on_the_vector_env_steps_and_observations_stay_float32():
    """With JAX_ENABLE_X64 the vector step failed (a scan carry of int32 against MJX's int64), and the C
    engine's reset returned float64 observations, outside its float32 observation space."""
    done = subprocess.run([sys.executable, "-c", FLOAT64], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "float32 float32 True float32"


ASYNC = textwrap.dedent("""
    import sys, numpy as np, gymnasium, chaosgym
    kwargs = {"vector_kwargs": {"context": sys.argv[1]}} if len(sys.argv) > 1 else {}
    env = gymnasium.make_vec("ChaosCartPole-v0", num_envs=2, vectorization_mode="async", **kwargs)
    env.reset(seed=0)
    print(env.step(np.zeros((2, 1), np.float32))[0].shape)
    env.close()
""")


def test_gymnasiums_async_mode_with_its_default_fork_is_refused_naming_the_fix_instead_of_hanging():
    """Its subprocesses, forked after JAX started, hung at their first JAX call."""
    done = subprocess.run([sys.executable, "-c", ASYNC], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode != 0
    assert "forked after JAX started" in done.stderr and "vector_kwargs={'context': 'spawn'}" in done.stderr


@pytest.mark.slow  # three fresh processes import JAX and compile
def test_gymnasiums_async_mode_runs_with_spawned_subprocesses():
    done = subprocess.run([sys.executable, "-c", ASYNC, "spawn"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "(2, 4)"
