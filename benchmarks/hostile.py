"""The hostile user's recount (issue 21): bad inputs at every face and injected faults, on the
installed package. Each case is judged "handled cleanly" or not and printed as one table row: the
case, what is expected, yes/no (with what happened when no), and the test that covers it.

* A bad command line is handled when the command exits non-zero with one error line (argparse's
  usage lines aside), no traceback, and no --out folder written. Commands run in-process
  (`chaosgym.agents.cli.main`), so the programs compiled for one case serve the next.
* A bad Gymnasium call is handled when it raises ValueError, TypeError or a gymnasium error with a
  one-line message (and a closed env refuses); copies and pickles must simply work.
* A fault is survived when the command either recovers (a warning at most; the finished run's
  metrics rows and parameters equal the uninterrupted run's, none lost or repeated) or refuses in
  one line naming the path, and nothing that was saved is lost. Kills, a file-size limit
  (RLIMIT_FSIZE: disk full) and another user's read-only folder need a real process.

    python benchmarks/hostile.py              # about 8 minutes on a loaded 2-core CPU (183 cases)
    python benchmarks/hostile.py --tiny       # a few cases of each kind, for tests/test_benchmarks.py

Exit status 1 when any case is not handled. Every case guards itself with a time limit: a bad value
that is accepted and starts work is reported as "accepted" instead of running on.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import fcntl
import io
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CARTPOLE = "ChaosCartPole-v0"
CLI = [sys.executable, "-m", "chaosgym.agents.cli"]
# a 1-pole cart pole integrated from its equations: compiles in seconds, so an accepted bad value
# costs seconds too
TRAIN = ["train", "--task", CARTPOLE, "--task-kwargs", "physics=equations", "--agent", "full", "--horizon", "5",
         "--batch-size", "2", "--updates", "2", "--eval-every", "1", "--eval-episodes", "1", "--no-progress"]
KILLED = ["train", "--task", CARTPOLE, "--task-kwargs", "physics=equations", "--agent", "full", "--horizon", "20",
          "--batch-size", "4", "--updates", "400", "--eval-every", "100", "--eval-episodes", "2",
          "--checkpoint-every", "20", "--no-progress"]
REPRODUCE = ["reproduce", "stable-bptt", "--poles", "1", "--flows", "R", "--clip", "NONE", "--seeds", "1",
             "--epochs", "2", "--states", "8", "--physics", "equations", "--no-progress"]
TIMED = {"wall_time"}


@dataclass
class Case:
    kind: str  # "input" or "fault"
    name: str
    expected: str
    check: object  # () -> (handled, what happened)
    test: str = "-"


class Accepted(BaseException):
    """The case's time limit: the bad value was taken and work started."""


def _alarm(signum, frame):
    raise Accepted


@contextlib.contextmanager
def time_limit(seconds: float):
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def cli(argv: list[str], limit: float = 90) -> tuple[int, str]:
    """`chaosgym ARGV` in this process: (exit status, stderr); a traceback's text on an uncaught error."""
    from chaosgym.agents.cli import main

    err = io.StringIO()
    try:
        with time_limit(limit), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, category, *_: err.write(f"{category.__name__}: {message}\n")
            code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # no case sends one: this script was stopped
            raise KeyboardInterrupt(f"hostile.py stopped (exit {code})")
    except Accepted:
        return -1, err.getvalue() + f"\n(accepted: still running after {limit:.0f} s)"
    except BaseException as error:  # noqa: BLE001 (the point: anything uncaught is a finding)
        import traceback

        return -2, err.getvalue() + "Traceback (uncaught):\n" + "".join(traceback.format_exception(error))
    return code or 0, err.getvalue()


def _error_lines(stderr: str) -> list[str]:
    # argparse's usage block (its first line and indented continuations) is not the error
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(("usage:", " "))]


def refused(argv: list[str], out: Path | None = None, contains: str = "", limit: float = 90):
    """A check: the command exits non-zero with one error line (containing `contains`), no
    traceback, and `out` not created."""
    def check():
        existed = out is not None and out.exists()
        code, stderr = cli(argv, limit)
        errors = _error_lines(stderr)
        problems = []
        if code == 0:
            problems.append("accepted (exit 0)")
        elif code == -1:
            problems.append("accepted: still running")
        if "Traceback" in stderr:
            problems.append("traceback: " + stderr.strip().splitlines()[-1][:120])
        elif code != 0 and len(errors) != 1:
            problems.append(f"{len(errors)} error lines: " + " | ".join(errors)[:160])
        if contains and contains not in stderr:
            problems.append(f"no {contains!r} in: " + " | ".join(errors)[:120])
        if out is not None and not existed and out.exists():
            problems.append(f"wrote {out.name}/")
        return (not problems, "; ".join(problems) or (errors[-1][:110] if errors else ""))
    return check


