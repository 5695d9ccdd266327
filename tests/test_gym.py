"""The Gymnasium faces: check_env, determinism, vector = single step for step, bad input, rendering."""

import copy
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import cloudpickle
import gymnasium
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from mujoco import mjx

import chaosgym
from chaosgym.faces import gym_env as gym_adapters
from chaosgym.faces.gym_env import check_actions
from chaosgym.faces.mujoco_backend import MujocoBackend
from chaosgym.functional.env import Env
from chaosgym.registry import make_task

CARTPOLE = "ChaosCartPole-v0"
BACKENDS = ["mujoco", "mjx"]  # of the single env; the vector env is MJX, so comparisons with it use "mjx"
# Each id with its default options and with a non-default size (the Ant has no options).
ENV_VARIANTS = [
    ("ChaosAnt-v0", {}),
    ("ChaosCartPole-v0", {}),
    ("ChaosCartPole-v0", {"num_poles": 3}),
    ("ChaosDoublePendulum-v0", {}),
    ("ChaosDoublePendulum-v0", {"num_links": 3}),
]


def random_actions(space: gymnasium.spaces.Box, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(space.low, space.high, (steps, *space.shape)).astype(np.float32)


def trajectory(env: gymnasium.Env, seed: int, actions: np.ndarray) -> list:
    out = [env.reset(seed=seed)]
    out += [env.step(a) for a in actions]
    return out


def assert_same(a, b, tol: float = 0.0):
    """Deep equality of nested tuples/dicts/arrays: exact, or floats within `tol` (relative and absolute)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k], tol)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y, tol)
    elif tol and np.issubdtype(np.asarray(a).dtype, np.floating):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(a, b)


def blow_up(env, index=None) -> None:
    """Give an unwrapped env (or sub-env `index` of a vector env) a velocity whose next step overflows."""
    state = env.state
    qvel = state.data.qvel.at[index].set(1e20) if index is not None else jnp.full_like(state.data.qvel, 1e20)
    env.state = state.replace(data=state.data.replace(qvel=qvel))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("env_id", "kwargs"), ENV_VARIANTS)
def test_check_env(env_id, kwargs, backend):
    env = gymnasium.make(env_id, render_mode="rgb_array", width=64, height=48, backend=backend, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=False)
    # what docs/quickstart.md says: check_env's only warnings are the unbounded observations (as for
    # Gymnasium's own MuJoCo tasks: velocities have no bound)
    messages = {str(w.message) for w in caught}
    assert all("infinity" in m for m in messages), messages
    assert env.observation_space.dtype == env.action_space.dtype == np.float32
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    env.close()


def test_render_returns_the_scene_of_the_current_state():
    env = gymnasium.make(CARTPOLE, render_mode="rgb_array", width=96, height=64)
    env.reset(seed=0)
    first = env.render()
    assert first.shape == (64, 96, 3) and first.dtype == np.uint8
    assert first.std() > 5, "a blank frame"
    for _ in range(30):
        env.step(np.ones(1, np.float32))
    changed = np.any(env.render() != first, axis=-1)
    assert changed.sum() >= 20, "the frame does not follow the state"
    env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_env_is_deterministic_given_the_seed(backend):
    env, twin = gymnasium.make(CARTPOLE, backend=backend), gymnasium.make(CARTPOLE, backend=backend)
    actions = random_actions(env.action_space, 10)
    assert_same(trajectory(env, 5, actions), trajectory(twin, 5, actions))
    assert not np.array_equal(trajectory(env, 6, actions)[-1][0], trajectory(twin, 5, actions)[-1][0])


def test_vector_env_is_deterministic_given_the_seed(make_vector_env):
    env = make_vector_env(CARTPOLE, 3)
    twin = gymnasium.make_vec(CARTPOLE, num_envs=3, vectorization_mode="vector_entry_point")
    actions = random_actions(env.action_space, 10)
    assert_same(trajectory(env, 5, actions), trajectory(twin, 5, actions))
    assert not np.array_equal(trajectory(env, 6, actions)[-1][0], trajectory(twin, 5, actions)[-1][0])


def test_vector_env_declares_its_spaces_and_autoreset_mode(make_vector_env):
    env = make_vector_env(CARTPOLE, 3)
    assert isinstance(env, gymnasium.vector.VectorEnv)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert env.observation_space.shape == (3, 4) and env.action_space.shape == (3, 1)
    assert env.single_action_space == gymnasium.make(CARTPOLE).action_space
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert info["upright"].shape == (3,) and info["_upright"].all()


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_matches_gymnasium_sync_vector_env(mode, make_vector_env):
    """Our batched env against Gymnasium's own SyncVectorEnv over single ChaosEnvs, across resets.

    Flags, info keys and masks agree exactly; observations, rewards and metrics to float32 rounding
    (XLA's batched program rounds the cart pole's velocities differently in the last bit, 5e-7 in 7,
    which the chaotic dynamics then grow).

    Three cart poles with 100-step episodes for 105 steps. Blow-ups end episodes early and at
    different times: env 1 at steps 40 and 60 (two resets of one env), env 0 also at step 60 (two
    envs resetting at once); env 2 blows up on the last step of its episode, where Gymnasium's
    time limit reports the truncation as well.
    """
    blow_ups = {40: [1], 60: [0, 1], 99: [2]}
    ours = make_vector_env(CARTPOLE, 3, autoreset_mode=mode)
    reference = gymnasium.make_vec(CARTPOLE, num_envs=3, vectorization_mode="sync", backend="mjx",
                                   vector_kwargs={"autoreset_mode": mode})
    assert ours.metadata["autoreset_mode"] == reference.metadata["autoreset_mode"] == mode
    assert_same(ours.reset(seed=11), reference.reset(seed=11))
    ends = []
    for t, actions in enumerate(random_actions(ours.action_space, 105)):
        for i in blow_ups.get(t, []):
            blow_up(ours.unwrapped, index=i)
            blow_up(reference.envs[i].unwrapped)
        obs, reward, terminated, truncated, info = ours.step(actions)
        expected = reference.step(actions)
        assert_same((obs, reward), expected[:2], tol=SYNC_TOLERANCE)
        assert_same((terminated, truncated), expected[2:4])
        assert reward.dtype == np.float64 and terminated.dtype == truncated.dtype == np.bool_
        assert_same_info(info, expected[4], tol=SYNC_TOLERANCE)
        ends += [(t, i, terminated[i], truncated[i]) for i in np.flatnonzero(terminated | truncated)]
    assert ends == [(40, 1, True, False), (60, 0, True, False), (60, 1, True, False), (99, 2, True, True)]


SYNC_TOLERANCE = 1e-4


def assert_same_info(ours: dict, reference: dict, tol: float = 0.0) -> None:
    """Same keys and masks; same values (floats within `tol`) wherever the mask says the value is present."""
    assert ours.keys() == reference.keys()
    for key, value in ours.items():
        if key.startswith("_"):
            np.testing.assert_array_equal(value, reference[key], err_msg=key)
        elif key == "final_info":
            assert_same_info(value, reference[key], tol)
        else:
            mask = ours["_" + key]
            for i in np.flatnonzero(mask):
                assert_same(value[i], reference[key][i], tol)


def test_sub_environments_are_single_environments_with_consecutive_seeds(make_vector_env):
    vector = make_vector_env(CARTPOLE, 3)
    actions = random_actions(vector.action_space, 5)
    batch = trajectory(vector, 20, actions)
    for i in range(3):
        single = trajectory(gymnasium.make(CARTPOLE, backend="mjx"), 20 + i, actions[:, i])
        np.testing.assert_array_equal(batch[0][0][i], single[0][0])
        for (obs, reward, *_), (s_obs, s_reward, *_) in zip(batch[1:], single[1:]):
            np.testing.assert_array_equal(obs[i], s_obs)
            assert reward[i] == s_reward


def test_reset_mask_resets_only_the_masked_environments(make_vector_env):
    env = make_vector_env(CARTPOLE, 3)
    env.reset(seed=0)
    obs, _, _, _, _ = env.step(np.zeros((3, 1), np.float32))
    mask = np.array([False, True, False])
    new_obs, info = env.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(new_obs[~mask], obs[~mask])
    assert not np.array_equal(new_obs[1], obs[1])
    # the masked environment took the second seed of its generator, as a single env's second reset
    single = gymnasium.make(CARTPOLE, backend="mjx")
    single.reset(seed=1)
    np.testing.assert_array_equal(new_obs[1], single.reset()[0])


BAD_ACTIONS = {
    "wrong shape": (np.zeros(2, np.float32), r"expected action shape \(1,\)"),
    "scalar": (np.float32(0.5), r"expected action shape \(1,\)"),
    "strings": (np.array(["a"]), "dtype"),
    "objects": (np.array([None], dtype=object), "dtype"),
    "booleans": (np.array([True]), "dtype"),
    "NaN": (np.array([np.nan], np.float32), "NaN or inf"),
    "inf": (np.array([-np.inf], np.float32), "NaN or inf"),
}


@pytest.mark.parametrize("case", BAD_ACTIONS)
def test_single_env_rejects_bad_actions_and_steps_nothing(case):
    action, message = BAD_ACTIONS[case]
    env = gymnasium.make(CARTPOLE)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)
    # nothing was stepped: the episode goes on exactly as if the bad call had not been made
    twin = gymnasium.make(CARTPOLE)
    twin.reset(seed=0)
    assert_same(env.step(np.array([0.3], np.float32)), twin.step(np.array([0.3], np.float32)))


@pytest.mark.parametrize("case", ["wrong shape", "strings", "booleans", "NaN"])
def test_vector_env_rejects_bad_actions_and_steps_nothing(case, make_vector_env):
    env = make_vector_env(CARTPOLE, 3)
    env.reset(seed=0)
    good = np.zeros((3, 1), np.float32)
    bad = {"wrong shape": np.zeros((3, 2), np.float32), "strings": np.full((3, 1), "a"),
           "booleans": np.ones((3, 1), bool), "NaN": np.where([[True], [False], [False]], np.nan, good)}[case]
    leaves = env.unwrapped._leaves
    with pytest.raises(ValueError, match=r"\(3, 1\)" if case == "wrong shape" else "dtype|NaN"):
        env.step(bad)
    assert env.unwrapped._leaves is leaves


def test_vector_blow_up_ends_only_that_episode(make_vector_env):
    env = make_vector_env(CARTPOLE, 3)
    env.reset(seed=0)
    blow_up(env.unwrapped, index=2)
    obs, _, terminated, _, info = env.step(np.zeros((3, 1), np.float32))
    assert terminated.tolist() == [False, False, True] and info["nonfinite_state"].tolist() == [False, False, True]
    assert np.all(np.isfinite(obs))
    obs, reward, terminated, _, info = env.step(np.zeros((3, 1), np.float32))  # next-step autoreset
    assert not terminated.any() and not info["nonfinite_state"].any() and reward[2] == 0.0
    assert np.all(np.isfinite(obs))


def test_invalid_kwargs_through_gymnasium_say_what_is_valid():
    with pytest.raises(ValueError, match=r"1\.\.4"):
        gymnasium.make(CARTPOLE, num_poles=7)
    with pytest.raises(TypeError, match="num_poles"):
        gymnasium.make(CARTPOLE, poles=2)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        gymnasium.make_vec(CARTPOLE, num_envs=2, vectorization_mode="vector_entry_point", num_poles=7)


# ---- Gymnasium's conventions ---------------------------------------------------------------------


def test_episode_length_is_refused_naming_gymnasiums_own_keyword():
    """`gymnasium.make(id, episode_length=5)` once ran 100-step episodes, and `make_vec` raised a
    TypeError about a duplicate keyword: the time limit of a Gymnasium env is `max_episode_steps`."""
    message = r"^episode_length=5 is not an option of a Gymnasium env; .* max_episode_steps=5$"
    with pytest.raises(ValueError, match=message):
        gymnasium.make(CARTPOLE, episode_length=5)
    with pytest.raises(ValueError, match=message):
        gymnasium.make_vec(CARTPOLE, num_envs=2, vectorization_mode="vector_entry_point", episode_length=5)
    env = gymnasium.make(CARTPOLE, max_episode_steps=5)  # Gymnasium's way
    env.reset(seed=0)
    assert [env.step(np.zeros(1, np.float32))[3] for _ in range(5)] == [False] * 4 + [True]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_unwrapped_env_has_mujocos_dt_model_and_data(backend):
    """As Gymnasium's MuJoCo envs: `dt`, `model` (MjModel) and `data` (MjData) of the current state."""
    import mujoco

    env = gymnasium.make(CARTPOLE, backend=backend).unwrapped
    assert env.dt == pytest.approx(0.01) and isinstance(env.model, mujoco.MjModel)
    assert env.model.nq == 3
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.ones(1, np.float32))
    assert isinstance(env.data, mujoco.MjData)
    state = env.state.data
    np.testing.assert_allclose(env.data.qpos, np.asarray(state.qpos), rtol=1e-6)
    np.testing.assert_allclose(env.data.qvel, np.asarray(state.qvel), rtol=1e-6)
    assert env.data.time == pytest.approx(0.03)
    assert env.data.xpos.any()  # MuJoCo's derived quantities, computed for that state


