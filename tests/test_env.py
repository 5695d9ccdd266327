"""The functional core: pure reset/step under jit, vmap and grad; clipping, time limit, blow-ups."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym

HORIZON = 5


def assert_states_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def rollout_loss(env, state, actions):
    """Negative return of a short open-loop rollout: a scalar for `jax.grad`."""
    def body(state, action):
        state = env.step(state, action)
        return state, state.reward
    return -jnp.sum(jax.lax.scan(body, state, actions)[1])


def test_state_carries_what_the_issue_names(cartpole_start):
    state = cartpole_start
    # one cart + pole pair and the reference mass; the raw observation x, x', theta, theta'
    assert state.data.qpos.shape == (3,) and state.obs.shape == (4,)
    assert state.reward.shape == state.terminated.shape == state.truncated.shape == ()
    assert {"upright", "cart_position", "force", "nonfinite_state"} <= set(state.info)
    assert int(state.steps) == 0 and not bool(state.terminated) and not bool(state.truncated)


def test_reset_is_a_pure_function_of_the_key(cartpole):
    assert_states_equal(cartpole.jit_reset(jax.random.key(7)), cartpole.jit_reset(jax.random.key(7)))
    different = cartpole.jit_reset(jax.random.key(8))
    assert not np.array_equal(cartpole.jit_reset(jax.random.key(7)).obs, different.obs)


def test_step_is_pure(cartpole, cartpole_start):
    action = jnp.array([0.3])
    first = cartpole.jit_step(cartpole_start, action)
    assert_states_equal(first, cartpole.jit_step(cartpole_start, action))
    assert not np.array_equal(first.obs, cartpole_start.obs)
    assert int(first.steps) == 1


def test_vmap_matches_one_environment_at_a_time(cartpole):
    keys = jax.random.split(jax.random.key(1), 3)
    actions = jnp.array([[-0.5], [0.1], [0.9]])
    batch = jax.jit(jax.vmap(cartpole.step))(jax.jit(jax.vmap(cartpole.reset))(keys), actions)
    for i in range(3):
        single = cartpole.jit_step(cartpole.jit_reset(keys[i]), actions[i])
        np.testing.assert_allclose(batch.obs[i], single.obs, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(batch.reward[i], single.reward, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def rollout_grad(cartpole):
    """Gradient of `rollout_loss` with respect to the actions and the incoming state."""
    # the state holds integer and boolean leaves (steps, flags), whose gradients are float0
    return jax.grad(lambda actions, state: rollout_loss(cartpole, state, actions), argnums=(0, 1), allow_int=True)


def test_grad_with_respect_to_actions_and_state(rollout_grad, cartpole_start):
    actions = jnp.full((HORIZON, 1), 0.2)
    grad_actions, grad_state = jax.jit(rollout_grad)(actions, cartpole_start)
    assert grad_actions.shape == actions.shape
    for g in (grad_actions, grad_state.data.qpos, grad_state.data.qvel):
        assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0)


@pytest.mark.slow  # a vmapped gradient program
def test_per_example_gradients_under_vmap(rollout_grad, cartpole_start):
    """vmap of grad: each row equals the gradient computed alone."""
    actions = jnp.stack([jnp.full((HORIZON, 1), 0.2), jnp.full((HORIZON, 1), -0.4)])
    batched, _ = jax.jit(jax.vmap(rollout_grad, in_axes=(0, None)))(actions, cartpole_start)
    np.testing.assert_allclose(batched[0], jax.jit(rollout_grad)(actions[0], cartpole_start)[0],
                               rtol=1e-5, atol=1e-7)
    assert not np.allclose(batched[0], batched[1])


@pytest.mark.parametrize("env_id, frame_skip", [("ChaosCartPole-v0", 3),
                                                pytest.param("ChaosCartPole-v0", None, marks=pytest.mark.slow),
                                                pytest.param("ChaosDoublePendulum-v0", None, marks=pytest.mark.slow)])
def test_gradient_matches_finite_differences_in_float64(env_id, frame_skip):
    """Relative error (2-norm over 20 actions and the initial qpos, qvel) below 1e-5; measured ~1e-8
    (2.3e-9 with 3 substeps). With several substeps per control step, each rematerialised as on the
    Ant, the gradient also equals the one through plain substeps (measured: equal, bit for bit)."""
    script = Path(__file__).with_name("fd_gradient_check.py")
    result = subprocess.run([sys.executable, str(script), env_id, "20", *([str(frame_skip)] if frame_skip else [])],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["grad_norm"] > 1e-3
    assert report["relative_error"] < 1e-5, report
    if frame_skip:
        assert report["rematerialised"] and not report["plain_rematerialised"], report
        assert report["remat_difference"] < 1e-12 * report["grad_norm"], report


def test_out_of_range_actions_are_clipped(cartpole, cartpole_start):
    assert_states_equal(cartpole.jit_step(cartpole_start, jnp.array([5.0])),
                        cartpole.jit_step(cartpole_start, jnp.array([1.0])))
    assert_states_equal(cartpole.jit_step(cartpole_start, jnp.array([-7.0])),
                        cartpole.jit_step(cartpole_start, jnp.array([-1.0])))


def test_time_limit_truncates_and_counts_steps():
    env = chaosgym.make("ChaosCartPole-v0", episode_length=3)
    state = env.jit_reset(jax.random.key(0))
    flags = []
    for _ in range(3):
        state = env.jit_step(state, jnp.zeros(1))
        flags.append((int(state.steps), bool(state.truncated), bool(state.terminated)))
    assert flags == [(1, False, False), (2, False, False), (3, True, False)]


def blown_up(state: chaosgym.State) -> chaosgym.State:
    """A finite state whose next step overflows float32 (velocity squared in the bias forces)."""
    return state.replace(data=state.data.replace(qvel=jnp.full_like(state.data.qvel, 1e20)))


@pytest.mark.slow  # a policy-gradient program
def test_a_blow_up_in_a_batch_leaves_the_gradient_finite(cartpole):
    """The blown-up trajectory contributes 0 to the gradient, not NaN: the batch [healthy, blown up]
    has half the gradient of [healthy, healthy], which is the healthy trajectory's alone."""
    from chaosgym.functional.policies import init_policy, mlp_policy
    from chaosgym.functional.rollout import rollout

    params = init_policy(jax.random.key(0), cartpole.observation_size, cartpole.action_size, (8,))
    healthy = jax.tree.map(lambda x: jnp.stack([x, x]), cartpole.jit_reset(jax.random.key(1)))
    qvel = healthy.data.qvel.at[1].set(1e20)  # finite, but its next step overflows float32
    blown = healthy.replace(data=healthy.data.replace(qvel=qvel))
    grad = jax.jit(jax.grad(lambda p, s: rollout(cartpole, mlp_policy, p, s, HORIZON)[0]))
    with_blow_up, reference = grad(params, blown), grad(params, healthy)
    for g, r in zip(jax.tree.leaves(with_blow_up), jax.tree.leaves(reference), strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(2 * np.asarray(g), r, rtol=1e-5, atol=1e-6)
    assert any(np.any(np.asarray(r) != 0) for r in jax.tree.leaves(reference))


@pytest.mark.parametrize("env_fixture", ["cartpole", "pendulum"])
def test_physics_blow_up_terminates_and_undoes_the_step(env_fixture, request):
    env = request.getfixturevalue(env_fixture)
    before = blown_up(env.jit_reset(jax.random.key(0)))
    raw = jax.jit(env.physics_step)(before.data, jnp.zeros(env.action_size))
    assert not np.all(np.isfinite(raw.qvel)), "the provocation must really blow MJX up"
    after = env.jit_step(before, jnp.zeros(env.action_size))
    assert bool(after.terminated) and bool(after.info["nonfinite_state"])
    assert float(after.reward) == 0.0
    assert np.all(np.isfinite(after.obs))
    # the state MJX steps from and every field the task reads are those before the step
    assert {"qpos", "qvel", "qacc_warmstart", "time"} <= set(env.restored_fields)
    for name in env.restored_fields:
        assert_states_equal(getattr(after.data, name), getattr(before.data, name))
    # so stepping on from the undone state is stepping from the state before it
    action = jnp.full(env.action_size, 0.5)
    reference = before.replace(data=before.data.replace(qvel=jnp.zeros_like(before.data.qvel)))
    resumed = after.replace(data=after.data.replace(qvel=jnp.zeros_like(after.data.qvel)))
    assert_states_equal(env.jit_step(resumed, action).data, env.jit_step(reference, action).data)


def test_unknown_id_lists_valid_ids():
    with pytest.raises(ValueError) as error:
        chaosgym.make("ChaosPendulum-v9")
    for env_id in chaosgym.TASKS:
        assert env_id in str(error.value)


def test_invalid_option_value_says_what_is_valid():
    with pytest.raises(ValueError, match=r"num_poles.*1\.\.4.*7"):
        chaosgym.make("ChaosCartPole-v0", num_poles=7)
    with pytest.raises(ValueError, match=r"num_links.*1\.\.4"):
        chaosgym.make("ChaosDoublePendulum-v0", num_links=0)
    with pytest.raises(ValueError, match="num_poles"):
        chaosgym.make("ChaosCartPole-v0", num_poles=2.5)


def test_unknown_option_lists_valid_options():
    with pytest.raises(TypeError, match=r"num_pole\b.*num_poles=1"):
        chaosgym.make("ChaosCartPole-v0", num_pole=2)
    with pytest.raises(TypeError, match=r"num_poles.*valid options.*ctrl_cost_weight=0.5"):  # the Ant's reward weights
        chaosgym.make("ChaosAnt-v0", num_poles=2)


@pytest.mark.parametrize("action", [jnp.zeros(2), jnp.array(0.5), jnp.zeros((1, 1))])
def test_the_functional_step_names_the_action_shape_it_expects(action, cartpole, cartpole_start):
    with pytest.raises(ValueError, match=r"expected an action of shape \(1,\).*got shape"):
        cartpole.step(cartpole_start, action)


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
