"""Runs killed at random moments (SIGKILL and SIGINT, during start-up, compile, training and
checkpoint writes) and resumed end exactly as the uninterrupted run: the same parameters, the same
metrics rows (none lost, none repeated; wall-clock apart) and the same final score. Slow tier."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from chaosgym.agents.loop import load_checkpoint

pytestmark = pytest.mark.slow

CHAOSGYM = [sys.executable, "-m", "chaosgym.agents.cli"]
TIMED = {"wall_time"}  # the only columns that differ between an interrupted run and the uninterrupted one


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMED} for row in csv.DictReader(f)]


def _run(command: list[str], timeout: float = 900, env: dict | None = None) -> float:
    """Run to completion; its wall-clock seconds (the kills are spread over that span)."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return time.perf_counter() - start


def _killed_then_finished(command: list[str], out: Path, kills: int, seed: int, whole: float,
                          resume_flag: list[str], started: callable, first_signal: int = 0,
                          env: dict | None = None) -> list[str]:
    """Start `command`, kill it `kills` times at random moments between 0.3 s and 90% of `whole`
    (a warm uninterrupted run's seconds: start-up, compile, training and checkpoint writes) after each
    start, SIGKILL and SIGINT in turn, resuming each time, then let it finish; returns what each kill hit."""
    window = (0.3, 0.9 * whole)
    rng = random.Random(seed)
    outcomes = []
    for kill in range(kills):
        process = subprocess.Popen(command + (resume_flag if started(out) else []), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, env=env)
        moment = rng.uniform(*window)
        time.sleep(moment)
        sent = signal.SIGKILL if (kill + first_signal) % 2 == 0 else signal.SIGINT
        finished = process.poll() is not None
        if not finished:
            process.send_signal(sent)
        _, stderr = process.communicate(timeout=300)
        # a process can end between poll() and the signal: then it exits 0, having finished
        finished = finished or process.returncode == 0
        outcome = "finished first" if finished else f"exit {process.returncode}"
        outcomes.append(f"{sent.name} at {moment:.1f} s: {outcome}")
        # one line, not a traceback, except for a SIGINT that lands while Python is still importing
        # chaosgym (before its command installs the handler): Python's own KeyboardInterrupt report
        during_import = "KeyboardInterrupt" in stderr and " in main\n" not in stderr
        assert "Traceback" not in stderr or sent == signal.SIGKILL or during_import, stderr[-2000:]
    _run(command + (resume_flag if started(out) else []), env=env)
    return outcomes


def test_20_training_runs_killed_at_random_moments_end_as_the_uninterrupted_run(tmp_path):
    """20 runs, each killed once (SIGKILL and SIGINT in turn) at a random moment of its start-up,
    compile, training or checkpoint writes, then resumed: each ends as the uninterrupted run."""
    command = CHAOSGYM + ["train", "--task", "ChaosCartPole-v0", "--task-kwargs", "physics=equations",
                          "--agent", "full", "--horizon", "20", "--batch-size", "4", "--updates", "3000",
                          "--eval-every", "500", "--eval-episodes", "4", "--checkpoint-every", "25",
                          "--no-progress", "--out"]
    _run(command + [str(tmp_path / "cold")])  # fills the caches: the kills are timed on warm starts
    whole = _run(command + [str(tmp_path / "whole")])
    want = _rows(tmp_path / "whole" / "metrics.csv")
    want_params = load_checkpoint(tmp_path / "whole")["params"]
    outcomes = []
    for run in range(20):
        interrupted = tmp_path / f"killed{run}"
        outcomes += _killed_then_finished(command + [str(interrupted)], interrupted, kills=1, seed=run,
                                          whole=whole, resume_flag=["--resume"], first_signal=run,
                                          started=lambda out: (out / "config.json").exists())
        killed = _rows(interrupted / "metrics.csv")
        assert [int(r["update"]) for r in killed] == list(range(3001)), run  # none lost or repeated
        assert killed == want, run
        params = load_checkpoint(interrupted)["params"]
        for got, expected in zip(jax.tree.leaves(params), jax.tree.leaves(want_params), strict=True):
            np.testing.assert_array_equal(got, expected)
        assert killed[-1]["eval_score"] == want[-1]["eval_score"] != ""
    print("kills:", outcomes)
    assert sum("exit" in o for o in outcomes) >= 15  # most kills hit a live process


def test_a_reproduction_killed_at_random_moments_ends_as_the_uninterrupted_one(tmp_path):
    command = CHAOSGYM + ["reproduce", "stable-bptt", "--poles", "1", "--flows", "R,C", "--clip", "NONE,NORM",
                          "--seeds", "2", "--epochs", "40", "--physics", "equations", "--checkpoint-every", "3",
                          "--no-progress", "--out"]
    _run(command + [str(tmp_path / "cold")])
    whole = _run(command + [str(tmp_path / "whole")])
    interrupted = tmp_path / "killed"
    outcomes = _killed_then_finished(command + [str(interrupted)], interrupted, kills=6, seed=1,
                                     whole=whole, resume_flag=[], started=lambda out: True)
    print("kills:", outcomes)
    group = "poles1-RC"
    assert _rows(interrupted / group / "metrics.csv") == _rows(tmp_path / "whole" / group / "metrics.csv")
    assert (interrupted / "results.md").read_text() == (tmp_path / "whole" / "results.md").read_text()


def test_two_training_processes_on_one_folder_one_is_refused_and_nothing_is_corrupted(tmp_path):
    out = tmp_path / "run"
    command = CHAOSGYM + ["train", "--task", "ChaosCartPole-v0", "--task-kwargs", "physics=equations",
                          "--agent", "full", "--horizon", "20", "--batch-size", "4", "--updates", "3000",
                          "--eval-every", "500", "--eval-episodes", "4", "--no-progress", "--out", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    second = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    assert second.returncode == 2 and "being written by another process" in second.stderr, second.stderr[-2000:]
    rows = _rows(out / "metrics.csv")
    assert [int(r["update"]) for r in rows] == list(range(3001))
    whole = tmp_path / "whole"
    _run(command[:-1] + [str(whole)])
    assert rows == _rows(whole / "metrics.csv")


def test_an_sb3_run_killed_at_random_moments_ends_as_the_uninterrupted_run(tmp_path):
    command = CHAOSGYM + ["train", "--task", "ChaosCartPole-v0", "--agent", "ppo", "--env-steps", "12288",
                          "--batch-size", "64", "--n-steps", "128", "--eval-episodes", "2",
                          "--no-progress", "--out"]
    # every process alike: torch's thread count changes its float sums (the last digits of a score)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = _run(command + [str(tmp_path / "whole")], env=env)
    interrupted = tmp_path / "killed"
    # each kill within a third of the run: with the whole span, the first kill could come after the
    # run's end and leave the later ones a finished run
    outcomes = _killed_then_finished(command + [str(interrupted)], interrupted, kills=4, seed=2, whole=whole / 3,
                                     resume_flag=["--resume"], started=lambda out: (out / "config.json").exists(),
                                     env=env)
    print("kills:", outcomes)
    assert sum("exit" in o for o in outcomes) >= 3  # most kills hit a live process
    whole, killed = _rows(tmp_path / "whole" / "metrics.csv"), _rows(interrupted / "metrics.csv")
    assert killed == whole