def raises(call, kinds: tuple = (), contains: str = "", limit: float = 60):
    """A check: `call()` raises one of `kinds` (ValueError, TypeError, gymnasium's errors) with a
    one-line message."""
    import gymnasium

    kinds = kinds or (ValueError, TypeError, gymnasium.error.Error)

    def check():
        try:
            with time_limit(limit):
                call()
        except Accepted:
            return False, f"accepted: still running after {limit:.0f} s"
        except kinds as error:
            message = str(error)
            if "\n" in message.strip():
                return False, f"{type(error).__name__} over {message.count(chr(10)) + 1} lines"
            if contains and contains not in message:
                return False, f"{type(error).__name__} without {contains!r}: {message[:100]}"
            return True, f"{type(error).__name__}: {message[:100]}"
        except Exception as error:  # noqa: BLE001
            return False, f"{type(error).__name__}: {str(error)[:110]}"
        return False, "accepted"
    return check


def works(call, limit: float = 120):
    def check():
        try:
            with time_limit(limit):
                note = call()
        except Accepted:
            return False, "still running"
        except Exception as error:  # noqa: BLE001
            return False, f"{type(error).__name__}: {str(error)[:110]}"
        return True, note or "works"
    return check


# ---- bad command lines --------------------------------------------------------------------------