def test_ant_info_has_ant_v5s_keys_and_the_old_names_as_aliases():
    ours = gymnasium.make("ChaosAnt-v0")
    ours.reset(seed=0)
    action = np.full(8, 0.5, np.float32)
    _, reward, _, _, info = ours.step(action)
    theirs = gymnasium.make("Ant-v5")
    theirs.reset(seed=0)
    # all of Ant-v5's but its contact cost, a term this Ant's reward (Brax's) does not have
    assert set(theirs.step(action)[4]) - {"reward_contact"} <= set(info)
    assert info["reward_forward"] + info["reward_survive"] + info["reward_ctrl"] == pytest.approx(reward, abs=1e-5)
    assert info["reward_ctrl"] == pytest.approx(-0.5 * 8 * 0.25, rel=1e-6)
    assert info["distance_from_origin"] == pytest.approx(np.hypot(info["x_position"], info["y_position"]), rel=1e-5)
    assert info["x_velocity"] == info["reward_forward"]
    # chaosgym 0.1's names, for one release
    assert (info["forward_reward"], info["healthy_reward"], info["ctrl_cost"]) == (
        info["reward_forward"], info["reward_survive"], -info["reward_ctrl"])


# ---- the C engine sees every blow-up -----------------------------------------------------------------

@pytest.mark.parametrize("backend", ["mujoco", "mjx"])
def test_every_blow_up_of_an_episode_is_seen(backend):
    env = gymnasium.make(CARTPOLE, backend=backend).unwrapped
    env.reset(seed=0)
    state = env.state
    blown = state.replace(data=state.data.replace(qvel=np.full_like(np.asarray(state.data.qvel), 1e20)))
    env.state = blown
    for _ in range(3):  # the undone state blows up again on every step
        obs, reward, terminated, _, info = env.step(np.zeros(1, np.float32))
        assert terminated and info["nonfinite_state"] and reward == 0.0, "a blow-up was missed"
        np.testing.assert_array_equal(np.asarray(env.state.data.qvel), np.asarray(blown.data.qvel))


