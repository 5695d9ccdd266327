"""Brax's face of chaosgym: `chaosgym.brax.BraxEnv` is the functional env bit for bit, through
Brax's training wrappers too, and Brax's own PPO and APG train on it as chaosgym agents
(`chaosgym.agents.brax_agents`), with weights-only checkpoints and the resume they allow."""

import csv
import dataclasses
import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("brax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from brax.envs.wrappers import training  # noqa: E402

from chaosgym.agents import brax_agents  # noqa: E402
from chaosgym.agents import run as run_module  # noqa: E402
from chaosgym.agents.brax_config import BRAX_SETTINGS, BraxAPGConfig, BraxPPOConfig  # noqa: E402
from chaosgym.agents.run import CheckpointError, RunFolder  # noqa: E402
from chaosgym.brax import BraxEnv  # noqa: E402
from chaosgym.evaluation import evaluate  # noqa: E402
from chaosgym.validation import InvalidSetting  # noqa: E402

# the 1-pole cart pole from its closed-form equations: compiles in seconds
EQUATIONS = {"physics": "equations"}
TASK = "ChaosCartPole-v0"
# PPO and APG small enough to train in seconds: 1,280 env steps per training step / update x 10
TINY_PPO = BraxPPOConfig(num_envs=32, batch_size=32, unroll_length=10, num_minibatches=4, num_updates_per_batch=2,
                         policy_hidden_layer_sizes=(32, 32), value_hidden_layer_sizes=(32, 32))
TINY_APG = BraxAPGConfig(num_envs=8, horizon_length=16, hidden_layer_sizes=(32, 32))


@pytest.fixture(scope="module")
def cartpole() -> BraxEnv:
    return BraxEnv(TASK, **EQUATIONS)


def assert_same(ours, theirs):
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def assert_brax_state_is(brax_state, state):
    """`brax_state` maps chaosgym's `state` as `chaosgym.brax` says, bit for bit."""
    assert_same(brax_state.pipeline_state, state)
    np.testing.assert_array_equal(brax_state.obs, state.obs)
    np.testing.assert_array_equal(brax_state.reward, state.reward)
    np.testing.assert_array_equal(brax_state.done, state.terminated.astype(np.float32))
    assert brax_state.metrics.keys() == state.info.keys()
    for name, value in state.info.items():
        np.testing.assert_array_equal(brax_state.metrics[name], np.asarray(value, np.float32))


# ---- the adapter --------------------------------------------------------------------------------

def test_brax_env_is_a_brax_env_with_the_task_sizes(cartpole):
    from brax import envs

    assert isinstance(cartpole, envs.Env) and not isinstance(cartpole, envs.PipelineEnv)
    assert (cartpole.observation_size, cartpole.action_size, cartpole.backend) == (4, 1, "mjx")
    assert cartpole.episode_length == cartpole.env.episode_length == 100
    assert BraxEnv(TASK, episode_length=7, **EQUATIONS).episode_length == 7


def test_reset_and_step_are_the_chaosgym_env_bit_for_bit_single_and_vmapped(cartpole):
    env, steps = cartpole.env, 5
    actions = jax.random.uniform(jax.random.PRNGKey(4), (steps, 3, 1), minval=-1.5, maxval=1.5)  # clipped alike
    keys = jax.random.split(jax.random.PRNGKey(3), 3)

    def unroll(reset, step, keys, actions):
        first = reset(keys)
        return first, jax.lax.scan(lambda s, a: (step(s, a),) * 2, first, actions)[1]

    @jax.jit
    def both(keys, actions):
        single = [unroll(e.reset, e.step, keys[0], actions[:, 0]) for e in (cartpole, env)]
        batched = [unroll(jax.vmap(e.reset), jax.vmap(e.step), keys, actions) for e in (cartpole, env)]
        return single, batched

    for (ours_first, ours), (first, states) in both(keys, actions):
        assert_brax_state_is(ours_first, first)
        assert_brax_state_is(ours, states)
    assert np.all(np.asarray(states.steps)[-1] == steps) and ours.info == {}


def test_default_mjx_physics_steps_bit_for_bit():
    ours = BraxEnv(TASK)  # MJX's own step
    key, action = jax.random.PRNGKey(0), jnp.array([0.3])
    first, state = jax.jit(lambda k: (lambda s: (s, ours.env.step(s, action)))(ours.env.reset(k)))(key)
    brax_first, brax_state = jax.jit(lambda k: (lambda s: (s, ours.step(s, action)))(ours.reset(k)))(key)
    assert_brax_state_is(brax_first, first)
    assert_brax_state_is(brax_state, state)


def test_brax_training_wrappers_end_the_episode_at_the_task_time_limit_and_restart_it(cartpole):
    env, length, n = cartpole.env, cartpole.episode_length, 3
    wrapped = training.wrap(cartpole, episode_length=length)
    keys = jax.random.split(jax.random.PRNGKey(5), n)
    actions = jax.random.uniform(jax.random.PRNGKey(6), (length + 2, n, 1), minval=-0.2, maxval=0.2)

    @jax.jit
    def run(keys, actions):
        ours = jax.lax.scan(lambda s, a: (wrapped.step(s, a),) * 2, wrapped.reset(keys), actions)[1]
        first = jax.vmap(env.reset)(keys)
        step = jax.vmap(env.step)
        episode = jax.lax.scan(lambda s, a: (step(s, a),) * 2, first, actions[:length])[1]
        restarted = jax.lax.scan(lambda s, a: (step(s, a),) * 2, first, actions[length:])[1]
        return ours, first, episode, restarted

    ours, first, episode, restarted = run(keys, actions)
    at = lambda tree, t: jax.tree.map(lambda x: x[t], tree)  # noqa: E731
    for t in range(length - 1):  # inside the episode: chaosgym's steps, not done
        assert_brax_state_is(at(ours, t), at(episode, t))
    end = at(ours, length - 1)
    np.testing.assert_array_equal(end.done, 1.0)
    np.testing.assert_array_equal(end.info["truncation"], 1.0)  # the time limit, not a termination
    np.testing.assert_array_equal(end.info["steps"], length)
    np.testing.assert_array_equal(end.reward, at(episode, length - 1).reward)
    # AutoResetWrapper: the first state again, whole (chaosgym's step counter included)
    assert_same(end.pipeline_state, first)
    np.testing.assert_array_equal(end.obs, first.obs)
    np.testing.assert_allclose(end.info["episode_metrics"]["sum_reward"], episode.reward.sum(axis=0), rtol=1e-5)
    for t in range(2):  # the next episode goes on from there
        after = at(ours, length + t)
        assert_brax_state_is(after, at(restarted, t))
        np.testing.assert_array_equal(after.info["steps"], t + 1)
        np.testing.assert_array_equal(after.done, 0.0)


def test_a_terminated_episode_is_done_without_truncation_and_restarts():
    # 1e30 N per unit action: the state overflows float32 on the second step, which terminates
    blowing_up = BraxEnv(TASK, force_scale=1e30, **EQUATIONS)
    wrapped = training.wrap(blowing_up, episode_length=blowing_up.episode_length)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    states = jax.jit(lambda k: jax.lax.scan(lambda s, _: (wrapped.step(s, jnp.ones((1, 1))),) * 2,
                                            wrapped.reset(k), None, length=3)[1])(keys)
    np.testing.assert_array_equal(states.done[:, 0], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(states.info["truncation"][:, 0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(states.metrics["nonfinite_state"][:, 0], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(states.obs[1], states.info["first_obs"][1])  # restarted at once
    np.testing.assert_array_equal(states.info["steps"][:, 0], [1, 2, 1])


# about 60 s cold on a 2-core CPU, 20 s warm
def test_brax_ppo_trains_on_it_unchanged_with_brax_own_evaluation(cartpole):
    import functools

    from brax.training.agents.ppo import networks, train as ppo

    factory = functools.partial(networks.make_ppo_networks, policy_hidden_layer_sizes=(32, 32),
                                value_hidden_layer_sizes=(32, 32))
    _, _, metrics = ppo.train(environment=cartpole, episode_length=cartpole.episode_length, num_timesteps=2560,
                              num_evals=2, num_eval_envs=4, num_envs=32, batch_size=32, unroll_length=10,
                              num_minibatches=4, num_updates_per_batch=2, network_factory=factory, seed=0)
    assert metrics["eval/avg_episode_length"] == cartpole.episode_length
    # the task's metrics, summed over each episode
    assert all(np.isfinite(metrics[f"eval/episode_{name}"])
               for name in ("reward", "upright", "cart_position", "force", "nonfinite_state"))
    # the cart pole's reward is its `upright` term: Brax's evaluator sums both alike
    assert metrics["eval/episode_reward"] == pytest.approx(metrics["eval/episode_upright"], rel=1e-5)


def test_without_brax_the_import_error_says_how_to_install_it():
    code = """
        import sys
        sys.modules["brax"] = None  # as if Brax were not installed
        try:
            import chaosgym.brax
        except ModuleNotFoundError as error:
            print(error)
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.strip() == "chaosgym.brax needs Brax: pip install chaosgym[brax]", result.stderr[-2000:]


# ---- the settings ---------------------------------------------------------------------------------

def test_settings_import_neither_jax_nor_brax_and_round_trip_through_json():
    code = """
        import sys
        from chaosgym.agents.brax_config import BraxAPGConfig, BraxPPOConfig
        print(sorted(m for m in ("jax", "brax", "mujoco") if m in sys.modules))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]
    for settings in (BraxPPOConfig(), BraxAPGConfig(), TINY_PPO, TINY_APG):
        text = json.dumps(settings.to_json())
        assert type(settings).from_json(json.loads(text)) == settings
    with pytest.raises(ValueError, match="no setting"):
        BraxPPOConfig.from_json({"num_env": 4})


def test_ppo_defaults_are_the_brax_notebook_ant_preset():
    ppo = BraxPPOConfig()
    assert (ppo.num_envs, ppo.batch_size, ppo.unroll_length, ppo.num_minibatches, ppo.num_updates_per_batch,
            ppo.discounting, ppo.learning_rate, ppo.entropy_cost, ppo.reward_scaling, ppo.normalize_observations,
            ppo.action_repeat) == (4096, 2048, 5, 32, 4, 0.97, 3e-4, 1e-2, 10.0, True, 1)
    apg = BraxAPGConfig()
    assert (apg.num_envs, apg.horizon_length, apg.learning_rate, apg.adam_b, apg.schedule_decay,
            apg.max_gradient_norm, apg.normalize_observations) == (64, 32, 1e-4, (0.7, 0.95), 0.997, 1e9, True)


@pytest.mark.parametrize("cls, changes, field", [
    (BraxPPOConfig, {"num_envs": 0}, "num_envs"),
    (BraxPPOConfig, {"num_envs": 3}, "num_envs"),  # must divide batch_size x num_minibatches
    (BraxPPOConfig, {"learning_rate": -1.0}, "learning_rate"),
    (BraxPPOConfig, {"discounting": 1.5}, "discounting"),
    (BraxPPOConfig, {"policy_hidden_layer_sizes": ()}, "policy_hidden_layer_sizes"),
    (BraxPPOConfig, {"normalize_observations": 1}, "normalize_observations"),
    (BraxPPOConfig, {"num_evals": 1}, "num_evals"),
    (BraxAPGConfig, {"horizon_length": 2.5}, "horizon_length"),
    (BraxAPGConfig, {"adam_b": (0.7, 1.0)}, "adam_b"),
    (BraxAPGConfig, {"schedule_decay": 0.0}, "schedule_decay"),
    (BraxAPGConfig, {"horizon_length": 5, "action_repeat": 2}, "horizon_length"),
])
def test_a_bad_setting_is_refused_by_name(cls, changes, field):
    with pytest.raises(InvalidSetting) as error:
        cls(**changes)
    assert error.value.setting == field


def test_a_budget_below_one_update_per_interval_is_refused():
    with pytest.raises(ValueError, match="env_steps must be an integer >= 12,800"):
        brax_agents.BraxRun(TASK, EQUATIONS, "brax-ppo", 0, 12_799, TINY_PPO, 4, 1_000_000)
    with pytest.raises(ValueError, match="takes BraxAPGConfig"):
        brax_agents.BraxRun(TASK, EQUATIONS, "brax-apg", 0, 12_800, TINY_PPO, 4, 1_000_000)


# ---- checkpoints -------------------------------------------------------------------------------------

def random_params(template, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape).astype(leaf.dtype), template)


@pytest.mark.parametrize("agent, settings", [("brax-ppo", TINY_PPO), ("brax-apg", TINY_APG)])
def test_checkpoint_is_arrays_and_json_read_back_without_pickle(cartpole, agent, settings):
    run = brax_agents.BraxRun(TASK, EQUATIONS, agent, 0, 12_800, settings, 4, 1_000_000)
    _, template = brax_agents.make_policy_fn(run, cartpole)
    params = random_params(template)
    progress = {"env_steps": 1280, "update": 1, "wall_time": 1.5, "compile_time": 2.0, "eval_score": -3.0,
                "eval_objective": 0.5}
    payload = brax_agents.encode_checkpoint(run, params, progress)
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)
        header = json.loads(str(npz[brax_agents.HEADER]))
    assert header["progress"] == progress and header["identity"]["settings"] == settings.to_json()
    restored, restored_progress = brax_agents.decode_checkpoint(payload, run, template)
    assert_same(restored, params)
    assert restored_progress == progress
    other = dataclasses.replace(run, seed=1)
    with pytest.raises(CheckpointError, match="seed"):
        brax_agents.decode_checkpoint(payload, other, template)
    smaller = dataclasses.replace(run, settings=dataclasses.replace(
        settings, **{("policy_hidden_layer_sizes" if agent == "brax-ppo" else "hidden_layer_sizes"): (16, 16)}))
    with pytest.raises(CheckpointError):
        brax_agents.decode_checkpoint(payload, smaller, brax_agents.make_policy_fn(smaller, cartpole)[1])


def test_a_pickled_checkpoint_is_refused(cartpole):
    run = brax_agents.BraxRun(TASK, EQUATIONS, "brax-apg", 0, 12_800, TINY_APG, 4, 1_000_000)
    buffer = io.BytesIO()
    np.savez(buffer, **{brax_agents.HEADER: np.array([{"format": brax_agents.CHECKPOINT_FORMAT}], dtype=object)})
    with pytest.raises(CheckpointError, match="not a chaosgym Brax checkpoint"):
        brax_agents.decode_checkpoint(buffer.getvalue(), run, brax_agents.make_policy_fn(run, cartpole)[1])


# ---- training: the trainer and its run folder ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Config:
    """What the trainer reads of chaosgym's run config."""

    task: str
    task_kwargs: dict
    agent: str
    seed: int
    env_steps: int
    settings: object
    eval_episodes: int = 4
    eval_seed: int = 1_000_000

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {"settings": self.settings.to_json()}


class Folder(RunFolder):
    checkpoint_suffix = ".npz"
    budget_fields = ("env_steps",)

    @classmethod
    def decode_config(cls, saved: dict) -> Config:
        return Config(**saved | {"settings": BRAX_SETTINGS[saved["agent"]].from_json(saved["settings"])})

    @classmethod
    def encode_config(cls, config: Config) -> dict:
        return config.to_json()


@pytest.fixture
def trainer(monkeypatch):
    monkeypatch.setattr(run_module, "RUN_FILES", run_module.RUN_FILES | {"checkpoint.npz", "checkpoint.prev.npz"})
    return brax_agents.BraxTrainer(run_class=Folder)


def read_rows(folder) -> list[dict]:
    with open(folder / "metrics.csv") as file:
        return list(csv.DictReader(file))


# about 55 s cold on a 2-core CPU, 20 s warm
def test_brax_ppo_trains_stops_on_time_and_resumes_from_its_parameters(trainer, tmp_path):
    config = Config(TASK, EQUATIONS, "brax-ppo", 0, 12_800, TINY_PPO)
    # out of time at the first evaluation point after the untrained one
    stopped = trainer.train(config, tmp_path, progress=False, time_budget=1e-9)
    assert stopped["env_steps"] == 1280 and stopped["update"] == 1
    assert [int(r["env_steps"]) for r in read_rows(tmp_path)] == [0, 1280]
    final = trainer.train(config, tmp_path, resume=True, progress=False)
    rows = read_rows(tmp_path)
    assert [int(r["env_steps"]) for r in rows] == list(range(0, 12_801, 1280))  # every tenth, continued
    assert [int(r["update"]) for r in rows] == list(range(11))
    assert all(r["eval_score"] and r["eval_objective"] for r in rows) and all(r["loss"] for r in rows[1:])
    wall = [float(r["wall_time"]) for r in rows]
    assert wall == sorted(wall) and final["wall_time"] == wall[-1]
    assert final["compile_time"] > 0 and final["env_steps"] == 12_800
    assert final["eval_score"] == float(rows[-1]["eval_score"])
    # the newest checkpoint's policy, scored on chaosgym's one-at-a-time protocol, gives the row's score
    policy = trainer.policy(Folder(tmp_path))
    scored = evaluate(policy, TASK, EQUATIONS, num_episodes=4, seed=1_000_000)
    assert scored["mean_return"] == pytest.approx(final["eval_score"], rel=1e-4, abs=1e-3)
    assert scored["mean_objective"] == pytest.approx(final["eval_objective"], rel=1e-4, abs=1e-4)
    # the JAX policy `chaosgym diagnose` differentiates: the network's parameters, the normaliser's
    # statistics (with Brax's integer counter, which broke the gradient) held fixed inside it
    apply, params = trainer.jax_policy(Folder(tmp_path))
    obs = np.linspace(-1.0, 1.0, BraxEnv(TASK, **EQUATIONS).observation_size, dtype=np.float32)
    np.testing.assert_allclose(apply(params, obs), policy(obs), rtol=1e-5, atol=1e-6)
    grads = jax.vmap(lambda o: jax.grad(lambda p: jnp.sum(apply(p, o)))(params))(np.stack([obs, -obs]))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grads))
    # a finished run, opened again with no more budget, trains nothing
    assert trainer.train(config, tmp_path, resume=True, progress=False)["env_steps"] == 12_800
    assert len(read_rows(tmp_path)) == 11