def input_cases(work: Path) -> list[Case]:
    # each refused command's --out: a folder of its own, which must not exist afterwards
    fresh = (work / f"never{n}" for n in range(10**6))
    new = next(fresh)
    afile = work / "afile"
    afile.write_text("x")
    train = TRAIN + ["--out", str(new)]
    sb3 = ["train", "--task", CARTPOLE, "--agent", "ppo", "--env-steps", "64", "--eval-episodes", "1", "--no-progress",
           "--out", str(new)]
    cases = []

    def add(name, argv, test, out=new, contains="", expected="refused in one line, nothing written"):
        if out == new:  # a folder of its own: one case accepting a value must not change the next one's
            out = next(fresh)
            argv = [str(out) if word == str(new) else word for word in argv]
        cases.append(Case("input", name, expected, refused(argv, out, contains), test))

    t_flags, t_cli, t_train = "test_flags::test_bad_values_get_an_error...", "test_cli", "test_train::test_cli_reports_bad_input_clearly"
    for flag, values in {"--updates": ["0", "-1", "nan", "1e9", "1.5"], "--batch-size": ["0", "-3", "10000000000000"],
                         "--horizon": ["0", "1000000000"], "--learning-rate": ["nan", "inf", "-1", "0"],
                         "--hidden": ["8,,8", "100000000,100000000", "0", "-5", "abc", ""],
                         "--eval-episodes": ["0", "1000000000"], "--eval-every": ["0"], "--eval-seed": ["-1"],
                         "--checkpoint-every": ["0"], "--seed": ["x"], "--clip-norm": ["-1", "nan"],
                         "--clip-value": ["inf"], "--policy": ["nosuch"], "--objective": ["nosuch"]}.items():
        for value in values:
            huge = value in ("10000000000000", "1000000000", "100000000,100000000")
            add(f"train {flag} {value!r}", _with(train, flag, value),
                "test_cli::test_sizes_the_machine_cannot_hold..." if huge else t_flags)
    for name, extra, test in [
        ("train --task NoSuch-v0", ["--task", "NoSuch-v0"], t_train),
        ("train --task-kwargs nosuch=1", ["--task-kwargs", "nosuch=1"], t_train),
        ("train --task-kwargs physics=warp", ["--task-kwargs", "physics=warp"], t_train),
        ("train --task-kwargs '=='", ["--task-kwargs", "=="], t_train),
        ("train --task-kwargs num_poles=0", ["--task-kwargs", "physics=equations,num_poles=0"], "test_tasks"),
        ("train --agent nosuch", ["--agent", "nosuch"], t_flags),
        ("train --sb3 gamma=0.9 with full", ["--sb3", "gamma=0.9"], "test_cli::test_flags_the_agent_does_not_read..."),
        ("train --es-sigma 0.1 with full", ["--es-sigma", "0.1"], "test_cli::test_flags_the_agent_does_not_read..."),
        ("train --truncation 3 with full", ["--truncation", "3"], "test_cli::test_flags_the_agent_does_not_read..."),
        ("train --agent truncated --truncation 0", ["--agent", "truncated", "--truncation", "0"], t_flags),
        ("train --agent es --es-pairs 0", ["--agent", "es", "--es-pairs", "0"], t_flags),
        ("train --agent es --es-sigma nan", ["--agent", "es", "--es-sigma", "nan"], t_flags),
        ("train --update 2 (a prefix)", ["--update", "2"], "test_cli::test_no_prefix_matching..."),
        ("train --updatez 2 (misspelled)", ["--updatez", "2"], "test_cli::test_no_prefix_matching..."),
        ("train --resume (folder missing)", ["--resume"], "test_cli::test_resume_of_a_folder_that_does_not_exist..."),
    ]:
        add(name, train + extra, test)
    for name, argv, test in [
        ("train --agent ppo (no --env-steps)", _with(sb3, "--env-steps", None), "test_sb3"),
        ("train --agent ppo --sb3 gamma=2", sb3 + ["--sb3", "gamma=2"], "test_cli::test_sb3_hyperparameters_are_checked"),
        ("train --agent ppo --sb3 n_steps=-1", sb3 + ["--sb3", "n_steps=-1"], "test_cli::test_sb3_hyperparameters_are_checked"),
        ("train --agent ppo --sb3 nosuch=1", sb3 + ["--sb3", "nosuch=1"], "test_cli::test_sb3_hyperparameters_are_checked"),
        ("train --agent ppo --sb3 gamma", sb3 + ["--sb3", "gamma"], "-"),
        ("train --agent ppo --seed -1", sb3 + ["--seed", "-1"], "-"),
        ("train --agent ppo --env-steps 0", _with(sb3, "--env-steps", "0"), "test_flags"),
        ("train --agent ppo --hidden 100000000,100000000", sb3 + ["--hidden", "100000000,100000000"],
         "test_cli::test_sizes_the_machine_cannot_hold..."),
        ("train --agent sac --batch-size 0", _with(sb3, "ppo", "sac") + ["--batch-size", "0"],
         "test_cli::test_errors_name_the_flag_the_user_typed"),
        ("train --agent ppo --horizon 5", sb3 + ["--horizon", "5"], "test_cli::test_flags_the_agent_does_not_read..."),
    ]:
        add(name, argv, test)
    add("train (no --out)", TRAIN, t_flags, out=None)
    add("train --out afile/sub", TRAIN + ["--out", str(afile / "sub")], "test_cli::test_an_unusable_out...",
        out=None, contains=str(afile))
    add("train --out /proc/x", TRAIN + ["--out", "/proc/x"], "test_cli::test_an_unusable_out...", out=None)
    add("train --out ''", TRAIN + ["--out", ""], "-", out=None)
    foreign = work / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    add("train --out <folder of other files>", TRAIN + ["--out", str(foreign)], "test_train::test_run_folders_are_protected",
        out=None, contains="not a chaosgym run")

    compare = ["compare", "--tasks", CARTPOLE, "--agents", "full", "--seeds", "1", "--env-steps", "100",
               "--horizon", "5", "--out", str(new)]
    t_compare = "test_compare::test_bad_budgets_and_names_are_refused..."
    for name, extra in [("--wall-clock inf", ["--wall-clock", "inf"]), ("--wall-clock nan", ["--wall-clock", "nan"]),
                        ("--wall-clock -1", ["--wall-clock", "-1"]), ("--threshold nan", ["--threshold", "nan"]),
                        ("--threshold T=nan", ["--threshold", f"{CARTPOLE}=nan"]),
                        ("--threshold NoSuch-v0=1", ["--threshold", "NoSuch-v0=1"]),
                        ("--agents full,full", ["--agents", "full,full"]), ("--agents nosuch", ["--agents", "nosuch"]),
                        ("--tasks NoSuch-v0", ["--tasks", "NoSuch-v0"]), ("--tasks T:nosuch=1", ["--tasks", f"{CARTPOLE}:nosuch=1"]),
                        ("--seeds 0", ["--seeds", "0"]), ("--env-steps 0", ["--env-steps", "0"]),
                        ("--hidden 100000000,100000000", ["--hidden", "100000000,100000000"]),
                        ("--batch-size 1000000000", ["--batch-size", "1000000000"]),
                        ("--horizon 1000000000", ["--horizon", "1000000000"]),
                        ("--eval-episodes 1000000000", ["--eval-episodes", "1000000000"])]:
        add(f"compare {name}", compare + extra, t_compare)
    add("compare --out afile/sub", compare + ["--out", str(afile / "sub")], "test_cli::test_an_unusable_out...", out=None)

    reproduce = REPRODUCE + ["--out", str(new)]
    t_reproduce = "test_reproduce::test_command_line"
    for flag, value in [("--poles", "0"), ("--poles", "9"), ("--poles", "1,,2"), ("--flows", "X"), ("--clip", "BAD"),
                        ("--seeds", "0"), ("--epochs", "0"), ("--epochs", "-1"), ("--states", "0"),
                        ("--states", "1000000000"), ("--physics", "warp"), ("--checkpoint-every", "0"),
                        ("--adam", "sgd")]:
        add(f"reproduce {flag} {value}", _with(reproduce, flag, value), t_reproduce)
    add("reproduce --report-only --out NEW", reproduce + ["--report-only"],
        "test_reproduce::test_report_only_on_a_folder_without_epochs_writes_nothing")
    add("reproduce nosuch-paper", ["reproduce", "nosuch", "--out", str(new)], t_reproduce)

    add("render --run <not a run>", ["render", "--run", str(foreign)],
        "test_render::test_render_rejects_a_folder_without_a_run", out=None)
    add("render --run <missing>", ["render", "--run", str(work / "missing")], "test_render", out=None)
    run = work / "run"  # a real run, made by the first render case, so that each bad flag is what is refused
    render = ["render", "--run", str(run), "--out", str(work / "never.gif")]
    for flag, value in [("--width", "0"), ("--height", "-1"), ("--width", "100000"), ("--fps", "0"),
                        ("--fps", "nan"), ("--max-steps", "0"), ("--seed", "-1")]:
        check = refused(render + [flag, value], work / "never.gif")
        cases.append(Case("input", f"render {flag} {value}", "refused in one line, nothing written",
                          lambda check=check: (run.exists() or cli(TRAIN + ["--out", str(run)]), check())[1],
                          "test_render"))

    diagnose = ["diagnose", "--task", CARTPOLE, "--what", "lyapunov", "--num-states", "2", "--lyapunov-steps", "5",
                "--no-progress", "--out", str(new)]
    t_diag = "test_flags::test_bad_values_get_an_error..."
    for flag, value in [("--task", "NoSuch-v0"), ("--what", "nosuch"), ("--horizons", "0"), ("--num-states", "0"),
                        ("--es-sigma", "nan"), ("--weight-scales", "nan"), ("--landscape-points", "0"),
                        ("--lyapunov-steps", "-1"), ("--modes", "nosuch"), ("--estimators", "nosuch"),
                        ("--start-qpos", "1,2,3,4,5,6,7"), ("--chunk", "0")]:
        add(f"diagnose {flag} {value}", _with(diagnose, flag, value), t_diag)
    empty, garbage = work / "empty.pkl", work / "garbage.pkl"
    empty.write_bytes(b"")
    garbage.write_bytes(b"not a pickle at all")
    for name, path in [("empty", empty), ("garbage", garbage)]:
        add(f"diagnose --policy <{name} checkpoint>", diagnose + ["--policy", str(path)],
            "test_cli::test_diagnose_with_an_unreadable_checkpoint_is_one_line")

    for name, argv in [("demo --steps -1", ["demo", "--steps", "-1"]), ("demo --steps 0", ["demo", "--steps", "0"]),
                       ("demo --num-envs 0", ["demo", "--num-envs", "0"]),
                       ("demo --num-envs 1000000000000", ["demo", "--num-envs", "1000000000000", "--steps", "1"]),
                       ("demo --seed -1", ["demo", "--seed", "-1", "--steps", "1"])]:
        add(name, argv, "test_cli::test_demo_and_diagnose_refuse_bad_counts", out=None)
    add("chaosgym (no command)", [], "test_flags", out=None)
    add("chaosgym nosuch", ["nosuch"], "test_flags", out=None)
    return cases


