"""Defects found by benchmarks/hostile.py (issue 21's recount), each with the test that failed before its fix."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from chaosgym.gym_adapters import check_actions


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
    target = Path(sys.argv[1]) / "checkpoint.pkl"
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
    assert filename == str(tmp_path / "checkpoint.pkl")
    assert left == "['checkpoint.pkl'] previous"  # no temporary left, the previous content whole
