"""Defects found by benchmarks/hostile.py (issue 21's recount), each with the test that failed before its fix."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from chaosgym.faces.gym_env import check_actions


@pytest.mark.parametrize("actions, where", [
    (np.array([[0.0], [np.nan]], np.float32), "1 of 2 entries, the first nan at index (1, 0)"),
    (np.full((1000, 3), np.inf, np.float32), "3000 of 3000 entries, the first inf at index (0, 0)"),
    (np.array([-np.inf], np.float32), "1 of 1 entries, the first -inf at index (0,)"),
])
def test_a_non_finite_action_is_one_line_naming_where(actions, where):
    with pytest.raises(ValueError) as error:
        check_actions(actions, actions.shape)
    message = str(error.value)
    assert "\n" not in message and where in message and "nothing was stepped" in message


# a file-size limit (RLIMIT_FSIZE, as a full disk) hit while a checkpoint is written
LIMITED = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from chaosgym.files import write_atomic

    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
    target = Path(sys.argv[1]) / "checkpoint.npz"
    target.write_bytes(b"previous")
    try:
        write_atomic(target, bytes(5000))
    except OSError as error:
        print(error.filename)
        print(sorted(p.name for p in target.parent.iterdir()), target.read_bytes().decode())
""")


def test_a_write_that_hits_a_file_size_limit_names_the_file_and_keeps_the_previous_one(tmp_path):
    result = subprocess.run([sys.executable, "-c", LIMITED, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    filename, left = result.stdout.splitlines()
    assert filename == str(tmp_path / "checkpoint.npz")
    assert left == "['checkpoint.npz'] previous"  # no temporary left, the previous content whole


# ---- the rest of the recount's unhandled cases, mended -------------------------------------------

def test_resuming_a_run_whose_config_is_gone_is_refused_and_keeps_its_checkpoint(tmp_path):
    from chaosgym.agents.config import for_task
    from chaosgym.agents.run import Run

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.csv").write_text("update\n0\n")
    (folder / "checkpoint.npz").write_bytes(b"the only copy")
    for resume in (True, False):
        with pytest.raises(FileExistsError, match="no config.json"):
            Run.open(folder, for_task("ChaosCartPole-v0", "full"), resume, lambda b: b)
    assert (folder / "checkpoint.npz").read_bytes() == b"the only copy"


def _cli(argv, capsys) -> str:
    from chaosgym.agents.cli import main

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
    (["render", "--run", "x", "--seed", "-1"], "a Gymnasium seed (a whole number >= 0), got '-1'"),
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
