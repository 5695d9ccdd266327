"""ChaosCartPole-v0 is Schnell & Thuerey's system, and the paper's policy and combined update behave
as their code does."""

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
from chaosgym.functional.gradients import EstimatorConfig, combine, make_estimator
from chaosgym.functional.policies import paper_init, policy_functions
from chaosgym.functional.rollout import rollout

# The paper's equations, as tests/stable_bptt_reference.py writes them from the paper (its
# cartpole_simulator.py) without chaosgym: every pole under the same force, semi-implicit Euler.
TESTS = str(Path(__file__).resolve().parent)
PAPER_EQUATIONS = textwrap.dedent(f"""
    import sys
    import numpy as np
    sys.path.insert(0, {TESTS!r})
    from stable_bptt_reference import physics_step

    def paper_step(x, x_dot, theta, theta_dot, force):
        state = np.concatenate([[[x, x_dot]], np.stack([theta, theta_dot], -1)])
        state = np.asarray(physics_step(state, np.float64(force)))
        return state[0, 0], state[0, 1], state[1:, 0], state[1:, 1]
""")

FLOAT64_CHECK = PAPER_EQUATIONS + textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp
    import chaosgym

    assert jax.config.jax_enable_x64
    rng = np.random.default_rng(0)
    errors = {}
    for n in map(int, sys.argv[1:]):
        env = chaosgym.make("ChaosCartPole-v0", num_poles=n)
        x, x_dot = rng.uniform(-1, 1, 2)
        theta = np.pi + rng.uniform(-1, 1, n) * np.pi / 6
        theta_dot = rng.uniform(-1, 1, n)
        # forces in newtons: moderate, then large kicks near the 1000 N bound, then none
        forces = np.concatenate([rng.normal(0, 20, 40), rng.choice([-950.0, 950.0], 20), rng.normal(0, 200, 30), np.zeros(10)])
        state = jax.jit(env.reset_to)(*env.task.qpos_qvel(jnp.float64(x), jnp.float64(x_dot), jnp.asarray(theta), jnp.asarray(theta_dot)))
        def step(state, force):
            state = env.step(state, jnp.reshape(force / env.task.force_scale, (1,)))
            return state, state.obs
        _, obs = jax.jit(lambda s, f: jax.lax.scan(step, s, f))(state, jnp.asarray(forces))
        obs = np.asarray(obs)
        want = []
        for force in forces:
            x, x_dot, theta, theta_dot = paper_step(x, x_dot, theta, theta_dot, force)
            want.append(np.concatenate([[x, x_dot], np.stack([theta, theta_dot], -1).ravel()]))
        want = np.array(want)
        errors[n] = {"poles": float(np.max(np.abs(obs[:, 2:] - want[:, 2:]))),
                     "cart": float(np.max(np.abs(obs[:, :2] - want[:, :2]))),
                     "largest_theta_dot": float(np.max(np.abs(want[:, 3::2]))), "dtype": str(obs.dtype)}
    print(json.dumps(errors))