def _with(argv: list[str], flag: str, value: str | None) -> list[str]:
    """`argv` with `flag`'s value replaced (or the flag added); without the flag for a None value.
    A `flag` that is a value itself ("ppo") is replaced by `value`."""
    argv = list(argv)
    if flag in argv and not flag.startswith("-"):
        argv[argv.index(flag)] = value
    elif flag in argv and value is None:
        del argv[argv.index(flag):argv.index(flag) + 2]
    elif flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


# ---- bad Gymnasium calls ------------------------------------------------------------------------

def env_cases() -> list[Case]:
    import gymnasium

    import chaosgym  # noqa: F401  (registers the ids)

    def fresh(**kwargs):
        env = gymnasium.make(CARTPOLE, **kwargs)
        env.reset(seed=0)
        return env

    def closed():
        env = fresh()
        env.close()
        return env

    def vector(num_envs=2):
        env = gymnasium.make_vec(CARTPOLE, num_envs=num_envs, vectorization_mode="vector_entry_point")
        env.reset(seed=0)
        return env

    t_gym, t_rob = "test_gym::test_single_env_rejects_bad_actions...", "test_gym_robustness"
    cases = []

    def add(name, call, test, expected="raises a one-line ValueError/TypeError", **kw):
        cases.append(Case("input", name, expected, raises(call, **kw), test))

    for name, action in [("shape (2,)", np.zeros(2, np.float32)), ("shape (1, 1)", np.zeros((1, 1), np.float32)),
                         ("shape ()", np.float32(0)),
                         ("strings", np.array(["a"])), ("None", None), ("NaN", np.array([np.nan], np.float32)),
                         ("inf", np.array([np.inf], np.float32)), ("a dict", {"a": 1})]:
        add(f"env.step(action {name})", lambda a=action: fresh().step(a), t_gym)
    cases.append(Case("input", "env.step(action int dtype)", "taken as a number (cast to float32)",
                      works(lambda: fresh().step(np.zeros(1, np.int64)) and "stepped"), t_gym))
    add("env.step before reset", lambda: gymnasium.make(CARTPOLE).step(np.zeros(1, np.float32)), t_gym,
        kinds=(ValueError, TypeError, RuntimeError, gymnasium.error.Error))
    for name, kwargs in [("seed=-1", {"seed": -1}), ("seed=1.5", {"seed": 1.5}), ("seed='a'", {"seed": "a"}),
                         ("options=5", {"options": 5}), ("options={'nosuch': 1}", {"options": {"nosuch": 1}})]:
        add(f"env.reset({name})", lambda k=kwargs: fresh().reset(**k), f"{t_rob}::test_single_env_reset_options...")
    closed_kinds = (Exception,)  # any one-line refusal
    add("closed env step", lambda: closed().step(np.zeros(1, np.float32)), f"{t_rob}::test_a_closed_env_refuses...",
        kinds=closed_kinds, expected="raises")
    add("closed env reset", lambda: closed().reset(seed=0), f"{t_rob}::test_a_closed_env_refuses...",
        kinds=closed_kinds, expected="raises")

    def closed_vector_step():
        env = vector()
        env.close()
        env.step(np.zeros((2, 1), np.float32))
    add("closed vector env step", closed_vector_step, f"{t_rob}::test_a_closed_vector_env_refuses...",
        kinds=closed_kinds, expected="raises")
    add("gymnasium.make('NoSuch-v0')", lambda: gymnasium.make("NoSuch-v0"), "test_gym")
    add("gymnasium.make(kwarg nosuch=1)", lambda: gymnasium.make(CARTPOLE, nosuch=1),
        "test_gym::test_invalid_kwargs_through_gymnasium_say_what_is_valid")
    add("gymnasium.make(render_mode='nosuch')", lambda: gymnasium.make(CARTPOLE, render_mode="nosuch"), "test_gym")
    cases.append(Case("input", "gymnasium.make(max_episode_steps=-1)", "no time limit (Gymnasium's convention)",
                      works(lambda: fresh(max_episode_steps=-1).spec.max_episode_steps is None and "no limit"),
                      "-"))
    for value in (0, 1.5):
        add(f"gymnasium.make(max_episode_steps={value})", lambda v=value: fresh(max_episode_steps=v),
            "test_robustness::test_a_time_limit_must_be_a_positive_integer")
    add("gymnasium.make(width=0)", lambda: gymnasium.make(CARTPOLE, render_mode="rgb_array", width=0),
        "test_robustness::test_a_bad_render_size...")
    add("chaosgym.make('NoSuch-v0')", lambda: chaosgym.make("NoSuch-v0"), "test_tasks")
    add("chaosgym.make(num_poles=0)", lambda: chaosgym.make(CARTPOLE, num_poles=0), "test_tasks")
    for value in (0, -1, 1.5, 10**9):
        add(f"make_vec(num_envs={value})", lambda v=value: vector(v),
            f"{t_rob}::test_a_batch_larger_than_the_machine..." if value == 10**9 else "test_robustness")
    add("vector step, batch shape (3, 1) for 2 envs", lambda: vector().step(np.zeros((3, 1), np.float32)),
        "test_gym::test_vector_env_rejects_bad_actions...")
    add("vector step, NaN in one env", lambda: vector().step(np.array([[0.0], [np.nan]], np.float32)),
        "test_gym::test_vector_env_rejects_bad_actions...")
    add("vector reset(seed=[0]) for 2 envs", lambda: vector().reset(seed=[0]),
        "test_robustness::test_vector_reset_rejects_bad_seeds_and_options")
    add("vector reset(options={'nosuch': 1})", lambda: vector().reset(options={"nosuch": 1}),
        f"{t_rob}::test_vector_env_unknown_options...")

    def sb3_huge():
        from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv
        ChaosSB3VecEnv(CARTPOLE, 10**9)
    add("ChaosSB3VecEnv(num_envs=10**9)", sb3_huge, f"{t_rob}::test_sb3s_vector_env_refuses_a_batch...")

    def copies():
        env = fresh()
        env.step(np.full(1, 0.3, np.float32))
        twins = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
        import cloudpickle
        twins.append(cloudpickle.loads(cloudpickle.dumps(env)))
        want = env.step(np.full(1, -0.2, np.float32))[0]
        for twin in twins:
            np.testing.assert_array_equal(twin.step(np.full(1, -0.2, np.float32))[0], want)
        return "deepcopy, pickle, cloudpickle step on equal"
    cases.append(Case("input", "deepcopy/pickle/cloudpickle a live env", "copies step on as the original",
                      works(copies), f"{t_rob}::test_a_copy_of_a_live_env_steps_on..."))
    return cases


