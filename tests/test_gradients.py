"""The meaning of each gradient flow and estimator, pinned on small problems."""

import functools
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym.functional.gradients import EstimatorConfig, es_gradient, make_estimator
from chaosgym.functional.policies import init_policy, mlp_policy
from chaosgym.functional.rollout import rollout

HORIZON = 6


# The identities hold for any system; each runs on the paper's cart pole integrated from its
# closed-form equations (compiles in seconds: the fast tier) and on the MJX double pendulum (slow).
SYSTEMS = ["cartpole_equations", pytest.param("double_pendulum_mjx", marks=pytest.mark.slow)]


@functools.cache
def make_system(name):
    if name == "cartpole_equations":
        # its 1000 N actions make the closed loop matter at the initial weights: the flows differ
        env, scale = chaosgym.make("ChaosCartPole-v0", physics="equations"), 1.0
    else:
        # large weights so the closed loop matters and the flows really differ
        env, scale = chaosgym.make("ChaosDoublePendulum-v0"), 3.0
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, hidden=(8,))
    params = jax.tree.map(lambda x: scale * x, params)
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(1), 3))
    return env, params, states


@pytest.fixture(scope="module", params=SYSTEMS)
def system(request):
    return make_system(request.param)


@functools.cache  # one program per flow, shared by the tests
def compiled_flow_grad(env, policy, flow, truncation, remat):
    loss = lambda p, states: rollout(env, policy, p, states, HORIZON, flow=flow, truncation=truncation,
                                     remat=remat)[0]
    return jax.jit(jax.grad(loss))


