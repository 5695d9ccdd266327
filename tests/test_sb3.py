"""The SB3 face of chaosgym: the VecEnv contract, check_env, training, checkpoints and resume."""

import csv
import dataclasses
import io
import json
import pickle
import warnings
import zipfile

import gymnasium
import numpy as np
import pytest

import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize  # noqa: E402

import chaosgym  # noqa: E402
import chaosgym.agents.sb3 as sb3  # noqa: E402
from chaosgym.agents.cli import main  # noqa: E402
from chaosgym.agents.config import for_task  # noqa: E402
from chaosgym.agents.run import METRIC_COLUMNS, CheckpointError, Run  # noqa: E402
from chaosgym.agents.settings import PPOSettings  # noqa: E402
from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv  # noqa: E402
from chaosgym.evaluation import evaluate  # noqa: E402

torch.set_num_threads(1)

# The batched VecEnv runs MJX, so its single twin is the Gymnasium env on MJX (MuJoCo's C engine,
# the single env's default backend, agrees with it only to float32 rounding).
MJX = {"backend": "mjx"}


def random_actions(venv, steps, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (steps, venv.num_envs, *venv.action_space.shape)).astype(np.float32)


def assert_infos_equal(ours, theirs, atol):
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if key == "terminal_observation":
            assert ours[key].dtype == value.dtype == np.float32 and ours[key].shape == value.shape
            np.testing.assert_allclose(ours[key], value, atol=atol)
        elif isinstance(value, bool):
            assert ours[key] is value, key
        else:
            assert ours[key] == pytest.approx(value, abs=atol), key


@pytest.mark.parametrize("env_id, episode_length", [("ChaosCartPole-v0", 20), ("ChaosDoublePendulum-v0", 15)])
def test_matches_dummy_vec_env_step_for_step(env_id, episode_length):
    ours = ChaosSB3VecEnv(env_id, num_envs=3, episode_length=episode_length)
    theirs = DummyVecEnv([lambda: gymnasium.make(env_id, max_episode_steps=episode_length, **MJX)] * 3)
    assert ours.seed(7) == theirs.seed(7) == [7, 8, 9]
    np.testing.assert_array_equal(ours.reset(), theirs.reset())
    assert ours.reset_infos == theirs.reset_infos
    for t, actions in enumerate(random_actions(ours, 3 * episode_length)):
        obs, rewards, dones, infos = ours.step(actions)
        obs_, rewards_, dones_, infos_ = theirs.step(actions)
        assert obs.shape == obs_.shape and obs.dtype == obs_.dtype == np.float32
        assert rewards.shape == (3,) and rewards.dtype == rewards_.dtype == np.float32
        assert dones.dtype == dones_.dtype == np.bool_
        np.testing.assert_array_equal(obs, obs_)
        np.testing.assert_array_equal(rewards, rewards_)
        np.testing.assert_array_equal(dones, dones_)
        # these tasks never terminate: the time limit ends every episode together
        np.testing.assert_array_equal(dones, (t + 1) % episode_length == 0)
        for info, info_ in zip(infos, infos_):
            assert_infos_equal(info, info_, atol=0.0)
            assert info["TimeLimit.truncated"] is bool(dones.any())
            assert ("terminal_observation" in info) is bool(dones.any())
        assert ours.reset_infos == theirs.reset_infos


@pytest.mark.slow  # 3.5 min cold on 2 cores: the Ant's vector env and its single twin both compile
def test_ant_termination_matches_dummy_vec_env():
    """The Ant terminates when its torso leaves the healthy height range: terminal observation,
    no truncation flag, and a fresh episode in the same step. Contacts amplify the last-bit
    differences between a vmapped and a single MJX step, so the comparison has a tolerance."""
    ours = ChaosSB3VecEnv("ChaosAnt-v0", num_envs=4)
    theirs = DummyVecEnv([lambda: gymnasium.make("ChaosAnt-v0", **MJX)] * 4)
    ours.seed(3), theirs.seed(3)
    np.testing.assert_array_equal(ours.reset(), theirs.reset())
    low, high = chaosgym.make("ChaosAnt-v0").task.healthy_z_range
    terminated = 0
    for actions in random_actions(ours, 20):
        obs, rewards, dones, infos = ours.step(actions)
        obs_, rewards_, dones_, infos_ = theirs.step(actions)
        np.testing.assert_allclose(obs, obs_, atol=1e-3)
        np.testing.assert_allclose(rewards, rewards_, atol=1e-3)
        np.testing.assert_array_equal(dones, dones_)
        for info, info_ in zip(infos, infos_):
            assert_infos_equal(info, info_, atol=1e-3)
        for i in np.flatnonzero(dones):
            terminated += 1
            torso_z = infos[i]["terminal_observation"][0]  # the observation starts with qpos[2]
            assert not low <= torso_z <= high
            assert infos[i]["TimeLimit.truncated"] is False
            assert abs(obs[i, 0] - 0.55) <= 0.1  # a fresh episode: Brax's standing torso height ± reset noise
            assert ours.reset_infos[i] == theirs.reset_infos[i]
    assert terminated > 0, "random actions should tip an ant over within 20 steps"