# ---- faults in run folders ----------------------------------------------------------------------

def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMED} for row in csv.DictReader(f)]


def params(folder: Path):
    return pickle.loads((folder / "checkpoint.pkl").read_bytes())["params"]


def same_params(a, b) -> bool:
    import jax

    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def fault_cases(work: Path) -> list[Case]:
    """Each fault on a copy of a finished tiny run, then `--resume` to a larger budget: it must
    end as the uninterrupted run with that budget (or refuse in one line where nothing can be
    recovered, keeping what was saved)."""
    base, whole = work / "base", work / "whole"
    small = TRAIN + ["--updates", "4", "--checkpoint-every", "2"]
    more = TRAIN + ["--updates", "6", "--checkpoint-every", "2"]
    assert cli(small + ["--out", str(base)])[0] == 0, "the tiny run failed"
    assert cli(more + ["--out", str(whole)])[0] == 0, "the uninterrupted run failed"
    want_rows, want_params = rows(whole / "metrics.csv"), params(whole)
    copies = iter(range(1000))

    def damaged(damage) -> Path:
        folder = work / f"fault{next(copies)}"
        shutil.copytree(base, folder)
        damage(folder)
        return folder

    def recovers(damage, or_refuses=False):
        def check():
            folder = damaged(damage)
            code, stderr = cli(more + ["--out", str(folder), "--resume"])
            if or_refuses and code == 2 and len(_error_lines(stderr)) == 1 and "Traceback" not in stderr:
                return True, _error_lines(stderr)[0][:110]
            if code != 0 or "Traceback" in stderr:
                return False, f"exit {code}: " + " | ".join(_error_lines(stderr))[-140:]
            got = rows(folder / "metrics.csv")
            if got != want_rows:
                return False, f"metrics differ: updates {[r['update'] for r in got]}"
            if not same_params(params(folder), want_params):
                return False, "parameters differ"
            warned = [line for line in _error_lines(stderr) if "Warning" in line]
            return True, (warned[0][:110] if warned else "resumed, equal")
        return check

    def refuses(damage, contains=""):
        def check():
            folder = damaged(damage)
            saved = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
            ok, note = refused(more + ["--out", str(folder), "--resume"], None, contains)()
            kept = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
            if kept != saved:
                return False, f"changed {sorted(set(saved) ^ set(kept)) or 'a file'}; {note}"
            return ok, note
        return check

    def append(text):
        return lambda folder: open(folder / "metrics.csv", "a").write(text)

    def write(name, data):
        return lambda folder: (folder / name).write_bytes(data)

    def config_folder(folder):
        (folder / "config.json").unlink()
        (folder / "config.json").mkdir()

    def truncate(name, keep):
        return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:keep])

    t_run = "test_train::test_a_corrupt_checkpoint_falls_back..."
    cases = [
        Case("fault", "torn metrics row (no newline)", "dropped with a warning, resume equal",
             recovers(append("5,60,,1.23")), "test_train / RunFolder.metrics"),
        Case("fault", "short metrics row with newline", "dropped with a warning, resume equal",
             recovers(append("5,60,\n")), "test_train / RunFolder.metrics"),
        Case("fault", "zero-byte checkpoint.pkl", "falls back to checkpoint.prev.pkl, resume equal",
             recovers(write("checkpoint.pkl", b"")), t_run),
        Case("fault", "garbage checkpoint.pkl", "falls back to checkpoint.prev.pkl, resume equal",
             recovers(write("checkpoint.pkl", b"\x80\x04garbage")), t_run),
        Case("fault", "both checkpoints garbage", "one line naming both files, nothing changed",
             refuses(lambda f: (write("checkpoint.pkl", b"x")(f), write("checkpoint.prev.pkl", b"y")(f)), "checkpoint"),
             t_run),
        Case("fault", "config.json is a folder", "one line naming config.json", refuses(config_folder, "config.json"),
             "test_cli::test_an_unusable_out..."),
        Case("fault", "config.json truncated", "one line naming config.json",
             refuses(truncate("config.json", 20), "config.json"), "test_train::test_run_folders_are_protected"),
        Case("fault", "config.json removed", "refused (folder holds a run's files but no config)",
             refuses(lambda f: (f / "config.json").unlink()), "-"),
        Case("fault", "metrics.csv removed", "resume equal from the checkpoint, or one line",
             recovers(lambda f: (f / "metrics.csv").unlink(), or_refuses=True), "-"),
        Case("fault", "config.json of another agent", "one line: the config differs",
             refuses(lambda f: (f / "config.json").write_text(
                 (f / "config.json").read_text().replace('"full"', '"modified"')), "cannot resume"),
             "test_train::test_a_checkpoint_of_another_config_is_refused"),
    ]

    def locked():
        folder = damaged(lambda f: None)
        with open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return refused(more + ["--out", str(folder), "--resume"], None, "another process")()
    cases.append(Case("fault", "second writer while the folder is locked", "one line: being written by another process",
                      locked, "test_kill_resume::test_two_training_processes... (slow)"))

    # reproduce's folders
    rbase = work / "rbase"
    rmore = [*REPRODUCE[:REPRODUCE.index("--epochs") + 1], "3", *REPRODUCE[REPRODUCE.index("--epochs") + 2:]]
    made = cli(REPRODUCE + ["--out", str(rbase)])
    if made[0] == 0:
        rwhole = work / "rwhole"
        cli(rmore + ["--out", str(rwhole)])
        group = next(p.name for p in rbase.iterdir() if p.is_dir())

        def rdamaged(damage):
            def check():
                folder = work / f"rfault{next(copies)}"
                shutil.copytree(rbase, folder)
                damage(folder / group)
                code, stderr = cli(rmore + ["--out", str(folder)])
                errors = _error_lines(stderr)
                if "Traceback" in stderr or code not in (0, 2) or (code == 2 and len(errors) != 1):
                    return False, f"exit {code}: " + " | ".join(errors)[-140:]
                if code == 0 and rows(folder / group / "metrics.csv") != rows(rwhole / group / "metrics.csv"):
                    return False, "metrics differ from the uninterrupted reproduction"
                return True, "recovered, equal" if code == 0 else errors[-1][:110]
            return check
        for name, damage in [("torn epochs row", lambda g: open(g / "metrics.csv", "a").write("1,R,NO")),
                             ("zero-byte checkpoint.pkl", lambda g: (g / "checkpoint.pkl").write_bytes(b"")),
                             ("truncated config.json", truncate("config.json", 10))]:
            cases.append(Case("fault", f"reproduce: {name}", "recovers equal, or one line naming the file",
                              rdamaged(damage), "test_reproduce / test_kill_resume (slow)"))
    else:
        cases.append(Case("fault", "reproduce: tiny run", "runs", lambda: (False, f"exit {made[0]}: {made[1][-150:]}")))

    # real processes: kills, a file-size limit, another user's read-only folder
    long_whole = work / "long_whole"
    cases.append(Case("fault", "(reference: 400-update run)", "runs", works(lambda: _reference(long_whole)), "-"))
    for sent in (signal.SIGKILL, signal.SIGINT, signal.SIGTERM):
        cases.append(Case("fault", f"{sent.name} mid-training, then --resume", "resume equal: rows, parameters, score",
                          _killed(work / f"killed_{sent.name}", long_whole, sent),
                          "test_kill_resume::test_20_training_runs... (slow)"))
    cases.append(Case("fault", "disk full (RLIMIT_FSIZE) mid-training", "one line, no torn row; resume equal",
                      _disk_full(work / "disk_full", long_whole), "test_train / test_robustness (write_atomic)"))
    if shutil.which("chattr"):
        cases.append(Case("fault", "read-only run folder (chattr +i)", "one line naming the path, nothing changed",
                          _read_only(work / "read_only", base), "-"))
    cases.append(Case("fault", "compilation cache path is a file", "a warning, the env steps",
                      _cache_is_a_file(work), "test_robustness::test_an_unwritable_trace_cache..."))
    cases.append(Case("fault", "no HOME and no passwd entry", "cache off, the env steps",
                      _no_home(work), "test_home_and_cache"))
    cases.append(Case("fault", "SIGINT while `chaosgym` imports", "one line, exit 130",
                      _sigint_during_import(work), "-"))
    return cases


