"""AHAC: its critic targets and horizon rule against hand computations, determinism, a checkpoint
round trip through the training loop, and that it learns the 1-pole cart pole."""

import dataclasses
from typing import NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym.agents import ahac, carried, checkpoints, shac
from chaosgym.agents.api import train_config
from chaosgym.agents.config import for_task
from chaosgym.agents.loop import load_checkpoint
from chaosgym.agents.run import Run
from chaosgym.agents.settings import AHACSettings
from chaosgym.validation import InvalidSetting
from chaosgym.evaluation import batched_evaluation, held_out_keys
from jaxpr_checks import HIGHEST, dot_precisions

# ---- pure pieces (fast) ---------------------------------------------------------------------------

# one env, 7 steps: a termination at step 1, a horizon cut at step 3, a time-limit cut at step 4,
# then the window's end; the pieces are steps [0, 1], [2, 3], [4], [5, 6]
REWARDS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
TERMINATED, TRUNCATED, CUTS = [0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0]
NEXT_VALUES = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0])  # V(s_{t+1})
ENDS = [1, 1, 3, 3, 4, 6, 6]  # the last step of the piece each step belongs to
G = 0.9


def _window():
    rewards = jnp.asarray(REWARDS, jnp.float32)[:, None]
    flag = lambda x: jnp.asarray(x, bool)[:, None]
    obs = jnp.zeros(rewards.shape + (1,))
    return carried.Window(obs, rewards, flag(TERMINATED), flag(TRUNCATED), obs), flag(CUTS)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_critic_targets_close_pieces_at_horizon_cuts(lam):
    window, cuts = _window()
    b = np.where(TERMINATED, 0.0, NEXT_VALUES)
    targets = np.asarray(ahac.critic_targets(window, cuts, jnp.asarray(b)[:, None], G, lam))[:, 0]

    def n_step(t, n):  # the n-step return from t, bootstrapped at its last step
        return sum(G**i * REWARDS[t + i] for i in range(n)) + G**n * b[t + n - 1]

    for t in range(len(REWARDS)):
        horizon = ENDS[t] - t + 1
        returns = [n_step(t, n) for n in range(1, horizon + 1)]
        expected = sum((1 - lam) * lam**(n - 1) * returns[n - 1] for n in range(1, horizon)) \
            + lam**(horizon - 1) * returns[-1]
        assert targets[t] == pytest.approx(expected, rel=1e-5), t
    # the actor's objective closes the same pieces, each with gamma^(k+1) V(s_{k+1}) at its end k
    expected = (1 + G * 2) + (3 + G * 4 + G**2 * 40) + (5 + G * 50) + (6 + G * 7 + G**2 * 70)
    objective = ahac.actor_objective(ahac.with_cuts(window, cuts), jnp.asarray(b)[:, None], G)
    assert float(objective) == pytest.approx(expected, rel=1e-6)


def _published_horizon(horizon, stiffness_windows, config):
    """The horizon rule as the published AHAC (DiffRL's ahac.py) runs it, transliterated: a dual
    vector as long as the rollout, refilled with its first entry at each new horizon."""
    C, lr = config.contact_threshold, config.dual_learning_rate
    dual = np.zeros(config.min_window)
    history = []
    for stiffnesses in stiffness_windows:
        dual = np.repeat(dual[0], round(horizon))  # init_buffers
        cfs = stiffnesses[:round(horizon)]  # the rollout is round(H) steps
        dual = dual - lr * (C - cfs.mean(-1))
        horizon = float(np.clip(horizon + lr * dual.sum(), config.min_window, config.window))
        history.append((horizon, dual[0]))
    return history