def test_seeding():
    venv = ChaosSB3VecEnv("ChaosCartPole-v0", num_envs=2)
    venv.seed(3)
    first = venv.reset()
    venv.seed(3)
    np.testing.assert_array_equal(venv.reset(), first)
    assert not np.array_equal(venv.reset(), first)  # no seed: the generators go on
    venv.seed(4)
    np.testing.assert_array_equal(venv.reset()[0], first[1])  # env 0 seeded 4 = env 1 seeded 3
    single, _ = gymnasium.make("ChaosCartPole-v0", **MJX).reset(seed=3)
    np.testing.assert_array_equal(first[0], single)


def test_vec_env_state_continues_exactly():
    """`set_state(get_state())` on a twin continues mid-episode, resets and seed streams included."""
    # the VecEnv of test_matches_dummy_vec_env_step_for_step, compiled once for both
    venv, twin = (ChaosSB3VecEnv("ChaosCartPole-v0", num_envs=3, episode_length=20) for _ in range(2))
    venv.seed(3)
    venv.reset()
    actions = random_actions(venv, 25)
    for a in actions[:18]:
        venv.step(a)
    state = venv.get_state()
    with pytest.raises(ValueError, match="state is of 2 environments, this VecEnv has 3"):
        twin.set_state({**state, "num_envs": 2})
    with pytest.raises(ValueError, match="does not fit"):
        twin.set_state({**state, "leaves": state["leaves"][:-1]})
    with pytest.raises(ValueError, match="get_state"):
        twin.set_state({"leaves": state["leaves"]})
    twin.set_state(state)
    assert twin.reset_infos == venv.reset_infos
    for t, a in enumerate(actions[18:], 19):  # across the reset after step 20
        (obs, rewards, dones, infos), (obs_, rewards_, dones_, infos_) = venv.step(a), twin.step(a)
        np.testing.assert_array_equal(obs, obs_)
        np.testing.assert_array_equal(rewards, rewards_)
        np.testing.assert_array_equal(dones, dones_)
        np.testing.assert_array_equal(dones, t == 20)
        for info, info_ in zip(infos, infos_):
            assert_infos_equal(info, info_, atol=0.0)
    np.testing.assert_array_equal(venv.reset(), twin.reset())  # the seed streams went on alike


def test_vec_env_api():
    venv = ChaosSB3VecEnv("ChaosCartPole-v0", num_envs=2, render_mode="rgb_array", width=32, height=24)
    assert venv.observation_space.shape == (4,) and venv.action_space.shape == (1,)
    assert venv.get_attr("render_mode") == ["rgb_array"] * 2
    spec = venv.get_attr("spec", indices=1)[0]
    assert spec.max_episode_steps == 100 and gymnasium.make(spec).unwrapped.observation_space.shape == (4,)
    assert venv.env_method("__repr__", indices=[0, 1])[0] == repr(venv)
    assert venv.env_is_wrapped(Monitor) == [False, False]
    venv.set_attr("render_mode", "rgb_array")
    with pytest.raises(ValueError, match="share"):
        venv.set_attr("render_mode", None, indices=[0])
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")
    with pytest.raises(gymnasium.error.ResetNeeded):
        venv.step(np.zeros((2, 1), np.float32))
    venv.reset()
    venv.step_async(np.zeros((2, 1), np.float32))
    assert len(venv.step_wait()) == 4
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        venv.step(np.full((2, 1), np.nan, np.float32))
    assert venv.render().shape == (48, 32, 3)  # two 24x32 images tiled
    assert VecNormalize(VecMonitor(venv)).reset().shape == (2, 4)
    venv.close()