def _reference(folder: Path) -> str:
    code, stderr = cli(KILLED + ["--out", str(folder)], limit=600)
    assert code == 0, stderr[-300:]
    return f"{len(rows(folder / 'metrics.csv'))} rows"


def _process(argv: list[str], **kwargs) -> subprocess.Popen:
    # in a folder of its own: `python -m` puts the current folder first on sys.path
    return subprocess.Popen(CLI + argv, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for_rows(path: Path, count: int, process: subprocess.Popen, seconds: float = 300) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        if path.exists() and path.read_text().count("\n") > count:
            return True
        time.sleep(0.05)
    return False


def _ends_as(folder: Path, whole: Path) -> tuple[bool, str]:
    code, stderr = cli(KILLED + ["--out", str(folder), "--resume"], limit=600)
    if code != 0:
        return False, f"resume exit {code}: " + " | ".join(_error_lines(stderr))[-120:]
    got, want = rows(folder / "metrics.csv"), rows(whole / "metrics.csv")
    if got != want:
        return False, f"{len(got)} rows against {len(want)}, or values differ"
    if not same_params(params(folder), params(whole)):
        return False, "parameters differ"
    return True, "resumed equal"


def _killed(folder: Path, whole: Path, sent: signal.Signals):
    def check():
        process = _process(KILLED + ["--out", str(folder)])
        if not _wait_for_rows(folder / "metrics.csv", 150, process):
            process.kill()
            return False, "finished or stalled before 150 rows"
        process.send_signal(sent)
        _, stderr = process.communicate(timeout=120)
        if "Traceback" in stderr:
            return False, "traceback: " + stderr.strip().splitlines()[-1][:100]
        if sent != signal.SIGKILL and process.returncode != 128 + sent:
            return False, f"exit {process.returncode}, not {128 + sent}"
        ok, note = _ends_as(folder, whole)
        return ok, f"exit {process.returncode}; {note}"
    return check


def _disk_full(folder: Path, whole: Path):
    def check():
        limit = 12_000  # bytes per file: metrics.csv reaches it after about 100 rows, a checkpoint stays below
        process = _process(KILLED + ["--out", str(folder)],
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
        _, stderr = process.communicate(timeout=600)
        errors = _error_lines(stderr)
        if process.returncode == 0:
            return False, "never hit the limit"
        if "Traceback" in stderr or len(errors) != 1:
            return False, f"exit {process.returncode}: " + " | ".join(errors)[-140:]
        text = (folder / "metrics.csv").read_text()
        if not text.endswith("\n"):
            return False, "a torn row was left"
        ok, note = _ends_as(folder, whole)
        return ok, f"{errors[0][:70]}; {note}"
    return check


def _read_only(folder: Path, base: Path):
    """Immutable (chattr +i), which holds for root too, unlike the folder's permissions."""
    def check():
        shutil.copytree(base, folder)
        paths = [str(p) for p in folder.iterdir()] + [str(folder)]
        subprocess.run(["chattr", "+i", *paths], check=True, capture_output=True)
        try:
            check_ = refused(TRAIN + ["--updates", "6", "--checkpoint-every", "2", "--out", str(folder), "--resume"],
                             None, str(folder))
            return check_()
        finally:
            subprocess.run(["chattr", "-i", *paths], check=True, capture_output=True)
    return check


STEP = ("import gymnasium, chaosgym; env = gymnasium.make('ChaosCartPole-v0'); env.reset(seed=0); "
        "print(env.step(env.action_space.sample())[1])")


def _fresh_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                          env=env, timeout=300)


def _cache_is_a_file(work: Path):
    def check():
        path = work / "cache-file"
        path.write_text("not a folder")
        result = _fresh_python(STEP, {**os.environ, "CHAOSGYM_CACHE_DIR": str(path)})
        ok = result.returncode == 0 and "Traceback" not in result.stderr
        return ok, f"exit {result.returncode}: " + " | ".join(_error_lines(result.stderr))[-120:]
    return check


def _no_home(work: Path):
    def check():
        code = "import pwd\ndef no(uid): raise KeyError(uid)\npwd.getpwuid = no\n" + STEP.replace("; ", "\n")
        env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME", "CHAOSGYM_CACHE_DIR")}
        result = _fresh_python(code, env)
        return result.returncode == 0, f"exit {result.returncode} " + result.stderr.strip()[-100:]
    return check


def _sigint_during_import(work: Path):
    """A SIGINT at several moments of the first second, while `chaosgym.agents.cli` may still be
    importing (the console script imports it before `main` installs its handler)."""
    def check():
        seen = []
        for delay in (0.05, 0.1, 0.2, 0.3, 0.45):
            process = subprocess.Popen([sys.executable, "-c", "from chaosgym.agents.cli import main; import sys; "
                                        "sys.exit(main(['demo', '--steps', '1', '--num-envs', '1']))"],
                                       cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True)
            time.sleep(delay)
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=120)
            clean = "Traceback" not in stderr and process.returncode == 130
            seen.append(f"{delay} s: " + ("130" if clean else "traceback" if "Traceback" in stderr
                                          else f"exit {process.returncode}"))
        return all(note.endswith(": 130") for note in seen), ", ".join(seen)
    return check


