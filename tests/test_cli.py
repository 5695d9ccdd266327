"""The `chaosgym` command line: flags that never mislead, bad input as one line naming the flag or
the path, and an interrupted command's exit status. Arguments only: nothing here compiles."""

import os
import signal
import subprocess
import sys
import time

import pytest

from chaosgym.agents import announce, cli, train
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
    (["--updates", "-1"], "argument --updates: must be a positive integer, got -1"),
    (["--eval-seed", "-1"], "argument --eval-seed: must be an integer >= 0"),
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


@pytest.mark.parametrize("agent, extra", [
    ("full", ["--sb3", "gamma=0.9"]),
    ("full", ["--es-sigma", "0.1"]),
    ("full", ["--truncation", "3"]),
    ("apg", ["--policy", "paper"]),
    ("ppo", ["--env-steps", "100", "--truncation", "3"]),
])
def test_flags_the_agent_does_not_read_are_refused_alike_for_every_agent(agent, extra, tmp_path, capsys):
    flag = [word for word in extra if word.startswith("--") and word != "--env-steps"][0]
    assert f"{flag}: not read by --agent {agent}, which takes " in train_error(extra, tmp_path, capsys, agent)


@pytest.mark.parametrize("agent, extra, message", [
    ("sac", ["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    ("ppo", ["--sb3", "gamma=2"], "--sb3 gamma=2: expected a number in [0, 1]"),
    ("ppo", ["--sb3", "n_steps=-1"], "--sb3 n_steps=-1: expected an integer >= 1"),
    ("ppo", ["--sb3", "gama=0.9"], "--sb3 gama: not a hyperparameter of ppo; valid: "),
    ("sac", ["--sb3", "tau=0"], "--sb3 tau=0: expected a number in (0, 1]"),
])
def test_sb3_hyperparameters_are_checked(agent, extra, message, tmp_path, capsys):
    assert message in train_error(["--env-steps", "100", *extra], tmp_path, capsys, agent)


def test_resume_of_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    error = train_error(["--resume"], tmp_path, capsys)
    assert f"--resume: there is no run folder {tmp_path / 'run'}" in error
    assert not (tmp_path / "run").exists()


def test_an_unusable_out_is_one_line_naming_the_path(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "sub"
    error = error_of(["train", "--task", "ChaosCartPole-v0", "--agent", "full", "--out", str(out)], capsys)
    assert error.startswith("chaosgym train: error: ") and str(out) in error


def test_train_help_shows_the_presets_values_and_no_default_beside_a_required_flag(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--task TASK task id --task-kwargs" in text  # no "(default: ChaosCartPole-v0)"
    assert "--agent {" in text and "gradient estimator, carried-state agent or SB3 baseline (chaosgym.agents.AGENTS) --policy" in text
    assert "(default: the task's preset: 50 on ChaosAnt-v0, 100 on ChaosCartPole-v0" in text


@pytest.mark.parametrize("argv, message", [
    (["demo", "--steps", "-1"], "argument --steps: expected an integer >= 1; got '-1'"),
    (["demo", "--num-envs", "0"], "argument --num-envs: expected an integer >= 1; got '0'"),
    (["diagnose", "--task", "ChaosCartPole-v0", "--hidden", "8,,8", "--out", "x"], "argument --hidden: expected"),
])
def test_demo_and_diagnose_refuse_bad_counts(argv, message, capsys):
    assert message in error_of(argv, capsys)


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"not a pickle at all"])
def test_diagnose_with_an_unreadable_checkpoint_is_one_line(content, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pkl"
    checkpoint.write_bytes(content)
    error = error_of(["diagnose", "--policy", str(checkpoint), "--out", str(tmp_path / "out")], capsys)
    assert error.startswith(f"chaosgym diagnose: error: {checkpoint} is not a readable checkpoint")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_command_with_a_nonzero_status(signum, monkeypatch, tmp_path, capsys):
    def killed(args):
        os.kill(os.getpid(), signum)
        time.sleep(30)  # the handler raises before this ends

    monkeypatch.setattr(train, "run", killed)
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