@pytest.mark.parametrize("backend", ["mujoco", "mjx"])
@pytest.mark.parametrize("env_id", list(chaosgym.TASKS))
def test_sb3_check_env(env_id, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # check_env reports problems as warnings too
        check_env(gymnasium.make(env_id, backend=backend))


def test_plain_make_vec_env_route_trains():
    venv = make_vec_env(lambda: gymnasium.make("ChaosCartPole-v0"), n_envs=2, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu").learn(64)
    assert model.num_timesteps == 64 and model._n_updates == 1  # one rollout of 2 envs x 32 steps, one epoch


def read_metrics(out):
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def train_sb3(config, out, **run) -> dict:
    """Train (or resume) an SB3 run through its trainer; the final progress."""
    return sb3.TRAINER.train(config, out, **run)


def train_interrupted(config, out, monkeypatch, crash_at, **run):
    """Train `config` into `out`, killed (KeyboardInterrupt) in its evaluation at each of `crash_at`
    env steps, before that checkpoint is written, and resumed each time."""
    real_evaluate, pending = sb3.TrainingMonitor._evaluate_and_save, set(crash_at)

    def evaluate_and_save(monitor):
        if monitor.num_timesteps in pending:
            pending.remove(monitor.num_timesteps)
            raise KeyboardInterrupt
        real_evaluate(monitor)

    monkeypatch.setattr(sb3.TrainingMonitor, "_evaluate_and_save", evaluate_and_save)
    for crash in range(len(crash_at)):
        with pytest.raises(KeyboardInterrupt):
            train_sb3(config, out, **run, resume=crash > 0)
    assert not pending
    return train_sb3(config, out, **run, resume=True)


def checkpoint_of(out) -> dict:
    """The newest checkpoint of a run folder, decoded: {progress, tensors, continuation}."""
    return sb3.decode_checkpoint((out / "checkpoint.zip").read_bytes(), Run(out).config)


def assert_same(ours, theirs, where="checkpoint"):
    """Two decoded checkpoints' trees hold the same values, bit for bit (tensors, arrays, numbers)."""
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), where
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, torch.Tensor):
        assert torch.equal(ours, theirs), f"{where}: max |delta| = {float((ours - theirs).abs().max()):.3g}"
    elif isinstance(theirs, np.ndarray):
        np.testing.assert_array_equal(ours, theirs, err_msg=where)
    else:
        assert ours == theirs, where


def assert_same_final_model(out, reference):
    """The newest checkpoints of two run folders hold the same networks and optimiser states, RNG
    states, normaliser statistics, environments (mid-episode), VecMonitor's episode counters (an
    episode across the interruption included), replay buffer and counters, bit for bit."""
    ours, theirs = checkpoint_of(out), checkpoint_of(reference)
    assert_same(ours["tensors"], theirs["tensors"], "tensors")
    # the key of unseeded environments is drawn afresh by every VecEnv; SB3's are all seeded
    for checkpoint in (ours, theirs):
        checkpoint["continuation"]["vec_env"].pop("key", None)
    assert_same(ours["continuation"], theirs["continuation"], "continuation")
    assert ours["progress"]["env_steps"] == theirs["progress"]["env_steps"]
    counters = theirs["continuation"]["counters"]
    assert counters["num_timesteps"] == theirs["progress"]["env_steps"] and counters["_n_updates"] > 0
    assert theirs["continuation"]["monitor"]["episode_count"] > 0


def assert_same_metrics(out, reference):
    rows, rows_ = ([{k: v for k, v in r.items() if k != "wall_time"} for r in read_metrics(o)]
                   for o in (out, reference))
    assert rows == rows_


def test_killed_ppo_run_resumes_exactly(tmp_path, monkeypatch):
    """PPO killed between checkpoints and resumed ends where the uninterrupted run ends, bit for bit:
    the environments go on mid-episode (100-step episodes, 64-step rollouts), and the RNGs, the
    normaliser's running return and every counter continue from the checkpoint."""
    config = for_task("ChaosCartPole-v0", "ppo", env_steps=768, seed=0, eval_episodes=1, num_envs=4,
                      batch_size=128, n_epochs=2)
    assert (config.settings.n_steps, config.settings.device) == (64, "auto")  # the task's preset, SB3's device
    run = dict(eval_every=256, progress=False)
    out, reference = tmp_path / "resumed", tmp_path / "reference"
    expected = train_sb3(config, reference, **run)
    final = train_interrupted(config, out, monkeypatch, crash_at=[512], **run)

    assert_same_final_model(out, reference)
    assert_same_metrics(out, reference)
    # ("format": a resumed run's progress carries its checkpoint's, test_a_resumed_runs_progress_has_the_fresh_keys)
    same = lambda progress: {k: v for k, v in progress.items() if "time" not in k and k != "format"}  # noqa: E731
    assert same(final) == same(expected)
    assert final["env_steps"] == 768
    rows = read_metrics(out)
    # the killed evaluation at 512 is done once, after the resume from 256
    assert [int(r["env_steps"]) for r in rows if r["eval_score"] != ""] == [0, 256, 512, 768]
    # the clock and SB3's update count go on from the checkpoint instead of starting over
    for column in ("wall_time", "update"):
        values = [float(r[column]) for r in rows]
        assert values == sorted(values), column
    assert list(rows[0]) == METRIC_COLUMNS  # the gradient agents' columns
    with zipfile.ZipFile(out / "checkpoint.zip") as z:  # tensors, arrays and JSON: nothing pickled
        assert set(z.namelist()) == {"tensors.pt", "continuation.npz", "continuation.json", "progress.json"}
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoint.prev.zip", "checkpoint.zip",
                                                      "config.json", "metrics.csv"]
    with pytest.raises(FileExistsError):
        train_sb3(config, out, **run)
    with pytest.raises(ValueError, match="seed"):
        train_sb3(dataclasses.replace(config, seed=1), out, **run, resume=True)


