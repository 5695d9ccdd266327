"""What a hostile user tried (issue 13): stale traced programs, unwritable caches, blow-ups in the
C engine, and bad input at every face. Each test failed on the code before the fix."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import chaosgym
from chaosgym.functional import trace_cache
from chaosgym.functional.rollout import rollout

CARTPOLE = "ChaosCartPole-v0"

# ---- the trace cache never replays outdated code -------------------------------------------------

# One step of the double pendulum with its class attribute set from argv[1], and one of a user's own
# Task subclass from the module file argv[2]; prints both rewards and the trace files written.
WORKER = textwrap.dedent("""
    import json, os, sys
    import jax, jax.numpy as jnp
    import chaosgym
    from chaosgym.tasks import DoublePendulum

    DoublePendulum.link_length = float(sys.argv[1])
    sys.path.insert(0, os.path.dirname(sys.argv[2]))
    from user_task import UserPendulum

    def reward(env):
        return float(env.jit_step(env.jit_reset(jax.random.key(0)), jnp.ones(env.action_size)).reward)

    rewards = [reward(chaosgym.make("ChaosDoublePendulum-v0")), reward(chaosgym.Env(UserPendulum()))]
    folder = os.path.join(os.environ["CHAOSGYM_CACHE_DIR"], "traces")
    files = {name: os.stat(os.path.join(folder, name)).st_mode for name in os.listdir(folder)}
    print(json.dumps({"rewards": rewards, "files": files}))
""")

USER_TASK = textwrap.dedent("""
    from chaosgym.tasks import DoublePendulum

    class UserPendulum(DoublePendulum):
        def reward(self, data, action, next_data):
            reward, metrics = super().reward(data, action, next_data)
            return reward - {offset}, metrics