# about 60 s cold on a 2-core CPU (Brax compiles APG's training step for 30 s), 20 s warm
def test_brax_apg_trains_and_a_resumed_run_restarts_from_scratch(trainer, tmp_path):
    config = Config(TASK, EQUATIONS, "brax-apg", 0, 12_800, TINY_APG)
    final = trainer.train(config, tmp_path, progress=False)
    rows = read_rows(tmp_path)
    assert [int(r["env_steps"]) for r in rows] == list(range(0, 12_801, 1280))
    assert [int(r["update"]) for r in rows] == list(range(0, 101, 10))
    assert all(r["grad_norm"] for r in rows[1:]) and final["eval_score"] > float(rows[0]["eval_score"])
    with pytest.warns(UserWarning, match="restarts from scratch"):
        again = trainer.train(config, tmp_path, resume=True, progress=False)
    assert [int(r["env_steps"]) for r in read_rows(tmp_path)] == list(range(0, 12_801, 1280))
    assert again["eval_score"] == pytest.approx(final["eval_score"])  # the same seed: the same run again
    assert brax_agents.apg_train.acting is brax_agents.acting  # Brax's own evaluator is back


@pytest.mark.slow  # about 45 s on a 2-core CPU (most of it compiling)
def test_brax_ppo_learns_the_cart_pole_swing_up(trainer, tmp_path):
    # measured: -54.4 untrained -> 90.9 (final-state loss 0.004) in 512,000 env steps, 5.3 s of training
    settings = BraxPPOConfig(num_envs=64, batch_size=64, unroll_length=10, num_minibatches=8,
                             num_updates_per_batch=4, policy_hidden_layer_sizes=(32, 32),
                             value_hidden_layer_sizes=(64, 64))
    final = trainer.train(Config(TASK, EQUATIONS, "brax-ppo", 0, 512_000, settings, eval_episodes=16),
                          tmp_path, progress=False)
    untrained = float(read_rows(tmp_path)[0]["eval_score"])
    # the return is the sum of cos(angle) over 100 steps: 100 is upright throughout, -100 hanging still
    assert untrained < 0 and final["eval_score"] > 70 and final["eval_objective"] < 0.1, (untrained, final)


@pytest.mark.slow
def test_a_comparison_with_brax_ppo_runs_end_to_end(tmp_path):
    """`chaosgym compare` with Brax's PPO beside apg on the 1-pole cart pole, tiny: both trained,
    evaluated by the one protocol and in the table."""
    from chaosgym.agents.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", "--tasks", "ChaosCartPole-v0:physics=equations", "--agents", "brax-ppo,apg", "--seeds", "1",
                 "--env-steps", "2048", "--eval-episodes", "2", "--set", "brax-ppo.num_envs=8",
                 "--set", "brax-ppo.batch_size=8", "--set", "brax-ppo.num_minibatches=2",
                 "--set", "brax-ppo.unroll_length=4", "--set", "brax-ppo.num_evals=3",
                 "--set", "brax-ppo.policy_hidden_layer_sizes=(8,)", "--set", "brax-ppo.value_hidden_layer_sizes=(8,)",
                 "--set", "apg.num_envs=4", "--set", "apg.hidden=(8,)", "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "| brax-ppo |" in summary and "| apg |" in summary
    assert (out / "runs" / "ChaosCartPole-v0-physicsequations-brax-ppo-seed0" / "checkpoint.npz").exists()