def test_a_resumed_runs_progress_has_the_fresh_keys(tmp_path):
    config = for_task("ChaosCartPole-v0", "ppo", env_steps=32, eval_episodes=1, num_envs=2, n_steps=16,
                      batch_size=16, n_epochs=1)
    fresh = train_sb3(config, tmp_path / "run", progress=False)
    again = train_sb3(config, tmp_path / "run", resume=True, progress=False)  # finished: read back
    assert set(again) == set(fresh)


class Exploit:
    """Unpickling it creates a file: what a hostile pickle would do worse."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickled_and_old_sb3_checkpoints_are_refused_unread(tmp_path):
    config = for_task("ChaosCartPole-v0", "ppo", env_steps=100)
    ran = tmp_path / "ran"
    with pytest.raises(CheckpointError, match="not an SB3 checkpoint of chaosgym >= 0.2"):
        sb3.decode_checkpoint(pickle.dumps(Exploit(str(ran))), config)
    # chaosgym < 0.2 zipped SB3's own (pickled) model.zip and a pickled continuation
    old = io.BytesIO()
    with zipfile.ZipFile(old, "w") as z:
        z.writestr("model.zip", pickle.dumps(Exploit(str(ran))))
        z.writestr("continuation.pkl", pickle.dumps(Exploit(str(ran))))
        z.writestr("progress.json", json.dumps({"env_steps": 10}))
    with pytest.raises(CheckpointError, match="chaosgym < 0.2"):
        sb3.decode_checkpoint(old.getvalue(), config)
    assert not ran.exists()


STOPS_BEFORE_STORING = ("TrainingMonitor._on_step returns False at the budget's last step, and SB3 then returns "
                        "before it stores that step (its transition, its rollout, _last_obs)")


def test_a_budget_of_whole_rollouts_trains_on_every_rollout(tmp_path):
    config = for_task("ChaosCartPole-v0", "ppo", env_steps=64, eval_episodes=1, num_envs=2, n_steps=16,
                      batch_size=16, n_epochs=1)
    train_sb3(config, tmp_path / "run", progress=False)
    counters = checkpoint_of(tmp_path / "run")["continuation"]["counters"]
    assert (counters["num_timesteps"], counters["_n_updates"]) == (64, 2)  # 2 rollouts of 2 envs x 16 steps


@pytest.mark.slow  # SAC's networks and replay buffer; test_killed_ppo_run_resumes_exactly is the fast check of SB3 resume
def test_sac_checkpoint_keeps_its_replay_buffer(tmp_path):
    out = tmp_path / "sac"
    config = for_task("ChaosCartPole-v0", "sac", env_steps=120, eval_episodes=1)
    train_sb3(config, out, eval_every=60, progress=False)
    venv = VecMonitor(sb3.make_compiled_vec_env("ChaosCartPole-v0", {}, 1, 0))
    checkpoint = checkpoint_of(out)
    model = sb3.load_model(checkpoint, config, venv, resume=True)
    assert checkpoint["progress"]["env_steps"] == 120 == model.num_timesteps
    assert model.replay_buffer.size() == 120 == model.buffer_size  # capped at the budget
    assert any(r["loss"] != "" for r in read_metrics(out))

    # extending the finished run: the buffer comes back full, so 30 more steps leave it full
    longer = dataclasses.replace(config, env_steps=150)
    train_sb3(longer, out, resume=True, progress=False)
    model = sb3.load_model(checkpoint_of(out), longer, venv, resume=True)
    assert model.num_timesteps == 150 and model.replay_buffer.size() == 120
    assert json.loads((out / "config.json").read_text())["env_steps"] == 150


@pytest.mark.slow  # 25 s warm: SAC and TD3 twice each, with an evaluation every 10 steps
@pytest.mark.parametrize("agent", ["sac", "td3"])
def test_killed_off_policy_run_resumes_exactly(agent, tmp_path, monkeypatch):
    """SAC/TD3 killed twice and resumed end as the uninterrupted run, bit for bit, replay buffer
    included: resumed once within the warm-up (random actions from the action space's RNG until 12
    steps, TD3's exploration noise from numpy's) and once after it (replay samples from numpy's RNG,
    SAC's actions and TD3's target noise from torch's)."""
    config = for_task("ChaosCartPole-v0", agent, env_steps=120, seed=0, eval_episodes=1, batch_size=32)
    run = dict(eval_every=10, progress=False)
    out, reference = tmp_path / "resumed", tmp_path / "reference"
    train_sb3(config, reference, **run)
    train_interrupted(config, out, monkeypatch, crash_at=[20, 50], **run)
    assert_same_final_model(out, reference)
    assert_same_metrics(out, reference)
    buffers = [checkpoint_of(o)["continuation"]["replay"] for o in (out, reference)]
    for name in ("observations", "actions", "rewards", "dones", "timeouts"):
        assert buffers[1][name].shape[0] == 120, name
        np.testing.assert_array_equal(buffers[0][name], buffers[1][name], err_msg=name)


@pytest.mark.slow
def test_ppo_swings_up_a_cart_pole_better_than_random(tmp_path):
    config = for_task("ChaosCartPole-v0", "ppo", task_kwargs={"num_poles": 1}, env_steps=12_288)
    train_sb3(config, tmp_path / "ppo", eval_every=4096, progress=False)
    rng = np.random.default_rng(0)
    random_score = evaluate(lambda obs: rng.uniform(-1, 1, 1), "ChaosCartPole-v0", {"num_poles": 1})
    ppo_score = evaluate(sb3.load_policy(tmp_path / "ppo"), "ChaosCartPole-v0", {"num_poles": 1})
    # random actions keep the pole low; PPO must do clearly better within this budget
    assert ppo_score["mean_return"] > random_score["mean_return"] + 40
    assert ppo_score["mean_return"] == pytest.approx(float(read_metrics(tmp_path / "ppo")[-1]["eval_score"]))


def test_train_cli_maps_ppos_flags_stops_at_its_budget_and_prints_the_final_score(tmp_path, capsys):
    out = tmp_path / "ppo"
    assert main(["train", "--task", "ChaosCartPole-v0", "--agent", "ppo", "--env-steps", "50",
                 "--learning-rate", "0.001", "--batch-size", "32", "--hidden", "16", "--num-envs", "2",
                 "--n-steps", "16", "--n-epochs", "1", "--extra", "target_kl=0.5", "--eval-episodes", "1",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "ppo on ChaosCartPole-v0: 50 env steps, held-out score" in printed  # a rollout cut at the budget
    config = Run(out).config
    assert config.settings == PPOSettings(learning_rate=0.001, batch_size=32, hidden=(16,), num_envs=2, n_steps=16,
                                          n_epochs=1, extra={"target_kl": 0.5})
    assert int(read_metrics(out)[-1]["env_steps"]) == 50
    venv = VecMonitor(sb3.make_compiled_vec_env("ChaosCartPole-v0", {}, 2, 0))
    model = sb3.load_model(checkpoint_of(out), config, venv)
    assert (model.learning_rate, model.batch_size, model.n_steps, model.n_epochs, model.target_kl) == (
        0.001, 32, 16, 1, 0.5)
    assert model.policy.net_arch == {"pi": [16], "vf": [16]} or model.policy.net_arch == [16]
    assert isinstance(model.policy.activation_fn(), torch.nn.Tanh)


def test_ppo_runs_its_networks_where_torch_sees_an_accelerator():
    """`device="auto"` (the default): the GPU where torch sees one, else the CPU; an explicit device
    is kept."""
    import torch

    from chaosgym.agents.sb3 import build_model
    from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for device, wanted in (("auto", expected), ("cpu", "cpu")):
        config = for_task("ChaosCartPole-v0", "ppo", env_steps=1000, num_envs=2, device=device)
        venv = ChaosSB3VecEnv("ChaosCartPole-v0", 2)
        try:
            assert build_model(config, venv).device.type == wanted
        finally:
            venv.close()