# ---- non-finite actions ------------------------------------------------------------------------------

@pytest.mark.parametrize("actions, where", [
    (np.array([[0.0], [np.nan]], np.float32), "1 of 2 entries, the first nan at index (1, 0)"),
    (np.full((1000, 3), np.inf, np.float32), "3000 of 3000 entries, the first inf at index (0, 0)"),
    (np.array([-np.inf], np.float32), "1 of 1 entries, the first -inf at index (0,)"),
])
def test_a_non_finite_action_is_one_line_naming_where(actions, where):
    with pytest.raises(ValueError) as error:
        check_actions(actions, actions.shape)
    message = str(error.value)
    assert "\n" not in message and where in message and "nothing was stepped" in message


# ---- copies and pickles ------------------------------------------------------------------------------

def steps(env, actions) -> list:
    return [env.step(a) for a in actions]

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


# ---- resets drawn ahead ------------------------------------------------------------------------------

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


# ---- closed envs, seeds and reset options ------------------------------------------------------------

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


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seed": 1.5}, "seed must be"), ({"seed": "a"}, "seed must be"), ({"seed": [1]}, "list of 2"),
    ({"seed": -1}, "non-negative"), ({"seed": True}, "seed must be"),
    ({"options": "x"}, "options must be None or a dict"), ({"options": {"reset_maks": None}}, "reset_mask"),
])
def test_vector_reset_rejects_bad_seeds_and_options(kwargs, message, make_vector_env):
    env = make_vector_env(CARTPOLE, 2)
    with pytest.raises(ValueError, match=message):
        env.reset(**kwargs)

