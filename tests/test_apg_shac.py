"""APG with carried state and SHAC: their pieces against hand computations, and that each learns."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym.agents import apg, carried, checkpoints, shac
from chaosgym.agents.settings import APGSettings, SHACSettings
from chaosgym.evaluation import batched_evaluation, held_out_keys
from chaosgym.validation import InvalidSetting
from jaxpr_checks import HIGHEST, dot_precisions

# ---- pure pieces (fast) ---------------------------------------------------------------------------


def test_normalizer_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (n, 5)).astype(np.float32) * [1, 10, 0.1, 1, 1] for n in (7, 1, 40)]
    stats = carried.normalizer_init(5)
    x = jnp.ones(5)
    np.testing.assert_allclose(carried.normalize(stats, x), x)  # identity before any data
    for batch in batches:
        stats = carried.normalizer_update(stats, jnp.asarray(batch))
    seen = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean, seen.mean(0), rtol=1e-5)
    np.testing.assert_allclose(carried.normalize(stats, seen), (seen - seen.mean(0)) / seen.std(0), rtol=1e-3,
                               atol=1e-4)
    # the statistics are constants to a gradient: d normalize / d obs = 1 / std, nothing through stats
    grad = jax.grad(lambda s, o: jnp.sum(carried.normalize(s, o)), argnums=(0, 1))(stats, jnp.asarray(seen[0]))
    np.testing.assert_allclose(grad[1], 1 / seen.std(0), rtol=1e-3)
    assert all(np.all(g == 0) for g in jax.tree.leaves(grad[0]))


def _window(rewards, terminated, truncated):
    rewards = jnp.asarray(rewards, jnp.float32)[:, None]
    flag = lambda x: jnp.asarray(x, bool)[:, None]
    obs = jnp.zeros(rewards.shape + (1,))
    return carried.Window(obs, rewards, flag(terminated), flag(truncated), obs)


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


def test_settings_refuse_bad_values_naming_the_setting():
    with pytest.raises(InvalidSetting, match="window must be a positive integer"):
        APGSettings(window=0)
    with pytest.raises(InvalidSetting, match=r"b1 must be a number in \[0, 1\)"):
        APGSettings(b1=1.0)
    with pytest.raises(InvalidSetting, match="critic_minibatches"):
        SHACSettings(num_envs=3, window=5, critic_minibatches=4)
    with pytest.raises(InvalidSetting, match=r"lam must be a number in \[0, 1\]"):
        SHACSettings(lam=1.5)
    with pytest.raises(InvalidSetting, match="policy must be one of"):
        APGSettings(policy="paper")


def test_the_actors_heads_act_on_the_location_and_sample_around_it():
    """Evaluation acts on tanh of the location; "gaussian" (DiffRL's) samples with a learnt
    state-independent std, "normal_tanh" (Brax's) with the scale the network outputs."""
    obs = jnp.asarray([0.3, -0.2, 0.5, 1.0])
    for head in ("deterministic", "gaussian", "normal_tanh"):
        settings = APGSettings(hidden=(8,), policy=head, layer_norm=True, activation="elu", init_output_scale=1.0)
        actor = carried.actor_init(jax.random.key(0), 4, 2, settings)
        assert len(actor["mlp"]) == 2 and len(actor["norms"]) == 1
        assert actor["mlp"][-1][0].shape == (8, 4 if head == "normal_tanh" else 2)
        assert ("log_std" in actor) == (head == "gaussian")
        params = {"policy": actor, "normalizer": carried.normalizer_init(4)}
        act, sample = carried.policy_functions(settings)
        location = carried.network(actor, obs, "elu")[:2]
        np.testing.assert_allclose(act(params, obs), jnp.tanh(location), rtol=1e-6)
        samples = jax.vmap(lambda k: sample(params, obs, k))(jax.random.split(jax.random.key(1), 256))
        assert samples.shape == (256, 2) and np.all(np.abs(samples) <= 1)
        spread = float(jnp.max(jnp.std(samples, axis=0)))  # over the samples, per action
        assert (spread < 1e-6) if head == "deterministic" else (spread > 1e-3), (head, spread)


def test_the_learning_rate_schedules():
    linear = carried.learning_rate(APGSettings(lr_schedule="linear", lr_final=1e-5, decay_updates=10), 1e-3)
    assert (float(linear(0)), float(linear(5)), float(linear(10)), float(linear(20))) == pytest.approx(
        (1e-3, (1e-3 + 1e-5) / 2, 1e-5, 1e-5))
    exponential = carried.learning_rate(APGSettings(lr_schedule="exponential", lr_decay=0.5), 1e-3)
    assert float(exponential(3)) == pytest.approx(1e-3 / 8)
    assert carried.learning_rate(APGSettings(), 1e-3) == 1e-3
    with pytest.raises(InvalidSetting, match="decay_updates"):
        carried.learning_rate(APGSettings(lr_schedule="linear"), 1e-3)


# ---- the agents on the 1-pole cart pole ------------------------------------------------------------

AGENTS = {
    "apg": (apg, APGSettings(num_envs=32)),
    "shac": (shac, SHACSettings(num_envs=32)),
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
    return {name: jax.jit(module.make_update(cartpole, settings)) for name, (module, settings) in AGENTS.items()}


@pytest.mark.parametrize("name", AGENTS)
def test_update_multiplies_at_highest_precision(equations_cartpole, name):
    module, settings = AGENTS[name]
    state = jax.eval_shape(lambda key: module.init(equations_cartpole, settings, key), jax.random.key(0))
    jaxpr = jax.make_jaxpr(module.make_update(equations_cartpole, settings))(state, jax.random.key(1)).jaxpr
    precisions = dot_precisions(jaxpr)
    assert len(precisions) >= 6  # policy forward and backward at least
    assert all(p == HIGHEST for p in precisions), set(precisions)


@pytest.mark.parametrize("name", ["apg", pytest.param("shac", marks=pytest.mark.slow),
                                  pytest.param("ahac", marks=pytest.mark.slow)])
def test_the_loop_draws_restarts_apart_with_the_agents_own_numbers(equations_cartpole, name):
    """The loop (`carried_core`) draws each batch of fresh states in one program shared by every
    agent with that env and batch size (`restart_program`), outside the agent's init and update
    programs; the train states and metrics are those of the agent's own functions, bit for bit."""
    from chaosgym.agents import ahac, loop
    from chaosgym.agents.settings import AHACSettings
    from chaosgym.functional.compiling import jit

    module, settings = {**AGENTS, "ahac": (ahac, AHACSettings(num_envs=32))}[name]
    env, agent = equations_cartpole, module.carried(settings)
    core, step = loop.carried_core(agent, env, settings), module.make_update(env, settings)
    seed_key = jax.random.key(3)
    params, ours = core.init(seed_key)
    theirs = jit(lambda key: module.init(env, settings, key))(seed_key)
    own_update = jit(lambda state, index: step(state, jax.random.fold_in(seed_key, index)))
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    for index in range(2):
        params, ours, our_metrics = core.update(params, ours, seed_key, index)
        theirs, their_metrics = own_update(theirs, index)
        jax.tree.map(np.testing.assert_array_equal, (ours, our_metrics), (theirs, their_metrics))
    assert loop.restart_program(env, settings.num_envs)._jitted._cache_size() == 1


@pytest.mark.slow  # compiles a cart-pole update (1-4 min cold on a busy 2-core CPU)
@pytest.mark.parametrize("name", AGENTS)
def test_update_is_deterministic_and_resumes_exactly(cartpole, compiled, name):
    module, settings = AGENTS[name]
    update = compiled[name]
    state = _init(cartpole, name)
    state, _ = update(state, jax.random.key(1))
    # a checkpoint round trip (arrays and JSON, read against the init's shapes) continues exactly as the live state
    template = jax.eval_shape(lambda key: module.init(cartpole, settings, key), jax.random.key(0))
    restored, _ = checkpoints.decode(checkpoints.encode(state, {}), template)
    restored = jax.tree.map(jnp.asarray, restored)
    runs = [update(s, jax.random.key(2)) for s in (state, state, restored)]
    for other in runs[1:]:
        jax.tree.map(np.testing.assert_array_equal, runs[0], other)
    assert int(runs[0][0].env_steps) == 2 * settings.num_envs * settings.window
    # the carried states moved on: the next window starts where this one ended
    assert np.all(np.asarray(runs[0][0].env_state.steps) == 2 * settings.window)


def _init(cartpole, name):
    module, settings = AGENTS[name]
    return jax.jit(module.init, static_argnums=(0, 1))(cartpole, settings, jax.random.key(0))


def _train(cartpole, compiled, name, updates):
    module, settings = AGENTS[name]
    agent = module.carried(settings)
    evaluate = batched_evaluation(cartpole, agent.policy, agent.name)
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
