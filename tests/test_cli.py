"""The `chaosgym` command line: flags that never mislead, bad input as one line naming the flag or
the path, and an interrupted command's exit status. Arguments only: nothing here compiles."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from chaosgym.agents import announce, cli, train_command
from chaosgym.agents.config import for_task
from chaosgym.validation import UserError
from chaosgym.agents.cli import main


def error_of(argv: list[str], capsys) -> str:
    """The one error line `chaosgym ARGV` ends with (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2, argv
    err = capsys.readouterr().err
    return err.strip().splitlines()[-1]


def train_error(extra: list[str], tmp_path, capsys, agent: str = "full") -> str:
    return error_of(["train", "--task", "ChaosCartPole-v0", "--agent", agent, "--out", str(tmp_path / "run"),
                     *extra], capsys)


def test_no_prefix_matching_and_a_misspelled_flag_gets_the_commands_usage_and_the_closest_flag(tmp_path, capsys):
    for typed in ("--update", "--updaets"):  # argparse took --update for --updates
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--task", "ChaosCartPole-v0", "--agent", "full", "--out", str(tmp_path), typed, "2"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert err.startswith("usage: chaosgym train ")
        assert f"unrecognized arguments: {typed} (did you mean --updates?) 2" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("extra, message", [
    (["--updates", "-1"], "argument --updates: must be a positive integer, or None, got -1"),
    (["--eval-seed", "-1"], "argument --eval-seed: must be an integer in [0, 2**63) (a Gymnasium seed), got -1"),
    (["--learning-rate", "inf"], "argument --learning-rate: expected a finite number; got 'inf'"),
    (["--clip-value", "nan"], "argument --clip-value: expected a finite number; got 'nan'"),
    (["--hidden", "8,,8"], "argument --hidden: expected comma-separated layer sizes"),
])
def test_errors_name_the_flag_the_user_typed(extra, message, tmp_path, capsys):
    assert message in train_error(extra, tmp_path, capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, part", [
    (["--hidden", "100000000,100000000"], "policy and optimiser"),
    (["--batch-size", "1000000000"], "rollout tape"),
    (["--horizon", "1000000000"], "rollout tape"),
    (["--eval-episodes", "1000000000"], "evaluation"),
])
def test_sizes_the_machine_cannot_hold_are_refused_with_the_estimate(extra, part, tmp_path, capsys):
    error = train_error(extra, tmp_path, capsys)
    assert "this run needs at least" in error and f"({part} " in error and "more than this machine's" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("agent, extra, message", [
    # an agent's flags are its own settings': another agent's are unknown to it
    ("full", ["--num-envs", "4"], "unrecognized arguments: --num-envs"),
    ("apg", ["--batch-size", "4"], "unrecognized arguments: --batch-size"),
    ("apg", ["--horizon", "4"], "unrecognized arguments: --horizon"),
    ("ppo", ["--env-steps", "100", "--truncation", "3"], "unrecognized arguments: --truncation"),
    ("ppo", ["--env-steps", "100", "--sb3", "gamma=0.9"], "unrecognized arguments: --sb3"),
    # a flag of the run that the agent's budget does not read
    ("ppo", ["--env-steps", "100", "--eval-every", "3"], "--eval-every: not read by --agent ppo, whose budget is env steps"),
    ("sac", ["--env-steps", "100", "--checkpoint-every", "3"], "--checkpoint-every: not read by --agent sac"),
    # a flag both agents have, with the values of each
    ("apg", ["--policy", "paper"], "argument --policy: invalid choice: 'paper' (choose from 'deterministic', "),
])
def test_flags_the_agent_does_not_take_are_refused_alike_for_every_agent(agent, extra, message, tmp_path, capsys):
    assert message in train_error(extra, tmp_path, capsys, agent)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("agent, setting", [("full", "estimator.es_sigma"), ("full", "estimator.truncation"),
                                            ("es", "estimator.remat")])
def test_estimator_settings_the_estimator_does_not_read_are_refused(agent, setting):
    value = {"estimator.es_sigma": 0.1, "estimator.truncation": 3, "estimator.remat": True}[setting]
    flag = "--" + setting.partition(".")[2].replace("_", "-")
    with pytest.raises(UserError, match=f"{flag}: not a setting of {agent}"):
        for_task("ChaosCartPole-v0", agent, **{setting: value})