def flow_grad(env, policy, params, states, flow, truncation=None, remat=False):
    return compiled_flow_grad(env, policy, flow, truncation, remat)(params, states)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-7):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def trees_differ(a, b, rtol=1e-3):
    return any(not np.allclose(x, y, rtol=rtol) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_modified_equals_full_for_a_policy_that_ignores_its_input(system):
    env, _, states = system
    open_loop = lambda params, obs: jnp.tanh(params["bias"])
    params = {"bias": jnp.array([0.3])}
    assert_trees_close(flow_grad(env, open_loop, params, states, "modified"),
                       flow_grad(env, open_loop, params, states, "full"))


def test_modified_differs_from_full_for_a_feedback_policy(system):
    env, params, states = system
    assert trees_differ(flow_grad(env, mlp_policy, params, states, "modified"),
                        flow_grad(env, mlp_policy, params, states, "full"))


def test_truncated_with_window_equal_to_horizon_is_full(system):
    env, params, states = system
    full = flow_grad(env, mlp_policy, params, states, "full")
    assert_trees_close(flow_grad(env, mlp_policy, params, states, "truncated", truncation=HORIZON), full)
    assert trees_differ(flow_grad(env, mlp_policy, params, states, "truncated", truncation=2), full)


def test_rematerialised_rollout_gives_the_same_gradient(system):
    env, params, states = system
    assert_trees_close(flow_grad(env, mlp_policy, params, states, "full", remat=True),
                       flow_grad(env, mlp_policy, params, states, "full"))


def test_stopped_is_the_sum_of_one_step_gradients(system):
    env, params, states = system
    # the default objective, the return, is -sum(rewards): step t contributes -r_t (batch-averaged)
    @jax.jit
    def one_step_grad(params, state):
        def loss(p):
            action = jax.vmap(mlp_policy, in_axes=(None, 0))(p, state.obs)
            return -jnp.mean(jax.vmap(env.step)(state, action).reward)
        return jax.grad(loss)(params)

    step = jax.jit(jax.vmap(lambda s, p: env.step(s, mlp_policy(p, s.obs)), in_axes=(0, None)))
    total, state = jax.tree.map(jnp.zeros_like, params), states
    for _ in range(HORIZON):
        total = jax.tree.map(jnp.add, total, one_step_grad(params, state))
        state = step(state, params)
    assert_trees_close(flow_grad(env, mlp_policy, params, states, "stopped"), total, rtol=1e-4, atol=1e-6)


def test_combined_keeps_modified_where_signs_agree_and_zeroes_the_rest(system):
    env, params, states = system
    config = EstimatorConfig(name="combined", horizon=HORIZON)
    grad, diagnostics = jax.jit(make_estimator(env, mlp_policy, config))(params, states, jax.random.key(0))
    g_mod = flow_grad(env, mlp_policy, params, states, "modified")
    g_full = flow_grad(env, mlp_policy, params, states, "full")
    disagree = 0
    for c, m, r in zip(jax.tree.leaves(grad), jax.tree.leaves(g_mod), jax.tree.leaves(g_full)):
        c, m, r = map(np.asarray, (c, m, r))
        agree = np.sign(m) == np.sign(r)
        np.testing.assert_allclose(c[agree], m[agree], rtol=1e-5, atol=1e-8)
        assert np.all(c[~agree] == 0.0)
        disagree += int((~agree).sum())
    size = sum(x.size for x in jax.tree.leaves(params))
    assert disagree > 0, "the test problem must have disagreeing components"
    assert float(diagnostics["fraction_zeroed"]) == pytest.approx(disagree / size, abs=1e-6)
    assert -1.0 <= float(diagnostics["cosine_modified_full"]) <= 1.0


def test_es_is_unbiased_on_a_quadratic():
    a = jnp.diag(jnp.array([1.0, 2.0, 0.5, 4.0]))
    b = jnp.array([0.1, -0.2, 0.3, 0.0])
    theta = {"w": jnp.array([1.0, -1.0, 2.0, 0.5])}
    loss = lambda p: 0.5 * p["w"] @ a @ p["w"] + b @ p["w"]
    true = a @ theta["w"] + b
    # 20,000 pairs: the standard error of each component is about |grad| / sqrt(20,000) < 2%
    grad, _ = jax.jit(lambda k: es_gradient(loss, theta, k, sigma=0.1, pairs=20_000))(jax.random.key(0))
    np.testing.assert_allclose(grad["w"], true, rtol=0.05, atol=0.05)


def test_unknown_estimator_and_bad_truncation_are_rejected():
    with pytest.raises(ValueError, match="valid: full"):
        EstimatorConfig(name="magic")
    with pytest.raises(ValueError, match="truncation"):
        EstimatorConfig(name="truncated", horizon=10, truncation=None)


def test_full_gradient_matches_finite_differences():
    """In float32, along one random direction: a step of 1e-3 is measured to agree to ~1e-4 here,
    where the modified gradient's projection differs by a factor of 2 (float64, to 1e-5: below)."""
    env, params, states = make_system("cartpole_equations")
    loss = jax.jit(lambda p: rollout(env, mlp_policy, p, states, HORIZON)[0])
    direction = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape, x.dtype), params)
    grad = flow_grad(env, mlp_policy, params, states, "full")
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    h = 1e-3
    shift = lambda s: jax.tree.map(lambda p, d: p + s * h * d, params, direction)
    numeric = float(loss(shift(1)) - loss(shift(-1))) / (2 * h)
    assert analytic == pytest.approx(numeric, rel=1e-2)


FD_CHECK = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, chaosgym
    from chaosgym.functional.policies import init_policy, mlp_policy
    from chaosgym.functional.rollout import rollout
    env = chaosgym.make("ChaosCartPole-v0", num_poles=2)
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, hidden=(8,))
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), 2))
    loss = jax.jit(lambda p: rollout(env, mlp_policy, p, states, 12)[0])
    direction = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape, x.dtype), params)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(jax.grad(loss)(params)), jax.tree.leaves(direction)))
    h = 1e-6
    shift = lambda s: jax.tree.map(lambda p, d: p + s * h * d, params, direction)
    numeric = (loss(shift(1)) - loss(shift(-1))) / (2 * h)
    assert params[0][0].dtype == jnp.float64
    print(float(analytic), float(numeric))
""")


@pytest.mark.slow  # a float64 gradient program
def test_full_gradient_matches_finite_differences_in_float64():
    out = subprocess.run([sys.executable, "-c", FD_CHECK], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "JAX_ENABLE_X64": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    analytic, numeric = map(float, out.stdout.split()[-2:])
    assert analytic == pytest.approx(numeric, rel=1e-5)