# ---- the table ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a few cases of each kind (seconds)")
    parser.add_argument("--only", choices=["input", "env", "fault"], help="one group of cases")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        work = Path(tmp)
        groups = {"input": lambda: input_cases(work), "env": env_cases, "fault": lambda: fault_cases(work)}
        if args.tiny:  # argument errors and action checks only: no compile
            groups = {"input": lambda: input_cases(work)[:6], "env": lambda: env_cases()[:4]}
        results = []
        print("| kind | case | expected | handled | what happened | covered by |\n|---|---|---|---|---|---|")
        for group, build in groups.items():
            if args.only and group != args.only:
                continue
            for case in build():
                start = time.perf_counter()
                try:
                    handled, note = case.check()
                except Exception as error:  # noqa: BLE001 (the harness itself: reported, not fatal)
                    handled, note = False, f"harness error {type(error).__name__}: {error}"
                results.append((case, handled))
                print(f"| {case.kind} | {case.name} | {case.expected} | {'yes' if handled else '**no**'} | "
                      f"{note.replace('|', '/')} ({time.perf_counter() - start:.1f} s) | {case.test} |", flush=True)
    for kind in ("input", "fault"):
        done = [handled for case, handled in results if case.kind == kind]
        if done:
            print(f"\n{kind}s: {sum(done)} of {len(done)} handled cleanly ({100 * sum(done) / len(done):.0f}%)")
    failed = [case.name for case, handled in results if not handled]
    if failed:
        print("not handled: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