""")


@pytest.mark.parametrize("poles", [pytest.param((1, 3), id="N=1,3"),
                                   pytest.param((2, 4), id="N=2,4", marks=pytest.mark.slow)])
def test_every_pole_follows_the_papers_equations_in_float64(poles):
    """100 steps from the same state under the same forces (up to 950 N): theta_i, theta_i' equal the
    paper's equations to 1e-9 for N = 1..4, and so do the cart's x, x' (exact for N > 1 as well)."""
    env = {**os.environ, "JAX_ENABLE_X64": "1", "CHAOSGYM_TRACE_CACHE": "0"}
    result = subprocess.run([sys.executable, "-c", FLOAT64_CHECK, *map(str, poles)], capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(map(int, errors)) == sorted(poles)
    for n, error in errors.items():
        assert error["dtype"] == "float64"
        assert error["largest_theta_dot"] > 10  # the large forces really whipped the poles around
        assert error["poles"] <= 1e-9, (n, error)
        assert error["cart"] <= 1e-9, (n, error)


@pytest.mark.slow  # implied by the float64 equation match; compiles 2-pole physics
def test_a_pole_feels_no_other_pole():
    """Adding poles leaves pole 0's trajectory unchanged (N independent systems under one force)."""
    rng = np.random.default_rng(1)
    forces = jnp.asarray(rng.normal(0, 30, 50) / 1000.0, jnp.float32)[:, None]
    trajectories = []
    for n in (1, 3):
        env = chaosgym.make("ChaosCartPole-v0", num_poles=n)
        theta = jnp.concatenate([jnp.array([3.0]), jnp.linspace(2.7, 3.5, n - 1)])
        state = jax.jit(env.reset_to)(*env.task.qpos_qvel(jnp.float32(0.2), jnp.float32(-0.3), theta, jnp.full(n, 0.4)))
        _, obs = jax.lax.scan(lambda s, a: (lambda t: (t, t.obs))(env.step(s, a)), state, forces)
        trajectories.append(np.asarray(obs[:, 2:4]))  # theta_0, theta_0'
    np.testing.assert_allclose(trajectories[0], trajectories[1], atol=1e-5)


def test_task_interface():
    env = chaosgym.make("ChaosCartPole-v0", num_poles=2)
    assert env.observation_size == 2 + 2 * 2 and env.action_size == 1 and env.dt == pytest.approx(0.01)
    assert env.task.force_scale == 1000.0
    assert float(env.mj_model.opt.gravity[2]) == pytest.approx(-9.8)
    # x, x' and theta' in [-1, 1], theta = pi + U[-1, 1] pi / 6 (the paper's distribution)
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), 512))
    x, x_dot, theta, theta_dot = states.obs[:, 0], states.obs[:, 1], states.obs[:, 2::2], states.obs[:, 3::2]
    for v in (x, x_dot, theta_dot):
        assert -1 <= float(v.min()) < -0.9 and 0.9 < float(v.max()) <= 1
    assert np.pi * 5 / 6 <= float(theta.min()) < np.pi * 5 / 6 + 0.05
    assert np.pi * 7 / 6 - 0.05 < float(theta.max()) <= np.pi * 7 / 6
    cos_sin = chaosgym.make("ChaosCartPole-v0", num_poles=2, observation="cos_sin")
    assert cos_sin.observation_size == 2 + 3 * 2
    with pytest.raises(ValueError, match="observation must be one of"):
        chaosgym.make("ChaosCartPole-v0", observation="pixels")
    with pytest.raises(ValueError, match="force_scale must be a positive"):
        chaosgym.make("ChaosCartPole-v0", force_scale=-1.0)
    with pytest.raises(ValueError, match="has no objective 'speed'; its objectives: return, final_state"):
        env.task.objective("speed")


def test_paper_policy_initialisation():
    """Glorot-uniform kernels, zero biases, a zeroed output kernel, and the force in newtons."""
    params = paper_init(jax.random.key(0), 6, 1)
    assert [w.shape for w, _ in params] == [(6, 100), (100, 100), (100, 1)]
    assert all(float(jnp.abs(b).max()) == 0.0 for _, b in params)
    assert float(jnp.abs(params[-1][0]).max()) == 0.0
    limit = np.sqrt(6 / (6 + 100))  # Glorot uniform bound of the first layer
    w0 = np.asarray(params[0][0])
    assert w0.max() <= limit and w0.min() >= -limit and w0.max() > 0.9 * limit
    env = chaosgym.make("ChaosCartPole-v0")
    _, policy = policy_functions("paper", env.task)
    params = paper_init(jax.random.key(0), 4, 1)
    params[-1] = (params[-1][0], jnp.array([250.0]))  # a linear output of 250 N
    assert float(policy(params, jnp.ones(4))[0]) == pytest.approx(250.0 / 1000.0)
    with pytest.raises(ValueError, match="valid policies: tanh, paper"):
        policy_functions("relu", env.task)