@pytest.mark.parametrize("agent, extra, message", [
    ("sac", ["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    ("ppo", ["--gamma", "2"], "argument --gamma: must be a number in [0, 1], got 2.0"),
    ("ppo", ["--n-steps", "-1"], "argument --n-steps: must be a positive integer, or None, got -1"),
    ("ppo", ["--extra", "gama=0.9"], "--extra gama: not a keyword of SB3's PPO; valid: "),
    ("sac", ["--tau", "0"], "argument --tau: must be in (0, 1], got 0.0"),
    ("td3", ["--gradient-steps", "0"], "argument --gradient-steps: must be an integer >= 1, or -1, got 0"),
])
def test_sb3_hyperparameters_are_checked(agent, extra, message, tmp_path, capsys):
    assert message in train_error(["--env-steps", "100", *extra], tmp_path, capsys, agent)
    assert not (tmp_path / "run").exists()


def test_resume_of_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    error = train_error(["--resume"], tmp_path, capsys)
    assert f"--resume: there is no run folder {tmp_path / 'run'}" in error
    assert not (tmp_path / "run").exists()


def test_an_unusable_out_is_one_line_naming_the_path(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "sub"
    error = error_of(["train", "--task", "ChaosCartPole-v0", "--agent", "full", "--out", str(out)], capsys)
    assert error.startswith("chaosgym train: error: ") and str(out) in error


def test_train_help_shows_each_agents_own_flags_and_no_default_beside_a_required_flag(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--task TASK task id (or module:TaskId of your own) --agent {" in text  # no "(default: ...)"
    assert "gradient estimator, carried-state agent, SB3 or Brax baseline (chaosgym.agents.AGENTS) --task-kwargs" in text
    assert "Each agent has its own settings: chaosgym train --agent NAME --help lists them." in text
    assert "--batch-size" not in text and "--num-envs" not in text
    with pytest.raises(SystemExit):
        main(["train", "--agent", "apg", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "apg's own settings (defaults: its own, or with --task the task's presets, chaosgym.presets):" in text
    assert "--num-envs NUM_ENVS environments, each carrying one trajectory (default: 64)" in text
    assert "--layer-norm, --no-layer-norm" in text and "--batch-size" not in text and "--horizon" not in text
    assert "(none: no clipping) (default: 1.0)" in text  # an optional number says how to give none


@pytest.mark.parametrize("argv, message", [
    (["demo", "--steps", "-1"], "argument --steps: expected a positive integer, got '-1'"),
    (["demo", "--num-envs", "0"], "argument --num-envs: expected a positive integer, got '0'"),
    (["diagnose", "--task", "ChaosCartPole-v0", "--hidden", "8,,8", "--out", "x"], "argument --hidden: expected"),
])
def test_demo_and_diagnose_refuse_bad_counts(argv, message, capsys):
    assert message in error_of(argv, capsys)


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"not a checkpoint at all"])
def test_diagnose_with_an_unreadable_checkpoint_is_one_line(content, tmp_path, capsys):
    run = tmp_path / "run"  # a run folder whose checkpoints cannot be read
    run.mkdir()
    (run / "config.json").write_text(json.dumps(for_task("ChaosCartPole-v0", "full", updates=2).to_json()))
    (run / "checkpoint.npz").write_bytes(content)
    error = error_of(["diagnose", "--policy", str(run), "--out", str(tmp_path / "out")], capsys)
    assert error.startswith("chaosgym diagnose: error: ") and str(run / "checkpoint.npz") in error, error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_command_with_a_nonzero_status(signum, monkeypatch, tmp_path, capsys):
    def killed(args):
        os.kill(os.getpid(), signum)
        time.sleep(30)  # the handler raises before this ends

    monkeypatch.setattr(train_command, "run", killed)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task", "ChaosCartPole-v0", "--agent", "full", "--out", str(tmp_path)])
    assert exit_info.value.code == 128 + signum
    assert f"stopped by {signal.Signals(signum).name}" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handlers are back


def test_a_stop_is_not_swallowed_by_a_broad_except():
    with pytest.raises(KeyboardInterrupt):
        try:
            raise cli.Stopped(signal.SIGTERM)
        except Exception:  # noqa: BLE001  (what a careless caller would write)
            pass


def test_a_long_compile_is_announced_and_a_short_one_is_not(capsys):
    with announce.announce_compile("the slow thing", typical_s=60, after_s=0.05):
        time.sleep(0.3)
    err = capsys.readouterr().err
    assert "compiling the slow thing (first run only: cached afterwards; typically about 60 s" in err
    assert "compiled the slow thing in 0 s" in err
    with announce.announce_compile("the quick thing", typical_s=60, after_s=5):
        pass
    assert capsys.readouterr().err == ""


def test_xlas_slow_compile_alarm_is_kept_from_users_unless_they_set_the_log_level():
    check = "import os, chaosgym; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["3"], out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", check], env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"},
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["0"], out.stderr[-2000:]


def _cli(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err

@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "ChaosCartPole-v0", "--agent", "ppo", "--env-steps", "100", "--seed", "-1"],
     "argument --seed: must be an integer in [0, 2**63) (a Gymnasium seed), got -1"),
    (["render", "--run", "x", "--fps", "0"], "finite number of frames per second > 0, got '0'"),
    (["render", "--run", "x", "--fps", "nan"], "finite number of frames per second > 0, got 'nan'"),
    (["render", "--run", "x", "--max-steps", "0"], "a number of steps (a whole number >= 1), got '0'"),
    (["render", "--run", "x", "--seed", "-1"], "expected an integer in [0, 2**63) (a Gymnasium seed), got '-1'"),
])
def test_bad_seeds_rates_and_step_counts_are_refused_before_anything_runs(argv, message, capsys, tmp_path):
    error = _cli([*argv, *(["--out", str(tmp_path / "out")] if argv[0] == "train" else [])], capsys)
    assert message in error.strip().splitlines()[-1]  # argparse: the usage, then the one error line
    assert not (tmp_path / "out").exists()

@pytest.mark.parametrize("command, part", [
    (["train", "--task", "ChaosCartPole-v0", "--agent", "ppo", "--env-steps", "100", "--hidden", "100000000,100000000"],
     "policy and optimiser"),
    (["compare", "--agents", "full,ppo", "--seeds", "1", "--env-steps", "1000", "--set", "ppo.batch_size=1000000000"],
     "minibatch"),
])
def test_a_network_too_large_for_the_machine_is_refused_with_its_estimate_before_any_folder(command, part, capsys,
                                                                                          tmp_path):
    """SB3's network comes from --hidden too; compare checks every run before its first folder."""
    error = _cli([*command, "--out", str(tmp_path / "out")], capsys)
    assert "this run needs at least" in error and f"({part} " in error
    assert not (tmp_path / "out").exists()

@pytest.mark.parametrize("flags, message", [
    (["--poles", "1,,2"], "--poles: an empty item in '1,,2'"),
    (["--states", "1000000000"], "--states 1000000000 needs at least"),
])
def test_reproduce_refuses_an_empty_list_item_and_states_that_cannot_fit(flags, message, capsys, tmp_path):
    error = _cli(["reproduce", "stable-bptt", *flags, "--out", str(tmp_path / "out")], capsys)
    assert message in error
    assert not (tmp_path / "out").exists()

def test_diagnose_refuses_a_start_qpos_of_the_wrong_length_before_any_folder(capsys, tmp_path):
    """The cart pole's qpos is (cart, pole) per pole plus the reference mass: 3 values for one pole."""
    error = _cli(["diagnose", "--task", "ChaosCartPole-v0", "--what", "lyapunov", "--start-qpos", "0,0.3",
                  "--out", str(tmp_path / "out")], capsys)
    assert "--start-qpos needs 3 values (the task's qpos), got 2" in error
    assert not (tmp_path / "out").exists()


# A stop that lands where Python drops exceptions (a gc callback, a `__del__`: JAX runs a gc callback
# on every collection; or the hook that reports those) still ends the command with its one line and
# status (issue 21: the SB3 kill test's SIGINT was printed as "Exception ignored" and the run went on).
STOP_DROPPED_WORKER = textwrap.dedent("""
    import signal, sys, time, types
    from chaosgym.agents import cli

    def stop_in_the_hook(report):  # called by cli's hook: its caller's frame is that hook
        cli._stop(signal.SIGINT, sys._getframe(1))

    def run(args):
        class Dropping:
            def __del__(self):
                if sys.argv[1] == "del":
                    cli._stop(signal.SIGINT, None)
                else:
                    raise ValueError("reported by sys.unraisablehook")
        Dropping()
        time.sleep(60)
        return 0

    sys.unraisablehook = stop_in_the_hook
    sys.modules["stop_worker"] = types.SimpleNamespace(add_arguments=lambda parser: None, run=run)
    cli.COMMANDS["work"] = cli.Command("stop_worker:add_arguments", "stop_worker:run", "a command")
    sys.exit(cli.main(["work"]))
""")

@pytest.mark.parametrize("where", ["del", "hook"])
def test_a_stop_that_python_drops_still_ends_the_command(where, tmp_path):
    result = subprocess.run([sys.executable, "-c", STOP_DROPPED_WORKER, where], cwd=tmp_path, capture_output=True, text=True,
                            timeout=50)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("chaosgym work: stopped by SIGINT")


# issue 32's bar: a stop in a command's first seconds (while Python, JAX, MuJoCo and trimesh import)
# is never lost, over 20 tries spread across the first 3 s
STOP_TIMES = [0.15 * (i + 1) for i in range(20)]


@pytest.mark.slow
@pytest.mark.parametrize("delay", STOP_TIMES, ids=lambda d: f"{d:.2f}s")
def test_a_stop_in_the_first_seconds_is_never_lost(delay, tmp_path):
    signum = signal.SIGINT if round(delay / 0.15) % 2 else signal.SIGTERM
    argv = [sys.executable, "-m", "chaosgym.agents.cli", "train", "--task", "ChaosCartPole-v0", "--agent", "full",
            "--updates", "100000", "--out", str(tmp_path / "run"), "--no-progress"]
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{signal.Signals(signum).name} at {delay:.2f} s was lost: the command ran on")
    # before chaosgym's handler is in place Python's own defaults end it (killed by the signal;
    # an uncaught KeyboardInterrupt re-raises SIGINT); after, chaosgym's: 128 + the signal, one line
    assert process.returncode in (128 + signum, -signum), (process.returncode, err[-2000:])
    if process.returncode == 128 + signum:
        assert err.strip().splitlines()[-1].startswith(f"chaosgym train: stopped by {signal.Signals(signum).name}")
    assert "ExceptionWrapper" not in err
