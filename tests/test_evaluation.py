"""The evaluation protocol: seeded initial states, whole episodes, return and task objective."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym.evaluation import EVAL_EPISODES, EVAL_SEED, evaluate

# evaluate() runs on MJX, the physics every agent trains on; the hand-made reference must too
# (MuJoCo's C engine, the single env's default backend, agrees only to float32 rounding)
MJX = {"backend": "mjx"}


def zero_policy(obs):
    return np.zeros(1, np.float32)


def test_reports_returns_and_objectives_of_whole_episodes():
    result = evaluate(zero_policy, "ChaosCartPole-v0", num_episodes=3, seed=5)
    assert set(result) == {"mean_return", "std_return", "mean_objective", "std_objective", "mean_length",
                           "failed_episodes", "returns", "objectives", "lengths"}
    assert result["failed_episodes"] == 0
    assert result["lengths"] == [100, 100, 100]
    assert result["mean_return"] == pytest.approx(np.mean(result["returns"]))
    assert result["std_objective"] == pytest.approx(np.std(result["objectives"]))
    assert evaluate(zero_policy, "ChaosCartPole-v0", num_episodes=3, seed=5) == result


def test_episode_i_starts_from_reset_seed_plus_i_and_scores_by_hand():
    seen = []
    result = evaluate(lambda obs: seen.append(obs.copy()) or zero_policy(obs), "ChaosCartPole-v0",
                      {"num_poles": 2}, num_episodes=2, seed=11)
    env = gymnasium.make("ChaosCartPole-v0", num_poles=2, **MJX)
    for episode in range(2):
        obs, _ = env.reset(seed=11 + episode)
        np.testing.assert_array_equal(seen[100 * episode], obs)  # 100 steps per episode
    assert obs.shape == (6,)  # the task options reach the environment: x, x', (angle, rate) per pole
    rewards, done = [], False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(zero_policy(obs))
        rewards.append(reward)
        done = terminated or truncated
    assert result["returns"][1] == pytest.approx(sum(rewards))
    # the cart pole reports the final-state loss 1 - mean cos(angle); obs[2::2] are the angles
    assert result["objectives"][1] == pytest.approx(1.0 - np.mean(np.cos(obs[2::2])), abs=1e-6)


def test_default_objective_is_the_negative_return():
    result = evaluate(lambda obs: np.full(1, 0.3), "ChaosDoublePendulum-v0", {"num_links": 1},
                      num_episodes=1, seed=0)
    assert result["objectives"][0] == pytest.approx(-result["returns"][0], rel=1e-5)


def test_jax_policies_are_accepted():
    weights = jnp.full((4, 1), 0.1)
    policy = jax.jit(lambda obs: jnp.tanh(obs @ weights))
    result = evaluate(policy, "ChaosCartPole-v0", num_episodes=2, seed=0)
    assert np.isfinite(result["mean_return"])


def test_gradient_agents_batched_evaluation_scores_the_same_episodes():
    """Training evaluates the same held-out episodes, batched."""
    from chaosgym.agents import loop
    from chaosgym.agents.config import TrainConfig, for_task

    config = for_task("ChaosCartPole-v0", "full", eval_episodes=4)
    assert (config.eval_seed, TrainConfig().eval_episodes) == (EVAL_SEED, EVAL_EPISODES)
    core = loop.core_of(config)
    params, _ = core.init(jax.random.key(1))
    batched = loop.evaluate_params(config, params, core)
    ours = evaluate(loop.numpy_policy(config, params, core), config.task, num_episodes=4, seed=config.eval_seed)
    assert ours["mean_return"] == pytest.approx(batched["eval_score"], abs=1e-3)
    assert ours["mean_objective"] == pytest.approx(batched["eval_objective"], abs=1e-4)


def test_a_non_finite_action_fails_the_episode():
    result = evaluate(lambda obs: np.full(1, np.nan), "ChaosCartPole-v0", num_episodes=2, seed=0)
    assert result["mean_return"] == -np.inf and result["failed_episodes"] == 2
    assert np.isnan(result["mean_objective"])


@pytest.mark.parametrize("count", [0, -3, 2.5, True, "4"])
def test_the_number_of_episodes_must_be_a_positive_integer(count):
    with pytest.raises(ValueError, match="num_episodes must be a positive integer"):
        evaluate(zero_policy, "ChaosCartPole-v0", num_episodes=count)


def nan_right_of_centre(params, obs):
    """Fails (a NaN action) once the cart is right of the centre."""
    return jnp.where(obs[0] > 0, jnp.nan, 0.0) * jnp.ones(1)


def test_batched_evaluation_fails_the_episodes_evaluate_fails():
    """A failed episode scores -inf (objective NaN) in both, episode by episode."""
    from chaosgym.evaluation import batched_evaluation, held_out_keys

    count, seed = 4, 3
    result = evaluate(lambda obs: np.asarray(nan_right_of_centre(None, obs)), "ChaosCartPole-v0",
                      num_episodes=count, seed=seed)
    assert 0 < result["failed_episodes"] < count, result["returns"]  # the test needs both kinds
    one = batched_evaluation(chaosgym.make("ChaosCartPole-v0"), nan_right_of_centre, "nan_right_of_centre")
    keys = held_out_keys(seed, count)
    for episode in range(count):
        batched_return, batched_objective = map(float, one(None, keys[episode:episode + 1]))
        assert batched_return == pytest.approx(result["returns"][episode], abs=1e-3)
        assert np.isnan(batched_objective) == np.isnan(result["objectives"][episode])


def rollout_scores(env, policy, params, keys):
    """The batched evaluation as one program: one `rollout` scan over the episode length."""
    from chaosgym.functional.rollout import rollout

    states = jax.vmap(env.reset)(keys)
    _, trajectory = rollout(env, policy, params, states, env.episode_length)
    objective = env.task.objective(env.task.reported_objective)
    returns = jnp.where(trajectory.failed, -jnp.inf, trajectory.rewards.sum(axis=0))
    objectives = jnp.where(trajectory.failed, jnp.nan,
                           jax.vmap(objective, in_axes=(1, 0))(trajectory.rewards, trajectory.final_state.data))
    return jnp.mean(returns), jnp.mean(objectives)


@pytest.mark.parametrize("agent", ["full", "shac"])
def test_batched_evaluation_is_one_rollout_bit_for_bit(agent):
    """Stepped from Python through the env's shared programs, the evaluation gives the numbers of one
    jitted rollout over the episode length, to the last bit (a failing episode included), and a
    second policy on the same env compiles no env program of its own."""
    from chaosgym.agents import loop
    from chaosgym.agents.config import for_task
    from chaosgym.evaluation import batched_evaluation, episode_programs, held_out_keys
    from chaosgym.functional.compiling import jit

    config = for_task("ChaosCartPole-v0", agent, eval_episodes=3)
    core, env = loop.core_of(config), loop.make_env(config)
    params, _ = core.init(jax.random.key(2))
    keys = held_out_keys(config.eval_seed, 3)
    ours = batched_evaluation(env, core.apply, core.name)(params, keys)
    theirs = jit(rollout_scores, static_argnums=(0, 1))(env, core.apply, params, keys)
    assert [float(x) for x in ours] == [float(x) for x in theirs]
    failing = batched_evaluation(env, nan_right_of_centre, "nan_right_of_centre")(None, keys)
    expected = jit(rollout_scores, static_argnums=(0, 1))(env, nan_right_of_centre, None, keys)
    assert float(failing[0]) == float(expected[0]) == -np.inf
    programs = episode_programs(env, 3)  # the two policies' episodes went through one compiled step
    assert programs.advance._jitted._cache_size() == programs.start._jitted._cache_size() == 1