HORIZON = 5  # what these tests check does not need a long unroll, and compiles cost minutes


@pytest.fixture(scope="module")
def short_problem():
    env = chaosgym.make("ChaosCartPole-v0")
    init, policy = policy_functions("paper", env.task)
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(3), 4))
    return env, init, policy, states


@pytest.mark.slow  # two 100-step gradient programs
def test_zeroed_output_layer_gives_full_equal_modified_at_initialisation(short_problem):
    """At the paper's initialisation the network's input Jacobian is 0, so R = M exactly: the combined
    update's cosine is 1 and no component is zeroed."""
    env, init, policy, states = short_problem
    config = EstimatorConfig(name="combined", horizon=HORIZON, objective="final_state")
    grad, diagnostics = jax.jit(make_estimator(env, policy, config))(init(jax.random.key(0), 4, 1), states,
                                                                      jax.random.key(1))
    assert float(diagnostics["cosine_modified_full"]) == pytest.approx(1.0, abs=1e-6)
    assert float(diagnostics["fraction_zeroed"]) == 0.0
    assert float(jnp.abs(grad[-1][0]).max()) > 0  # the output layer does get a gradient


def test_combination_rule_by_hand():
    """C keeps the modified gradient's components whose sign agrees with the full gradient's, else 0."""
    g_mod = {"w": jnp.array([[0.5, -2.0], [3.0, 0.0]]), "b": jnp.array([-1.0, 4.0, 0.0])}
    g_full = {"w": jnp.array([[1.0, 7.0], [-3.0, 0.0]]), "b": jnp.array([-0.1, 2.0, 5.0])}
    combined, zeroed = combine(g_mod, g_full)
    np.testing.assert_array_equal(combined["w"], [[0.5, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(combined["b"], [-1.0, 4.0, 0.0])
    assert float(zeroed) == pytest.approx(3 / 7)  # (0,1), (1,0) and b[2] disagree; 0 agrees with 0


@pytest.mark.slow  # three 100-step gradient programs
def test_combined_estimator_applies_the_rule_to_the_modified_and_full_gradients(short_problem):
    """On the cart pole, the combined estimator's update is `combine(g_M, g_R)` of the modified and
    full flows' gradients of the batch-mean loss (computed in the same program)."""
    env, init, policy, states = short_problem
    params = init(jax.random.key(0), 4, 1)
    # a large output layer, so that the policy's input Jacobian (what M cuts) matters within 5 steps
    params[-1] = (300 * jax.random.normal(jax.random.key(5), params[-1][0].shape), params[-1][1])

    def loss(p, flow):
        return rollout(env, policy, p, states, HORIZON, flow=flow, objective="final_state")[0]

    config = EstimatorConfig(name="combined", horizon=HORIZON, objective="final_state")
    estimate = make_estimator(env, policy, config)

    @jax.jit
    def both(p):
        return estimate(p, states, jax.random.key(1)), jax.grad(loss)(p, "modified"), jax.grad(loss)(p, "full")

    (g_comb, diagnostics), g_mod, g_full = both(params)
    flat_comb, flat_mod, flat_full = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
                                      for g in (g_comb, g_mod, g_full))
    disagree = np.sign(flat_mod) != np.sign(flat_full)
    assert 0.01 < disagree.mean() < 0.99  # the example really exercises the sign test
    # components far from 0 in both gradients: a rounding difference cannot flip their sign
    clear = (np.abs(flat_mod) > 1e-4 * np.abs(flat_mod).max()) & (np.abs(flat_full) > 1e-4 * np.abs(flat_full).max())
    assert clear.mean() > 0.5
    np.testing.assert_allclose(flat_comb[clear], np.where(disagree, 0.0, flat_mod)[clear], rtol=1e-4,
                               atol=1e-6 * np.abs(flat_mod).max())
    assert float(diagnostics["fraction_zeroed"]) == pytest.approx(disagree.mean(), abs=0.01)
