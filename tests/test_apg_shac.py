"""APG with carried state and SHAC: their pieces against hand computations, and that each learns."""

import pickle

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym.agents import apg, shac
from chaosgym.evaluation import batched_evaluation, held_out_keys
from jaxpr_checks import HIGHEST, dot_precisions

# ---- pure pieces (fast) ---------------------------------------------------------------------------


def test_normalizer_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (n, 5)).astype(np.float32) * [1, 10, 0.1, 1, 1] for n in (7, 1, 40)]
    stats = apg.normalizer_init(5)
    x = jnp.ones(5)
    np.testing.assert_allclose(apg.normalize(stats, x), x)  # identity before any data
    for batch in batches:
        stats = apg.normalizer_update(stats, jnp.asarray(batch))
    seen = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean, seen.mean(0), rtol=1e-5)
    np.testing.assert_allclose(apg.normalize(stats, seen), (seen - seen.mean(0)) / seen.std(0), rtol=1e-3, atol=1e-4)
    # the statistics are constants to a gradient: d normalize / d obs = 1 / std, nothing through stats
    grad = jax.grad(lambda s, o: jnp.sum(apg.normalize(s, o)), argnums=(0, 1))(stats, jnp.asarray(seen[0]))
    np.testing.assert_allclose(grad[1], 1 / seen.std(0), rtol=1e-3)
    assert all(np.all(g == 0) for g in jax.tree.leaves(grad[0]))


def _window(rewards, terminated, truncated):
    rewards = jnp.asarray(rewards, jnp.float32)[:, None]
    flag = lambda x: jnp.asarray(x, bool)[:, None]
    obs = jnp.zeros(rewards.shape + (1,))
    return apg.Window(obs, rewards, flag(terminated), flag(truncated), obs)


# one env, 5 steps: a termination at step 1, a time-limit cut at step 3, then the window's end
REWARDS, TERMINATED, TRUNCATED = [1.0, 2.0, 3.0, 4.0, 5.0], [0, 1, 0, 0, 0], [0, 0, 0, 1, 0]
NEXT_VALUES = np.array([10.0, 20.0, 30.0, 40.0, 50.0])  # V'(s_{t+1})
G = 0.9