def test_the_horizon_follows_the_published_dual_rule():
    config = AHACSettings(num_envs=3, window=12, min_window=3, contact_threshold=1.0, dual_learning_rate=0.3,
                          critic_minibatches=1)
    rng = np.random.default_rng(0)
    # stiff for a while (the horizon grows to the window), then soft: the dual unwinds, and the
    # horizon falls back to min_window
    windows = [rng.uniform(1.5, 4.0, (12, 3)) for _ in range(5)] + [rng.uniform(0.0, 0.2, (12, 3)) for _ in range(16)]
    expected = _published_horizon(float(config.min_window), windows, config)
    horizon, dual = jnp.float32(config.min_window), jnp.float32(0.0)
    got = []
    for stiffnesses in windows:
        horizon, dual = ahac.adapt_horizon(horizon, dual, jnp.asarray(stiffnesses, jnp.float32), config)
        got.append((float(horizon), float(dual)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    horizons = [h for h, _ in expected]
    assert max(horizons) == config.window and horizons[-1] == config.min_window  # both clips are reached


def test_stiffness_is_the_constraint_force_per_unit_of_acceleration():
    data = type("Data", (), {})()
    data.qfrc_constraint = jnp.array([[3.0, -8.0, 0.0], [0.0, 0.0, 0.0]])
    data.qacc = jnp.array([[0.5, -4.0, 7.0], [1.0, 2.0, 3.0]])  # |qacc| below 1 counts as 1
    np.testing.assert_allclose(ahac.stiffness(data), [np.hypot(3.0, 2.0), 0.0], rtol=1e-6)


def test_settings_refuse_bad_values_naming_the_setting():
    with pytest.raises(InvalidSetting, match="min_window \\(9\\) must not exceed window \\(8\\)"):
        AHACSettings(window=8, min_window=9)
    with pytest.raises(InvalidSetting, match="critic_iterations must be a positive integer, or None"):
        AHACSettings(critic_iterations=0)
    with pytest.raises(InvalidSetting, match="critic_minibatches"):
        AHACSettings(num_envs=3, window=5, min_window=2, critic_minibatches=4)
    with pytest.raises(InvalidSetting, match="contact_threshold must be a finite number >= 0"):
        AHACSettings(contact_threshold=-1.0)
    # the cart pole's preset: apg's and shac's, the critic at the actor's rate, the published maximum horizon
    assert for_task("ChaosCartPole-v0", "ahac").settings == AHACSettings(
        num_envs=16, window=64, learning_rate=3e-3, critic_learning_rate=3e-3, hidden=(100, 100))


# ---- the agent on the 1-pole cart pole ------------------------------------------------------------

# the paper's equations instead of mjx.step: the same system, compiled in seconds
TINY = AHACSettings(num_envs=2, window=4, min_window=2, hidden=(8,), critic_hidden=(8,), critic_minibatches=2)


@pytest.fixture(scope="module")
def equations_cartpole():
    return chaosgym.make("ChaosCartPole-v0", physics="equations")


def test_update_is_deterministic_cuts_its_pieces_and_resumes_exactly(equations_cartpole):
    update = jax.jit(ahac.make_update(equations_cartpole, TINY))
    state = jax.jit(ahac.init, static_argnums=(0, 1))(equations_cartpole, TINY, jax.random.key(0))
    state, metrics = update(state, jax.random.key(1))
    assert int(metrics["horizon"]) == TINY.min_window and int(metrics["horizon_cuts"]) == 2 * TINY.num_envs
    # a checkpoint round trip (arrays and JSON, read against the init's shapes) continues exactly as the live state
    template = jax.eval_shape(lambda key: ahac.init(equations_cartpole, TINY, key), jax.random.key(0))
    restored = jax.tree.map(jnp.asarray, checkpoints.decode(checkpoints.encode(state, {}), template)[0])
    runs = [update(s, jax.random.key(2)) for s in (state, state, restored)]
    for other in runs[1:]:
        jax.tree.map(np.testing.assert_array_equal, runs[0], other)
    final = runs[0][0]
    assert int(final.env_steps) == 2 * TINY.steps_per_update
    assert np.all(np.asarray(final.env_state.steps) == 2 * TINY.window)
    # no contacts on the cart pole: the dual falls by beta C each update, the horizon stays at its minimum
    assert float(final.dual) == pytest.approx(-2 * TINY.dual_learning_rate * TINY.contact_threshold, rel=1e-6)
    assert float(final.horizon) == TINY.min_window
    assert 1 <= int(runs[0][1]["critic_epochs"]) <= shac.CRITIC_MAX_ITERATIONS


def test_update_multiplies_at_highest_precision(equations_cartpole):
    state = jax.eval_shape(lambda key: ahac.init(equations_cartpole, TINY, key), jax.random.key(0))
    jaxpr = jax.make_jaxpr(ahac.make_update(equations_cartpole, TINY))(state, jax.random.key(1)).jaxpr
    precisions = dot_precisions(jaxpr)
    assert len(precisions) >= 6  # policy and critics, forward and backward
    assert all(p == HIGHEST for p in precisions), set(precisions)


class Line(NamedTuple):
    """The fields of an MJX state that `ahac.unroll_with_cuts` reads, for a one-dimensional system."""

    qpos: jax.Array
    qacc: jax.Array
    qfrc_constraint: jax.Array


class LineEnv:
    """x' = x + a / 10, rewarded x': a system whose gradients compile in a second."""

    def step(self, state: chaosgym.State, action: jax.Array) -> chaosgym.State:
        x = state.data.qpos + 0.1 * action
        return state.replace(data=state.data._replace(qpos=x), obs=x, reward=x[0], steps=state.steps + 1)


def test_a_horizon_cut_stops_the_gradient_of_the_state():
    params = {"policy": carried.network_init(jax.random.key(0), (1, 8, 1), 1.0), "normalizer": carried.normalizer_init(1)}
    sample = carried.policy_functions(TINY)[1]  # deterministic: the actions need no noise
    n, zeros, false = 2, jnp.zeros((2, 1)), jnp.zeros(2, bool)
    start = chaosgym.State(Line(zeros, zeros, zeros), zeros, jnp.zeros(n), false, false, jnp.zeros(n, jnp.int32), {})

    def rewards(x, piece, steps):  # the rewards of the chosen steps, from these starting positions
        states = start.replace(data=start.data._replace(qpos=x), obs=x)
        _, window, cuts, _ = ahac.unroll_with_cuts(LineEnv(), sample, params, states, start, 4, piece,
                                                   jax.random.key(0))
        return jnp.sum(window.rewards * steps[:, None]), cuts

    grad = jax.jit(jax.grad(rewards, has_aux=True))
    x = jnp.array([[0.3], [-0.5]])
    early, late = jnp.array([1.0, 1.0, 0.0, 0.0]), jnp.array([0.0, 0.0, 1.0, 1.0])
    assert np.all(np.asarray(grad(x, 4, late)[0]) != 0)  # without a cut the start reaches steps 2 and 3,
    assert np.all(np.asarray(grad(x, 2, early)[0]) != 0)  # with one, the steps of its piece
    behind_cut, cuts = grad(x, 2, late)
    np.testing.assert_array_equal(behind_cut, 0.0)  # but not the steps after the cut at step 1
    np.testing.assert_array_equal(np.asarray(cuts), [[False] * n, [True] * n, [False] * n, [True] * n])


def test_a_run_resumed_from_its_checkpoint_gives_the_uninterrupted_one(tmp_path):
    config = for_task("ChaosCartPole-v0", "ahac", updates=4, num_envs=2, window=4, min_window=4, hidden=(8,),
                      critic_hidden=(8,), eval_every=2, checkpoint_every=2, eval_episodes=2,
                      task_kwargs={"physics": "equations"})
    train_config(config, tmp_path / "whole", progress=False)
    train_config(dataclasses.replace(config, updates=2), tmp_path / "split", progress=False)
    train_config(config, tmp_path / "split", resume=True, progress=False)
    whole, split = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    # the whole train state: policy, critics, optimisers, carried envs, horizon and dual
    for a, b in zip(jax.tree.leaves(whole["opt_state"]), jax.tree.leaves(split["opt_state"])):
        np.testing.assert_array_equal(a, b)
    assert whole["env_steps"] == split["env_steps"] == 4 * 2 * 4
    # its own diagnostics reach metrics.csv, resumed or not
    for folder in ("whole", "split"):
        rows = Run(tmp_path / folder).metrics()
        assert [int(r["update"]) for r in rows] == [0, 1, 2, 3, 4]
        assert all(r["horizon"] and r["stiffness"] and r["value_loss"] for r in rows[1:])


@pytest.mark.slow  # compiles an MJX cart-pole update (1-4 min cold on a busy 2-core CPU)
def test_ahac_improves_the_held_out_return(cartpole):
    config = AHACSettings(num_envs=32, window=32, learning_rate=2e-3, critic_learning_rate=2e-3, hidden=(64, 64))
    update = jax.jit(ahac.make_update(cartpole, config))
    agent = ahac.carried(config)
    evaluate = batched_evaluation(cartpole, agent.policy, agent.name)
    keys = held_out_keys(1_000_000, 16)
    state = jax.jit(ahac.init, static_argnums=(0, 1))(cartpole, config, jax.random.key(0))
    before = float(evaluate(ahac.inference_params(state), keys)[0])
    history = []
    # 80 updates = 81,920 env steps; measured: -84.8 -> +81.4 (+38.5 after 60, where shac reaches ~+84)
    for i in range(80):
        state, metrics = update(state, jax.random.fold_in(jax.random.key(1), i))
        history.append(jax.device_get(metrics))
    after = float(evaluate(ahac.inference_params(state), keys)[0])
    assert after > before + 100, (before, after)
    assert all(m["skipped_updates"] == 0 for m in history)
    assert all(m["horizon"] == config.min_window for m in history)  # no contacts: the horizon stays short


# ---- the contact threshold in MJX's units (chaosgym.presets.ANT_CONTACT_THRESHOLD) -------------------

def _horizons(settings: AHACSettings, stiffness: float, updates: int) -> list[float]:
    """H over `updates` windows whose every step has this mean stiffness."""
    horizon, dual, out = jnp.asarray(float(settings.min_window)), jnp.asarray(0.0), []
    window = jnp.full((settings.window, 4), stiffness)
    for _ in range(updates):
        horizon, dual = ahac.adapt_horizon(horizon, dual, window, settings)
        out.append(float(horizon))
    return out


def test_on_the_ants_measured_stiffness_the_calibrated_horizon_adapts_within_8_to_64_and_the_published_one_never():
    """The Ant's stiffness under AHAC's initial policy (docs/data/ahac_stiffness.json: median 29,
    10-90 % from 23 to 37): with the Ant preset's C and beta, a policy whose contacts run the
    10-90 % width stiffer than C carries H from 8 to 64 within 300 updates (a 4.1 M-step run has 500),
    one that softens leaves it at 8; with the published C = 500 (dflex's units) H never leaves 8 on any
    of those stiffnesses."""
    import json
    from pathlib import Path

    from chaosgym.presets import ANT

    measured = json.loads((Path(__file__).resolve().parents[1] / "docs/data/ahac_stiffness.json").read_text())
    initial = measured["policies"]["ahac_initial"]["per_step_mean"]
    calibrated = for_task("ChaosAnt-v0", "ahac", env_steps=4_096_000).settings
    assert calibrated.contact_threshold == ANT.agents["ahac"].settings["contact_threshold"]
    assert abs(calibrated.contact_threshold - initial["median"]) < 2
    width = initial["p90"] - initial["p10"]
    stiffer = _horizons(calibrated, calibrated.contact_threshold + width, 300)
    assert stiffer[-1] == calibrated.window and stiffer[0] < 9  # it grows, from 8 to the window's 64
    assert 8 < stiffer[len(stiffer) // 2] < 64  # through the range, not in one jump
    assert _horizons(calibrated, calibrated.contact_threshold - width, 300)[-1] == 8
    published = dataclasses.replace(calibrated, contact_threshold=500.0, dual_learning_rate=5e-4)
    uniform = measured["policies"]["uniform"]["per_step_mean"]["p90"]  # the stiffest measured
    assert set(_horizons(published, uniform, 500)) == {8.0}


@pytest.mark.slow  # compiles an AHAC update on the Ant
def test_on_the_ant_the_horizon_moves_under_training(tmp_path):
    """A few AHAC updates on the Ant itself, tiny networks: with C below the Ant's stiffness the
    horizon grows from 8; with the published C = 500 it stays at 8."""
    small = {"num_envs": 4, "window": 16, "hidden": (8,), "critic_hidden": (8,), "critic_iterations": 1,
             "dual_learning_rate": 2e-2}
    moved = {}
    for threshold in (5.0, 500.0):
        config = for_task("ChaosAnt-v0", "ahac", updates=4, eval_every=4, checkpoint_every=4, eval_episodes=1,
                          contact_threshold=threshold, **small)
        train_config(config, tmp_path / f"c{threshold:g}", progress=False)
        rows = Run(tmp_path / f"c{threshold:g}").metrics()
        moved[threshold] = [float(r["next_horizon"]) for r in rows if r["next_horizon"]]
    assert moved[5.0][-1] > 8 and moved[5.0] == sorted(moved[5.0])
    assert set(moved[500.0]) == {8.0}