def test_a_none_seed_keeps_that_environments_stream_as_sync_vector_env_does(make_vector_env):
    ours = make_vector_env(CARTPOLE, 2)
    reference = gymnasium.make_vec(CARTPOLE, num_envs=2, vectorization_mode="sync", backend="mjx")
    for seed in ([1, 2], [5, None], None, [None, 7]):
        np.testing.assert_array_equal(ours.reset(seed=seed)[0], reference.reset(seed=seed)[0], err_msg=str(seed))

@pytest.mark.parametrize("spelling", ["same_step", "SameStep", "SAME_STEP", AutoresetMode.SAME_STEP])
def test_every_spelling_of_an_autoreset_mode_is_accepted(spelling):
    env = gymnasium.make_vec(CARTPOLE, num_envs=2, vectorization_mode="vector_entry_point", autoreset_mode=spelling)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    with pytest.raises(ValueError, match="'next_step', 'same_step', 'disabled'"):
        gymnasium.make_vec(CARTPOLE, num_envs=2, vectorization_mode="vector_entry_point", autoreset_mode="sometimes")


# ---- sizes and time limits ---------------------------------------------------------------------------

def test_a_batch_larger_than_the_machine_is_refused_before_anything_is_allocated(monkeypatch):
    def allocated(*args, **kwargs):
        raise AssertionError("allocated a batch before checking its size")

    monkeypatch.setattr(gym_adapters, "batch_space", allocated)
    monkeypatch.setattr(gym_adapters, "ResetSeeds", allocated)
    with pytest.raises(ValueError, match=r"num_envs=1,000,000,000 needs at least [\d,.]+ GiB of host memory "
                                         r"\(.* per environment.*\), more than the [\d,.]+ GiB available"):
        gymnasium.make_vec(CARTPOLE, num_envs=10**9, vectorization_mode="vector_entry_point")


@pytest.mark.parametrize(("size", "message"), [
    ({"width": -5}, "width"), ({"height": 0}, "height"), ({"width": 2.5}, "width"), ({"width": 10_000}, "width"),
])
def test_a_bad_render_size_fails_when_the_env_is_made(size, message):
    with pytest.raises(ValueError, match=f"render {message} must be an integer in 1\\.\\."):
        gymnasium.make(CARTPOLE, render_mode="rgb_array", **size)

@pytest.mark.parametrize("length", [0, -3, 2.5, True])
def test_a_time_limit_must_be_a_positive_integer(length):
    with pytest.raises(ValueError, match="episode_length must be a positive integer"):
        chaosgym.make(CARTPOLE, episode_length=length)
    with pytest.raises(ValueError, match="max_episode_steps must be a positive integer"):
        gymnasium.make_vec(CARTPOLE, num_envs=2, vectorization_mode="vector_entry_point", max_episode_steps=length)


# ---- a fast make -------------------------------------------------------------------------------------

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


# ---- float64 and subprocesses ------------------------------------------------------------------------

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