def test_actor_objective_closes_each_episode_piece():
    window = _window(REWARDS, TERMINATED, TRUNCATED)
    bootstraps = jnp.where(window.terminated, 0.0, jnp.asarray(NEXT_VALUES)[:, None])
    expected = (1 + G * 2 + 0)  + (3 + G * 4 + G**2 * 40) + (5 + G * 50)
    assert float(shac.actor_objective(window, bootstraps, G)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_td_lambda_against_the_forward_view(lam):
    window = _window(REWARDS, TERMINATED, TRUNCATED)
    b = np.where(TERMINATED, 0.0, NEXT_VALUES)
    targets = np.asarray(shac.td_lambda(window, jnp.asarray(b)[:, None], G, lam))[:, 0]
    # forward view: G^lam_t = (1 - lam) sum_n lam^(n-1) G^(n)_t, the last n-step return taking the rest
    ends = [1, 1, 3, 3, 4]  # last step of the episode piece each step belongs to

    def n_step(t, n):
        k = t + n - 1
        return sum(G**i * REWARDS[t + i] for i in range(n)) + G**n * b[k]

    for t in range(5):
        horizon = ends[t] - t + 1
        returns = [n_step(t, n) for n in range(1, horizon + 1)]
        expected = sum((1 - lam) * lam**(n - 1) * returns[n - 1] for n in range(1, horizon)) \
            + lam**(horizon - 1) * returns[-1]
        assert targets[t] == pytest.approx(expected, rel=1e-5), t


def test_configs_refuse_bad_settings():
    with pytest.raises(ValueError, match="window must be a positive integer"):
        apg.APGConfig(window=0)
    with pytest.raises(ValueError, match="b1 and b2"):
        apg.APGConfig(b1=1.0)
    with pytest.raises(ValueError, match="critic_minibatches"):
        shac.SHACConfig(num_envs=3, window=5, critic_minibatches=4)
    with pytest.raises(ValueError, match="lam must lie in"):
        shac.SHACConfig(lam=1.5)


# ---- the agents on the 1-pole cart pole ------------------------------------------------------------

AGENTS = {
    "apg": (apg, apg.APGConfig(num_envs=32)),
    "shac": (shac, shac.SHACConfig(num_envs=32)),
}


@pytest.fixture(scope="module")
def cartpole():
    return chaosgym.make("ChaosCartPole-v0")


@pytest.fixture(scope="module")
def equations_cartpole():
    """The 1-pole cart pole integrated from its equations: traced in seconds, where MJX's step takes ~20 s."""
    return chaosgym.make("ChaosCartPole-v0", physics="equations")


@pytest.fixture(scope="module")
def compiled(cartpole):
    return {name: jax.jit(module.make_update(cartpole, config)) for name, (module, config) in AGENTS.items()}


@pytest.mark.parametrize("name", AGENTS)
def test_update_multiplies_at_highest_precision(equations_cartpole, name):
    module, config = AGENTS[name]
    state = jax.eval_shape(lambda key: module.init(equations_cartpole, config, key), jax.random.key(0))
    jaxpr = jax.make_jaxpr(module.make_update(equations_cartpole, config))(state, jax.random.key(1)).jaxpr
    precisions = dot_precisions(jaxpr)
    assert len(precisions) >= 6  # policy forward and backward at least
    assert all(p == HIGHEST for p in precisions), set(precisions)


@pytest.mark.slow  # compiles a cart-pole update (1-4 min cold on a busy 2-core CPU)
@pytest.mark.parametrize("name", AGENTS)
def test_update_is_deterministic_and_resumes_exactly(cartpole, compiled, name):
    module, config = AGENTS[name]
    update = compiled[name]
    state = _init(cartpole, name)
    state, _ = update(state, jax.random.key(1))
    # a checkpoint round trip (host arrays, pickled) continues exactly as the live state does
    restored = jax.tree.map(jnp.asarray, pickle.loads(pickle.dumps(jax.device_get(state))))
    runs = [update(s, jax.random.key(2)) for s in (state, state, restored)]
    for other in runs[1:]:
        jax.tree.map(np.testing.assert_array_equal, runs[0], other)
    assert int(runs[0][0].env_steps) == 2 * config.num_envs * config.window
    # the carried states moved on: the next window starts where this one ended
    assert np.all(np.asarray(runs[0][0].env_state.steps) == 2 * config.window)


def _init(cartpole, name):
    module, config = AGENTS[name]
    return jax.jit(module.init, static_argnums=(0, 1))(cartpole, config, jax.random.key(0))


def _train(cartpole, compiled, name, updates):
    module, config = AGENTS[name]
    evaluate = batched_evaluation(cartpole, module.policy, "apg-shac")
    keys = held_out_keys(1_000_000, 16)
    state = _init(cartpole, name)
    before = float(evaluate(module.inference_params(state), keys)[0])
    history = []
    for i in range(updates):
        state, metrics = compiled[name](state, jax.random.fold_in(jax.random.key(1), i))
        history.append(jax.device_get(metrics))
    after = float(evaluate(module.inference_params(state), keys)[0])
    return before, after, history


@pytest.mark.slow
def test_apg_improves_the_held_out_return(cartpole, compiled):
    # 30 updates = 30,720 env steps; measured: -84.8 -> about +70 (a pole kept up scores ~+90)
    before, after, history = _train(cartpole, compiled, "apg", 30)
    assert after > before + 100, (before, after)
    assert all(m["skipped_updates"] == 0 for m in history)


@pytest.mark.slow
def test_shac_improves_the_held_out_return_and_its_critic_loss_falls(cartpole, compiled):
    # 60 updates = 61,440 env steps; measured: -84.8 -> about +84
    before, after, history = _train(cartpole, compiled, "shac", 60)
    assert after > before + 100, (before, after)
    before_fit = np.array([m["value_loss_before"] for m in history])
    after_fit = np.array([m["value_loss"] for m in history])
    # each fit lowers the loss on its own targets, and the critic predicts fresh targets better as it learns
    assert np.mean(after_fit < before_fit) > 0.9
    assert before_fit[-10:].mean() < 0.5 * before_fit[:3].mean(), before_fit