""")


def run_worker(cache_dir, module, link_length: float, offset: float) -> dict:
    module.write_text(USER_TASK.format(offset=offset))
    env = {**os.environ, "CHAOSGYM_CACHE_DIR": str(cache_dir), "CHAOSGYM_COMPILATION_CACHE": "1",
           "CHAOSGYM_TRACE_CACHE": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", WORKER, str(link_length), str(module)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # four subprocesses that trace and compile
def test_changed_class_attributes_and_edited_user_tasks_are_never_replayed(tmp_path):
    module = tmp_path / "user" / "user_task.py"
    module.parent.mkdir()
    first = run_worker(tmp_path / "cache", module, link_length=0.5, offset=0.0)
    second = run_worker(tmp_path / "cache", module, link_length=0.25, offset=3.0)
    # the reward is the tip's height over the chain's length minus 0.01 |a|^2 (one actuator): halving
    # the class's link_length doubles the first term, h = reward + 0.01
    assert second["rewards"][0] == pytest.approx(2 * first["rewards"][0] + 0.01, abs=1e-4)
    assert second["rewards"][1] == pytest.approx(2 * first["rewards"][1] + 0.01 - 3.0, abs=1e-4)
    # the chaosgym task is cached under both settings; the user's task (code the cache cannot
    # fingerprint) is never stored: reset and step of the pendulum per run, nothing more
    assert len(first["files"]) == 2 and len(second["files"]) == 4 and set(first["files"]) < set(second["files"])
    # and the files are readable by other users (the umask of the test run allowing)
    if os.umask(os.umask(0)) & 0o044 == 0:
        assert all(mode & 0o044 == 0o044 for mode in second["files"].values())


def test_object_key_sees_class_attributes_and_refuses_foreign_code(monkeypatch):
    from chaosgym.tasks import DoublePendulum

    task = DoublePendulum()
    key = trace_cache.object_key(task)
    monkeypatch.setattr(DoublePendulum, "link_length", 0.25)
    assert trace_cache.object_key(task) != key
    monkeypatch.setattr(DoublePendulum, "reward", lambda self, data, action, next_data: (0.0, {}))
    assert trace_cache.object_key(task) == trace_cache.UNCACHED

    class Mine(DoublePendulum):
        pass

    assert trace_cache.object_key(Mine()) == trace_cache.UNCACHED


# ---- a cache that cannot be written never stops the program ----------------------------------------


@pytest.mark.parametrize("where", ["/proc/x", "a file"])
def test_an_unwritable_trace_cache_warns_once_and_runs_uncached(where, tmp_path, monkeypatch):
    if where == "a file":
        where = tmp_path / "not-a-folder"
        where.write_text("")
    monkeypatch.setenv("CHAOSGYM_CACHE_DIR", str(where))
    monkeypatch.setenv("CHAOSGYM_COMPILATION_CACHE", "1")
    monkeypatch.setenv("CHAOSGYM_TRACE_CACHE", "1")
    monkeypatch.setattr(trace_cache, "_warned", set())
    with pytest.warns(RuntimeWarning, match="trace cache cannot write") as warned:
        results = [float(trace_cache.cached_jit(lambda x, k=k: x * k, ("unwritable", k))(2.0)) for k in (3, 4)]
    assert results == [6.0, 8.0]
    assert len([w for w in warned if "trace cache" in str(w.message)]) == 1


def test_write_atomic_gives_the_permissions_open_gives(tmp_path):
    trace_cache.write_atomic(tmp_path / "f.bin", b"payload")
    (tmp_path / "reference").write_bytes(b"")
    assert (tmp_path / "f.bin").read_bytes() == b"payload"
    mode = stat.S_IMODE((tmp_path / "f.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "reference"]  # no temporary file left


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


# ---- bad input at every face ------------------------------------------------------------------------


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


@pytest.mark.parametrize("action", [jnp.zeros(2), jnp.array(0.5), jnp.zeros((1, 1))])
def test_the_functional_step_names_the_action_shape_it_expects(action, cartpole, cartpole_start):
    with pytest.raises(ValueError, match=r"expected an action of shape \(1,\).*got shape"):
        cartpole.step(cartpole_start, action)


def test_rollout_names_what_it_expects(cartpole, cartpole_start):
    states = jax.tree.map(lambda x: jnp.stack([x, x]), cartpole_start)  # a batch of two, nothing compiled
    with pytest.raises(ValueError, match=r"one action of shape \(1,\); it returned shape \(\)"):
        rollout(cartpole, lambda params, obs: jnp.sum(obs), None, states, 3)
    with pytest.raises(ValueError, match=r"one action of shape \(1,\); it returned shape \(3,\)"):
        rollout(cartpole, lambda params, obs: jnp.zeros(3), None, states, 3)
    with pytest.raises(ValueError, match="batch of states"):
        rollout(cartpole, lambda params, obs: jnp.zeros(1), None, cartpole_start, 3)
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        rollout(cartpole, lambda params, obs: jnp.zeros(1), None, states, 0)


def test_sb3_vec_env_refuses_out_of_order_async_calls():
    from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv

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


X64 = textwrap.dedent("""
    import jax, jax.numpy as jnp
    import chaosgym
    first = chaosgym.make("ChaosCartPole-v0")
    jax.config.update("jax_enable_x64", True)
    env = chaosgym.make("ChaosCartPole-v0")
    state = jax.eval_shape(env.reset, jax.random.key(0))
    scan = lambda s: jax.lax.scan(lambda c, _: (env.step(c, jnp.zeros(1)), None), s, None, length=2)[0]
    out = jax.eval_shape(jax.grad(lambda s: jnp.sum(scan(s).reward), allow_int=True), state)
    print(env is not first, state.data.qpos.dtype, out.data.qacc_warmstart.dtype)
""")


def test_make_after_switching_float64_on_gives_a_float64_env():
    done = subprocess.run([sys.executable, "-c", X64], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "float64", "float64"]


# ---- a policy that gives NaN never scores best --------------------------------------------------


def test_a_non_finite_action_makes_the_rollout_loss_and_gradient_nan():
    """The env ends an episode whose state is non-finite with reward 0; a NaN action must not turn
    that rule into the best loss (it was 0.0, against 4.65 for the zero policy on the cart pole)."""
    env = chaosgym.make(CARTPOLE, physics="equations")  # compiles in seconds; the rule is rollout's
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 2))
    middle = jnp.mean(states.obs[:, 0])
    policies = {"zero": lambda w, obs: w * jnp.zeros(1),
                "nan": lambda w, obs: w * jnp.full(1, jnp.nan),
                "nan on the right": lambda w, obs: w * jnp.where(obs[0] > middle, jnp.nan, 0.0) * jnp.ones(1)}
    results = {}
    for name, policy in policies.items():
        def loss(w, policy=policy):
            value, trajectory = rollout(env, policy, w, states, 5)
            return value, trajectory.failed
        (value, failed), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(1.0)
        results[name] = float(value), float(grad), failed.tolist()
    assert np.isfinite(results["zero"][:2]).all() and results["zero"][2] == [False, False]
    assert np.isnan(results["nan"][:2]).all() and results["nan"][2] == [True, True]
    assert np.isnan(results["nan on the right"][:2]).all() and sorted(results["nan on the right"][2]) == [False, True]
