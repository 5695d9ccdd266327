"""The hostile user's cases (issues 21, 31 and 32): bad inputs at every face of chaosgym (the
`chaosgym` command line, Gymnasium, the functional and agents' Python API) and injected faults
(kills, a full disk, torn and edited files, planted pickles and links, locked and read-only folders).
Each case is judged "handled cleanly" (an input) or "survived" (a fault) by the rules below.
tests/test_hostile.py runs each case as a test; run this module for the recount as one table:

    python tests/hostile_cases.py            # every case: 5-10 minutes on a loaded 2-core CPU
    python tests/hostile_cases.py --tiny     # the fast tier's cases (seconds)
    python tests/hostile_cases.py --only fault

It ends with "bad inputs: H of N handled cleanly" and "faults: S of F survived"; its exit status is 1
when a case not known to fail (`Case.known`) is not handled, or a known one is.

* A bad command line is handled when the command exits non-zero with one error line (argparse's
  usage lines aside) that names the flag (or what the case says), no traceback, and no --out written.
  Commands run in-process (`chaosgym.agents.cli.main`), so the programs compiled for one case serve
  the next.
* A bad Python call is handled when it raises ValueError, TypeError or a gymnasium error with a
  one-line message (a closed env: any one-line error); copies and pickles must simply work.
* A fault is survived when the command either recovers (a warning at most; the finished run's
  metrics rows and checkpoint arrays equal the uninterrupted run's, none lost or repeated) or
  refuses in one line naming the path, and nothing that was saved is lost; a planted pickle never
  runs and a link's target is never written. Kills, a file-size limit (RLIMIT_FSIZE: a full disk),
  another user's read-only folder and the trace cache need a real process.

Every case guards itself with a time limit: a bad value that is accepted and starts work is
reported as "accepted" instead of running on. The runs cases start from (a tiny training run, a
reproduction, an SB3 run, ...) are made once, on first use, in `Work`'s folder.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import fcntl
import functools
import io
import itertools
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

CARTPOLE = "ChaosCartPole-v0"
HUGE_SEED = str(2**70)
CLI = [sys.executable, "-m", "chaosgym.agents.cli"]
# a 1-pole cart pole integrated from its equations: compiles in seconds, so an accepted bad value
# costs seconds too
TRAIN = ["train", "--task", CARTPOLE, "--task-kwargs", "physics=equations", "--agent", "full", "--horizon", "5",
         "--batch-size", "2", "--updates", "2", "--eval-every", "1", "--eval-episodes", "1", "--no-progress"]
# the run the run-folder faults start from, and the budget they resume to (each flag given once)
SMALL = [*TRAIN[:TRAIN.index("--updates") + 1], "4", *TRAIN[TRAIN.index("--updates") + 2:], "--checkpoint-every", "2"]
MORE = [*TRAIN[:TRAIN.index("--updates") + 1], "6", *TRAIN[TRAIN.index("--updates") + 2:], "--checkpoint-every", "2"]
SB3 = ["train", "--task", CARTPOLE, "--task-kwargs", "physics=equations", "--agent", "ppo", "--env-steps", "64",
       "--eval-episodes", "1", "--num-envs", "2", "--n-steps", "16", "--batch-size", "16", "--n-epochs", "1",
       "--no-progress"]
# long enough to be killed mid-run; a small network, so that a checkpoint stays below the
# file-size limit of the disk-full case while metrics.csv outgrows it
KILLED = ["train", "--task", CARTPOLE, "--task-kwargs", "physics=equations", "--agent", "full", "--horizon", "20",
          "--batch-size", "4", "--hidden", "8,8", "--updates", "400", "--eval-every", "100", "--eval-episodes", "2",
          "--checkpoint-every", "20", "--no-progress"]
REPRODUCE = ["reproduce", "stable-bptt", "--poles", "1", "--flows", "R", "--clip", "NONE", "--seeds", "1",
             "--epochs", "2", "--states", "8", "--physics", "equations", "--no-progress"]
TIMED = {"wall_time"}  # metrics columns that differ between equal runs


@dataclass(frozen=True)
class Case:
    kind: str  # "input" (a bad input: handled cleanly?) or "fault" (an injected fault: survived?)
    group: str  # "cli", "python" or "fault"
    name: str
    expected: str
    check: Callable[[Work], tuple[bool, str]]  # -> (handled, what happened)
    tiny: bool = False  # in the fast tier (and `--tiny`): well under a few seconds
    known: str = ""  # a known failure: why (tests/test_hostile.py marks it xfail(strict=True))


class Accepted(BaseException):
    """The case's time limit: the bad value was taken and work started."""


class Unsupported(Exception):
    """The machine cannot inject this fault (e.g. no `chattr`): the case is skipped, not judged."""


def _alarm(signum, frame):
    raise Accepted


@contextlib.contextmanager
def time_limit(seconds: float):
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def subprocess_env(**extra: str) -> dict:
    """This process's environment, with the chaosgym it imported first on the path of a child."""
    import chaosgym

    root = str(Path(chaosgym.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


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
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # no case sends one: the harness was stopped
            raise KeyboardInterrupt(f"hostile cases stopped (exit {code})")
    except Accepted:
        return -1, err.getvalue() + f"\n(accepted: still running after {limit:.0f} s)"
    except BaseException as error:  # noqa: BLE001 (the point: anything uncaught is a finding)
        import traceback

        return -2, err.getvalue() + "Traceback (uncaught):\n" + "".join(traceback.format_exception(error))
    return code or 0, err.getvalue()


ANNOUNCEMENT = re.compile(r"^(demo|train|compare|reproduce|render|diagnose|convert-checkpoint): (?!error)")


def _error_lines(stderr: str) -> list[str]:
    # argparse's usage block (its first line and indented continuations) is not the error, nor is a
    # command's announcement of what it is about to do ("diagnose: lyapunov of ..., into OUT")
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(("usage:", " ")) and not ANNOUNCEMENT.match(line)]


def _one_of(text: str, contains: str | tuple[str, ...]) -> bool:
    options = (contains,) if isinstance(contains, str) else contains
    return not options or any(option in text for option in options)


def _listing(folder: Path) -> dict[str, bytes]:
    """A folder's files and their bytes (the lock file aside: a command may create it)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()
            and p.name != ".lock"} if folder.is_dir() else {}


# ---- the shared folder and the runs the cases start from --------------------------------------------

def made_once(build):
    """A `Work` resource built on first use; a failed build is remembered, not tried again per case."""
    name = build.__name__

    @functools.wraps(build)
    def get(self):
        if name not in self._made:
            try:
                self._made[name] = (True, build(self))
            except Exception as error:  # noqa: BLE001
                self._made[name] = (False, RuntimeError(f"could not make {name}: {error}"))
        ok, value = self._made[name]
        if not ok:
            raise value
        return value
    return property(get)


class Work:
    """The cases' folder, with fresh paths and the runs (made on first use) the cases start from.

    Argument lists name them as `{...}` fields: `{new}` is a path no case used (it must not exist
    once the command is done), `{copy_base}` a copy of the tiny run `base` of the case's own,
    `{copy_x64}` of the float64 run; any other field is a `Work` attribute (`{afile}`, `{base}`)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._count = itertools.count()
        self._made = {}

    def path(self, stem: str = "never") -> Path:
        return self.root / f"{stem}{next(self._count)}"

    def copy(self, source: Path, stem: str = "copy") -> Path:
        folder = self.path(stem)
        shutil.copytree(source, folder, symlinks=True)
        return folder

    def made(self, argv: list[str], out: Path, limit: float = 600) -> Path:
        code, stderr = cli(argv + ["--out", str(out)], limit)
        if code != 0:
            raise RuntimeError(f"exit {code}: " + " | ".join(_error_lines(stderr))[-300:])
        return out

    @made_once
    def afile(self) -> Path:
        path = self.root / "afile"
        path.write_text("x")
        return path

    @made_once
    def foreign(self) -> Path:
        """A folder of someone else's files."""
        folder = self.root / "foreign"
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
        return folder

    @made_once
    def empty_file(self) -> Path:
        path = self.root / "empty.pkl"
        path.write_bytes(b"")
        return path

    @made_once
    def garbage_file(self) -> Path:
        path = self.root / "garbage.pkl"
        path.write_bytes(b"not a pickle at all")
        return path

    @made_once
    def base(self) -> Path:
        return self.made(SMALL, self.root / "base")

    @made_once
    def whole(self) -> Path:
        """The uninterrupted run a resumed `base` must equal."""
        return self.made(MORE, self.root / "whole")

    @made_once
    def unreadable_run(self) -> Path:
        """`base` with both checkpoints zero bytes."""
        folder = self.copy(self.base, "unreadable")
        for name in ("checkpoint.npz", "checkpoint.prev.npz"):
            (folder / name).write_bytes(b"")
        return folder

    @made_once
    def x64(self) -> Path:
        """`base` trained in float64 (JAX_ENABLE_X64=1, in a process of its own)."""
        folder = self.root / "x64"
        done = subprocess.run(CLI + SMALL + ["--out", str(folder)], cwd=tempfile.gettempdir(), capture_output=True,
                              text=True, env=subprocess_env(JAX_ENABLE_X64="1"), timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr[-300:]}")
        return folder

    @made_once
    def sb3(self) -> Path:
        return self.made(SB3, self.root / "sb3")

    @made_once
    def long_whole(self) -> Path:
        """The uninterrupted 400-update run the killed ones must equal."""
        return self.made(KILLED, self.root / "long_whole")

    @made_once
    def reproduction(self) -> tuple[Path, Path, str]:
        """A tiny reproduction (2 epochs), the uninterrupted one of 3 epochs, and their group folder."""
        rbase = self.made(REPRODUCE, self.root / "rbase")
        rwhole = self.made(_with(REPRODUCE, "--epochs", "3"), self.root / "rwhole")
        return rbase, rwhole, next(p.name for p in rbase.iterdir() if p.is_dir())

    def fill(self, argv: list[str]) -> tuple[list[str], list[Path], list[Path]]:
        """`argv` with its fields filled: (argv, the `{new}` paths, the folders copied for it)."""
        fields, new, copies = {}, [], []

        class Fields(dict):
            def __missing__(_, key):
                if key == "new":
                    value = self.path()
                    new.append(value)
                elif key.startswith("copy_"):
                    value = self.copy(getattr(self, key[len("copy_"):]))
                    copies.append(value)
                else:
                    value = getattr(self, key)
                fields[key] = value
                return value

        table = Fields()
        filled = [word.format_map(table) if "{" in word else word for word in argv]
        return filled, [Path(word) for word in filled if any(str(p) in word for p in new)], copies


# ---- checks -------------------------------------------------------------------------------------

def refused(argv: list[str], contains: str | tuple[str, ...] = (), limit: float = 90, in_empty_folder: bool = False):
    """A check: `chaosgym ARGV` exits non-zero with one error line (holding one of `contains`), no
    traceback; no `{new}` path created and no copied folder changed (with `in_empty_folder`, run
    in an empty current folder, which must stay empty)."""
    def check(work: Work):
        filled, new, copies = work.fill(argv)
        if in_empty_folder:
            copies.append(work.path("cwd"))
            copies[-1].mkdir()
        before = [_listing(folder) for folder in copies]
        with contextlib.chdir(copies[-1]) if in_empty_folder else contextlib.nullcontext():
            code, stderr = cli(filled, limit)
        errors = _error_lines(stderr)
        problems = []
        if code == 0:
            problems.append("accepted (exit 0)")
        elif code == -1:
            problems.append(f"accepted: still running after {limit:.0f} s")
        if "Traceback" in stderr:
            problems.append("traceback: " + stderr.strip().splitlines()[-1][:120])
        elif code != 0 and len(errors) != 1:
            problems.append(f"{len(errors)} error lines: " + " | ".join(errors)[:160])
        if code not in (0, -1) and not _one_of(stderr, contains):
            problems.append(f"no {contains!r} in: " + " | ".join(errors)[:120])
        problems += [f"wrote {path.name}" for path in new if path.exists() or path.is_symlink()]
        for folder, saved in zip(copies, before):
            kept = _listing(folder) if not (in_empty_folder and folder == copies[-1]) else \
                {p.name: b"" for p in folder.iterdir()}  # the current folder: nothing at all, not even a .lock
            if kept != saved:
                problems.append(f"changed {sorted(set(saved) ^ set(kept)) or 'a file'} in {folder.name}/")
        return not problems, "; ".join(problems) or (errors[-1][:110] if errors else "")
    return check


def raises(call, kinds: tuple = (), contains: str | tuple[str, ...] = (), limit: float = 120):
    """A check: `call()` raises one of `kinds` (ValueError, TypeError, gymnasium's errors) with a
    one-line message holding one of `contains`."""
    def check(work: Work):
        import gymnasium

        try:
            with time_limit(limit):
                call()
        except Accepted:
            return False, f"accepted: still running after {limit:.0f} s"
        except kinds or (ValueError, TypeError, gymnasium.error.Error) as error:
            message = str(error)
            if "\n" in message.strip():
                return False, f"{type(error).__name__} over {message.count(chr(10)) + 1} lines"
            if not _one_of(message, contains):
                return False, f"{type(error).__name__} without {contains!r}: {message[:100]}"
            return True, f"{type(error).__name__}: {message[:100]}"
        except Exception as error:  # noqa: BLE001
            return False, f"{type(error).__name__}: {str(error)[:110]}"
        return False, "accepted"
    return check


def works(call, limit: float = 180):
    """A check: `call()` returns (handled, what happened) within `limit`, or raises (not handled)."""
    def check(work: Work):
        try:
            with time_limit(limit):
                return call()
        except Accepted:
            return False, f"still running after {limit:.0f} s"
        except Exception as error:  # noqa: BLE001
            return False, f"{type(error).__name__}: {str(error)[:110]}"
    return check


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


class Payload:
    """Unpickling it creates `path`: what a hostile pickle would do worse."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _marker(work: Work) -> Path:
    return work.path("payload-ran-")


# ---- bad command lines --------------------------------------------------------------------------

def _shown(value: str) -> str:
    return "2**70" if value == HUGE_SEED else value


def _names(flag: str) -> tuple[str, ...]:
    """What the error of a bad value of `flag` must name: the flag (or its setting's name), or the
    memory the value would need."""
    return flag.lstrip("-"), "needs at least"


def cli_cases() -> list[Case]:
    cases = []

    def add(name, argv, contains=(), expected="refused in one line, nothing written", tiny=False, known="", **kw):
        cases.append(Case("input", "cli", name, expected, refused(argv, contains, **kw), tiny=tiny, known=known))

    train = TRAIN + ["--out", "{new}"]
    for flag, values in {"--updates": ["0", "-1", "nan", "1e9", "1.5"], "--batch-size": ["0", "-3", "10000000000000"],
                         "--horizon": ["0", "1000000000"], "--learning-rate": ["nan", "inf", "-1", "0"],
                         "--hidden": ["8,,8", "100000000,100000000", "0", "-5", "abc", ""],
                         "--eval-episodes": ["0", "1000000000"], "--eval-every": ["0"],
                         "--eval-seed": ["-1", HUGE_SEED],
                         "--checkpoint-every": ["0"], "--seed": ["x", "-1", HUGE_SEED], "--clip-norm": ["-1", "nan"],
                         "--clip-value": ["inf"], "--policy": ["nosuch"], "--objective": ["nosuch"]}.items():
        for value in values:
            # the first few: argument errors alone (nothing imports JAX), the fast tier's
            add(f"train {flag} {_shown(value)!r}", _with(train, flag, value), _names(flag), tiny=len(cases) < 6)
    for name, argv, contains in [
        ("train --task NoSuch-v0", _with(train, "--task", "NoSuch-v0"), "NoSuch-v0"),
        ("train --task-kwargs nosuch=1", _with(train, "--task-kwargs", "nosuch=1"), "nosuch"),
        ("train --task-kwargs physics=warp", _with(train, "--task-kwargs", "physics=warp"), "warp"),
        ("train --task-kwargs '=='", _with(train, "--task-kwargs", "=="), "=="),
        ("train --task-kwargs num_poles=0", _with(train, "--task-kwargs", "physics=equations,num_poles=0"),
         "num_poles"),
        ("train --agent nosuch", _with(train, "full", "nosuch"), "--agent"),
        ("train --sb3 gamma=0.9 (a removed flag)", train + ["--sb3", "gamma=0.9"], "--sb3"),
        ("train --es-sigma 0.1 with full", train + ["--es-sigma", "0.1"], "--es-sigma"),
        ("train --truncation 3 with full", train + ["--truncation", "3"], "--truncation"),
        ("train --num-envs 4 with full", train + ["--num-envs", "4"], "--num-envs"),
        ("train --agent truncated --truncation 0", _with(train, "full", "truncated") + ["--truncation", "0"],
         "--truncation"),
        ("train --agent es --es-pairs 0", _with(train, "full", "es") + ["--es-pairs", "0"], "--es-pairs"),
        ("train --agent es --es-sigma nan", _with(train, "full", "es") + ["--es-sigma", "nan"], "--es-sigma"),
        ("train --update 2 (a prefix)", train + ["--update", "2"], "--update"),
        ("train --updatez 2 (misspelled)", train + ["--updatez", "2"], "--updatez"),
        ("train --resume (folder missing)", train + ["--resume"], "--resume"),
        ("train (no --out)", TRAIN, "--out"),
        ("train --out afile/sub", TRAIN + ["--out", "{afile}/sub"], "afile"),
        ("train --out /proc/x", TRAIN + ["--out", "/proc/x"], "/proc/x"),
        ("train --out <folder of other files>", TRAIN + ["--out", "{foreign}"], "not a chaosgym run"),
        # resuming a run: a budget below what it has done, another float type, a huge seed
        ("train --resume with a smaller budget", _with(MORE, "--updates", "2") + ["--out", "{copy_base}", "--resume"],
         ("--updates", "budget")),
        ("train --resume of a float64 run in float32", MORE + ["--out", "{copy_x64}", "--resume"], "float64"),
        ("train --resume --seed 2**70", _with(MORE, "--seed", HUGE_SEED) + ["--out", "{copy_base}", "--resume"],
         "--seed"),
    ]:
        add(name, argv, contains)

    # an unset variable in `--out "$OUT"`
    add("train --out '' (in an empty folder)", TRAIN + ["--out", ""], "--out", in_empty_folder=True)

    sb3 = SB3 + ["--out", "{new}"]
    for name, argv, contains in [
        ("train --agent ppo (no --env-steps)", _with(sb3, "--env-steps", None), "--env-steps"),
        ("train --agent ppo --gamma 2", sb3 + ["--gamma", "2"], "--gamma"),
        ("train --agent ppo --n-steps -1", _with(sb3, "--n-steps", "-1"), "--n-steps"),
        ("train --agent ppo --extra nosuch=1", sb3 + ["--extra", "nosuch=1"], "nosuch"),
        ("train --agent ppo --extra gamma", sb3 + ["--extra", "gamma"], "--extra"),
        ("train --agent ppo --sb3 gamma=0.9 (a removed flag)", sb3 + ["--sb3", "gamma=0.9"], "--sb3"),
        ("train --agent ppo --seed -1", sb3 + ["--seed", "-1"], "--seed"),
        ("train --agent ppo --seed 2**70", sb3 + ["--seed", HUGE_SEED], "--seed"),
        ("train --agent ppo --env-steps 0", _with(sb3, "--env-steps", "0"), "--env-steps"),
        ("train --agent ppo --hidden 100000000,100000000", sb3 + ["--hidden", "100000000,100000000"],
         "needs at least"),
        ("train --agent ppo --horizon 5", sb3 + ["--horizon", "5"], "--horizon"),
        ("train --agent ppo --eval-every 3", sb3 + ["--eval-every", "3"], "--eval-every"),
        ("train --agent sac --batch-size 0", ["train", "--task", CARTPOLE, "--agent", "sac", "--env-steps", "64",
                                              "--batch-size", "0", "--no-progress", "--out", "{new}"], "--batch-size"),
    ]:
        add(name, argv, contains)

    compare = ["compare", "--tasks", CARTPOLE, "--agents", "full", "--seeds", "1", "--env-steps", "100",
               "--eval-episodes", "1", "--set", "estimator.horizon=5", "--out", "{new}"]
    for name, extra, contains in [
            ("--wall-clock inf", ["--wall-clock", "inf"], "--wall-clock"),
            ("--wall-clock nan", ["--wall-clock", "nan"], "--wall-clock"),
            ("--wall-clock -1", ["--wall-clock", "-1"], "--wall-clock"),
            ("--threshold nan", ["--threshold", "nan"], "--threshold"),
            ("--threshold T=nan", ["--threshold", f"{CARTPOLE}=nan"], "--threshold"),
            ("--threshold NoSuch-v0=1", ["--threshold", "NoSuch-v0=1"], "--threshold"),
            ("--agents full,full", ["--agents", "full,full"], "--agents"),
            ("--agents nosuch", ["--agents", "nosuch"], "nosuch"),
            ("--tasks NoSuch-v0", ["--tasks", "NoSuch-v0"], "NoSuch-v0"),
            ("--tasks T:nosuch=1", ["--tasks", f"{CARTPOLE}:nosuch=1"], "nosuch"),
            ("--seeds 0", ["--seeds", "0"], "--seeds"),
            ("--seeds 1000000 (at once)", ["--seeds", "1000000"], "--seeds"),
            ("--env-steps 0", ["--env-steps", "0"], "--env-steps"),
            ("--eval-seed 2**70", ["--eval-seed", HUGE_SEED], "--eval-seed"),
            ("--horizon 5 (an agent's setting)", ["--horizon", "5"], "--horizon"),
            ("--set horizon (no value)", ["--set", "horizon"], "--set"),
            ("--set nosuch=1", ["--set", "nosuch=1"], "nosuch"),
            ("--set hidden=100000000,100000000", ["--set", "hidden=100000000,100000000"], "needs at least"),
            ("--set batch_size=1000000000", ["--set", "batch_size=1000000000"], "needs at least"),
            ("--set estimator.horizon=1000000000", ["--set", "estimator.horizon=1000000000"], "needs at least"),
            ("--eval-episodes 1000000000", ["--eval-episodes", "1000000000"], "needs at least")]:
        argv = _with(compare, extra[0], extra[1]) if extra[0] != "--set" else compare + extra
        add(f"compare {name}", argv, contains, limit=20 if "1000000 " in name else 90)
    add("compare --out afile/sub", _with(compare, "--out", "{afile}/sub"), "afile")

    reproduce = REPRODUCE + ["--out", "{new}"]
    for flag, value in [("--poles", "0"), ("--poles", "9"), ("--poles", "1,,2"), ("--flows", "X"), ("--clip", "BAD"),
                        ("--seeds", "0"), ("--epochs", "0"), ("--epochs", "-1"), ("--states", "0"),
                        ("--states", "1000000000"), ("--physics", "warp"), ("--checkpoint-every", "0"),
                        ("--adam", "sgd")]:
        add(f"reproduce {flag} {value}", _with(reproduce, flag, value), _names(flag))
    add("reproduce --report-only --out NEW", reproduce + ["--report-only"], "no finished epoch")
    add("reproduce nosuch-paper", ["reproduce", "nosuch", "--out", "{new}"], "nosuch")

    add("render --run <not a run>", ["render", "--run", "{foreign}", "--out", "{new}.gif"], "config.json")
    add("render --run <missing>", ["render", "--run", "{root}/missing", "--out", "{new}.gif"], "missing")
    for flag, value in [("--width", "0"), ("--height", "-1"), ("--width", "100000"), ("--fps", "0"),
                        ("--fps", "nan"), ("--max-steps", "0"), ("--seed", "-1"), ("--seed", HUGE_SEED)]:
        add(f"render {flag} {_shown(value)}", ["render", "--run", "{copy_base}", "--out", "{new}.gif", flag, value],
            _names(flag))

    diagnose = ["diagnose", "--task", CARTPOLE, "--what", "lyapunov", "--num-states", "2", "--lyapunov-steps", "5",
                "--no-progress", "--out", "{new}"]
    for flag, value in [("--task", "NoSuch-v0"), ("--what", "nosuch"), ("--horizons", "0"), ("--num-states", "0"),
                        ("--es-sigma", "nan"), ("--weight-scales", "nan"), ("--landscape-points", "0"),
                        ("--lyapunov-steps", "-1"), ("--modes", "nosuch"), ("--estimators", "nosuch"),
                        ("--start-qpos", "1,2,3,4,5,6,7"), ("--chunk", "0"), ("--hidden", "8,,8"),
                        ("--seed", HUGE_SEED)]:
        add(f"diagnose {flag} {_shown(value)}", _with(diagnose, flag, value), _names(flag))
    for name, field in [("an empty file", "empty_file"), ("a garbage file", "garbage_file"),
                        ("a run whose checkpoints are empty", "unreadable_run")]:
        add(f"diagnose --policy <{name}>", _with(_with(diagnose, "--task", None), "--policy", f"{{{field}}}"),
            ("--policy", "run folder") if field != "unreadable_run" else "checkpoint")

    for name, argv, contains in [(("demo --steps -1", ["demo", "--steps", "-1"], "--steps")),
                                 ("demo --steps 0", ["demo", "--steps", "0"], "--steps"),
                                 ("demo --num-envs 0", ["demo", "--num-envs", "0"], "--num-envs"),
                                 ("demo --num-envs 1000000000000", ["demo", "--num-envs", "1000000000000", "--steps",
                                                                    "1"], ("--num-envs", "needs at least")),
                                 ("demo --seed -1", ["demo", "--seed", "-1", "--steps", "1"], "--seed"),
                                 ("demo --seed 2**70", ["demo", "--seed", HUGE_SEED, "--steps", "1"], "--seed"),
                                 ("chaosgym (no command)", [], "COMMAND"),
                                 ("chaosgym nosuch", ["nosuch"], "nosuch")]:
        add(name, argv, contains)
    return cases


# ---- bad Python calls: Gymnasium, the functional API, the agents' ----------------------------------

def python_cases() -> list[Case]:
    import gymnasium

    def fresh(**kwargs):
        env = gymnasium.make(CARTPOLE, **kwargs)
        env.reset(seed=0)
        return env

    def closed():
        env = fresh()
        env.close()
        return env

    def vector(num_envs=2, **kwargs):
        env = gymnasium.make_vec(CARTPOLE, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
        env.reset(seed=0)
        return env

    cases = []

    def add(name, call, expected="raises a one-line ValueError/TypeError", tiny=False, known="", **kw):
        cases.append(Case("input", "python", name, expected, raises(call, **kw), tiny=tiny, known=known))

    def add_works(name, expected, call, **kw):
        cases.append(Case("input", "python", name, expected, works(call), **kw))

    for index, (name, action) in enumerate([
            ("shape (2,)", np.zeros(2, np.float32)), ("shape (1, 1)", np.zeros((1, 1), np.float32)),
            ("shape ()", np.float32(0)), ("strings", np.array(["a"])), ("None", None),
            ("NaN", np.array([np.nan], np.float32)), ("inf", np.array([np.inf], np.float32)), ("a dict", {"a": 1})]):
        add(f"env.step(action {name})", lambda a=action: fresh().step(a), tiny=index < 4)
    add_works("env.step(action int dtype)", "taken as a number (cast to float32)",
              lambda: (True, f"stepped, reward {fresh().step(np.zeros(1, np.int64))[1]:.3g}"))
    add("env.step before reset", lambda: gymnasium.make(CARTPOLE).step(np.zeros(1, np.float32)),
        kinds=(ValueError, TypeError, RuntimeError, gymnasium.error.Error))
    for name, kwargs in [("seed=-1", {"seed": -1}), ("seed=1.5", {"seed": 1.5}), ("seed='a'", {"seed": "a"}),
                         ("options=5", {"options": 5}),
                         ("options={'nosuch': 1}", {"options": {"nosuch": 1}})]:
        add(f"env.reset({name})", lambda k=kwargs: fresh().reset(**k))
    def huge_seed(make):
        """Gymnasium takes any seed >= 0 (numpy's SeedSequence): 2**70 must be a stream of its own,
        repeatable, and not seed 0's (2**70 is 0 modulo 2**64)."""
        env = make()
        first, again, zero = (np.asarray(env.reset(seed=seed)[0]) for seed in (2**70, 2**70, 0))
        ok = np.array_equal(first, again) and not np.array_equal(first, zero)
        return ok, "a stream of its own, repeatable" if ok else "not repeatable, or seed 0's stream"
    seeded = "taken as Gymnasium takes it: a stream of its own, repeatable"
    add_works("env.reset(seed=2**70)", seeded, lambda: huge_seed(lambda: gymnasium.make(CARTPOLE)))
    add_works("vector reset(seed=2**70)", seeded, lambda: huge_seed(vector))
    add("closed env step", lambda: closed().step(np.zeros(1, np.float32)), kinds=(Exception,), expected="raises")
    add("closed env reset", lambda: closed().reset(seed=0), kinds=(Exception,), expected="raises")

    def closed_vector_step():
        env = vector()
        env.close()
        env.step(np.zeros((2, 1), np.float32))
    add("closed vector env step", closed_vector_step, kinds=(Exception,), expected="raises")
    add("gymnasium.make('NoSuch-v0')", lambda: gymnasium.make("NoSuch-v0"))
    add("gymnasium.make(kwarg nosuch=1)", lambda: gymnasium.make(CARTPOLE, nosuch=1), contains="nosuch")
    add("gymnasium.make(episode_length=5)", lambda: gymnasium.make(CARTPOLE, episode_length=5),
        contains="max_episode_steps", expected="raises one line naming max_episode_steps")
    add("gymnasium.make_vec(episode_length=5)", lambda: vector(episode_length=5), contains="max_episode_steps",
        expected="raises one line naming max_episode_steps")
    add("gymnasium.make(render_mode='nosuch')", lambda: gymnasium.make(CARTPOLE, render_mode="nosuch"))
    add_works("gymnasium.make(max_episode_steps=-1)", "no time limit (Gymnasium's convention)",
              lambda: (fresh(max_episode_steps=-1).spec.max_episode_steps is None, "no limit"))
    for value in (0, 1.5):
        add(f"gymnasium.make(max_episode_steps={value})", lambda v=value: fresh(max_episode_steps=v))
    add("gymnasium.make(width=0)", lambda: gymnasium.make(CARTPOLE, render_mode="rgb_array", width=0))
    add("chaosgym.make('NoSuch-v0')", lambda: __import__("chaosgym").make("NoSuch-v0"))
    add("chaosgym.make(num_poles=0)", lambda: __import__("chaosgym").make(CARTPOLE, num_poles=0))
    for value in (0, -1, 1.5, 10**9):
        add(f"make_vec(num_envs={value})", lambda v=value: vector(v))
    add("vector step, batch shape (3, 1) for 2 envs", lambda: vector().step(np.zeros((3, 1), np.float32)))
    add("vector step, NaN in one env", lambda: vector().step(np.array([[0.0], [np.nan]], np.float32)))
    add("vector reset(seed=[0]) for 2 envs", lambda: vector().reset(seed=[0]))
    add("vector reset(options={'nosuch': 1})", lambda: vector().reset(options={"nosuch": 1}))

    def register_gymnasiums_id():
        import chaosgym

        before = gymnasium.spec("CartPole-v1").entry_point
        try:
            chaosgym.register("CartPole-v1", chaosgym.TASKS[CARTPOLE])
        finally:
            after = gymnasium.spec("CartPole-v1").entry_point
            if after != before or "CartPole-v1" in chaosgym.TASKS:
                raise RuntimeError(f"CartPole-v1 taken over: its entry point is {after}")
    add("chaosgym.register('CartPole-v1', <a task>)", register_gymnasiums_id, contains="CartPole-v1",
        expected="raises one line, Gymnasium's CartPole-v1 kept")

    def evaluate(**kwargs):
        from chaosgym.evaluation import evaluate
        return evaluate(lambda obs: np.zeros(1, np.float32), CARTPOLE, {"physics": "equations"}, **kwargs)
    add("evaluate(num_episodes=0)", lambda: evaluate(num_episodes=0), contains="num_episodes")

    def sb3(num_envs, close=False):
        from chaosgym.agents.sb3_vec_env import ChaosSB3VecEnv
        venv = ChaosSB3VecEnv(CARTPOLE, num_envs)
        if close:
            venv.reset()
            venv.close()
            venv.step(np.zeros((num_envs, 1), np.float32))
    add("ChaosSB3VecEnv(num_envs=10**9)", lambda: sb3(10**9))
    add("a closed ChaosSB3VecEnv steps", lambda: sb3(2, close=True), kinds=(Exception,), contains="closed",
        expected="raises one line: closed")

    def nan_rollout():
        import jax
        import jax.numpy as jnp

        import chaosgym

        env = chaosgym.make(CARTPOLE, physics="equations")
        states = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 2))
        nan, _ = chaosgym.rollout(env, lambda w, obs: w * jnp.full(1, jnp.nan), 1.0, states, 5)
        zero, _ = chaosgym.rollout(env, lambda w, obs: w * jnp.zeros(1), 1.0, states, 5)
        return bool(jnp.isnan(nan)), f"loss {float(nan)} (zero policy: {float(zero):.3g})"
    add_works("rollout of a policy giving NaN", "loss NaN, never a best (lowest) loss", nan_rollout)

    def nan_evaluation():
        from chaosgym.evaluation import evaluate
        result = evaluate(lambda obs: np.full(1, np.nan), CARTPOLE, {"physics": "equations"}, num_episodes=2)
        return (result["mean_return"] == -np.inf and result["failed_episodes"] == 2,
                f"mean return {result['mean_return']}, {result['failed_episodes']} failed episodes")
    add_works("evaluate a policy giving NaN", "every episode failed, return -inf", nan_evaluation)

    def copies():
        env = fresh()
        env.step(np.full(1, 0.3, np.float32))
        twins = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
        import cloudpickle
        twins.append(cloudpickle.loads(cloudpickle.dumps(env)))
        want = env.step(np.full(1, -0.2, np.float32))[0]
        for twin in twins:
            np.testing.assert_array_equal(twin.step(np.full(1, -0.2, np.float32))[0], want)
        return True, "deepcopy, pickle, cloudpickle step on equal"
    add_works("deepcopy/pickle/cloudpickle a live env", "copies step on as the original", copies)
    return cases


# ---- faults -------------------------------------------------------------------------------------

def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMED} for row in csv.DictReader(f)]


def arrays(folder: Path) -> dict[str, np.ndarray]:
    """The arrays of a gradient run's newest checkpoint (its JSON metadata, which holds times, aside)."""
    with np.load(folder / "checkpoint.npz", allow_pickle=False) as z:
        return {name: z[name] for name in z.files if name != "__meta__"}


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _resumed_equal(folder: Path, argv: list[str], whole: Path, limit: float = 90) -> tuple[bool, str]:
    code, stderr = cli(argv + ["--out", str(folder), "--resume"], limit)
    if code != 0 or "Traceback" in stderr:
        return False, f"resume exit {code}: " + " | ".join(_error_lines(stderr))[-140:]
    got, want = rows(folder / "metrics.csv"), rows(whole / "metrics.csv")
    if got != want:
        return False, f"metrics differ: {len(got)} rows against {len(want)} (updates {[r['update'] for r in got]})"
    if not same_arrays(arrays(folder), arrays(whole)):
        return False, "checkpoint arrays differ"
    warned = [line for line in _error_lines(stderr) if "Warning" in line]
    return True, (warned[0][:110] if warned else "resumed, equal")


def recovers(damage: Callable[[Path], object], or_refuses: bool = False):
    """A check: `damage` a copy of `base`, resume it to `MORE`'s budget: it must end as `whole`
    (with `or_refuses`, a one-line refusal is fine too)."""
    def check(work: Work):
        folder, whole = work.copy(work.base, "fault"), work.whole
        damage(folder)
        if or_refuses:
            saved = _listing(folder)
            code, stderr = cli(MORE + ["--out", str(folder), "--resume"])
            errors = _error_lines(stderr)
            if code == 2 and len(errors) == 1 and "Traceback" not in stderr:
                return _listing(folder) == saved, errors[0][:110]
            shutil.rmtree(folder)
            folder = work.copy(work.base, "fault")
            damage(folder)
        return _resumed_equal(folder, MORE, whole)
    return check


def refuses(damage: Callable[[Path], object], contains: str | tuple[str, ...] = (), source: str = "base",
            argv: list[str] | None = None, payload: bool = False):
    """A check: `damage` a copy of `source` (`damage(folder)` or, with `payload`, `damage(folder,
    marker)`), then `argv` (`MORE`, resumed, by default; `{run}` is the copy) is refused in one line
    and changes nothing in the folder; a planted payload never runs."""
    def check(work: Work):
        folder = work.copy(getattr(work, source), "fault")
        marker = _marker(work)
        damage(folder, marker) if payload else damage(folder)
        words = argv or MORE + ["--out", "{run}", "--resume"]
        saved = _listing(folder)
        ok, note = refused([w.replace("{run}", str(folder)) for w in words], contains)(work)
        if _listing(folder) != saved:
            ok, note = False, f"changed a file; {note}"
        if marker.exists():
            ok, note = False, f"THE PAYLOAD RAN; {note}"
        return ok, note
    return check


def _append(text: str):
    return lambda folder: open(folder / "metrics.csv", "a").write(text)


def _write(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def _truncate(name: str, keep: int):
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:keep])


def _edit_metrics(edit: Callable[[list[str]], list[str]]):
    def damage(folder: Path):
        lines = (folder / "metrics.csv").read_text().splitlines(keepends=True)
        (folder / "metrics.csv").write_text("".join(edit(lines)))
    return damage


def _config_folder(folder: Path):
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()


def _plant_pickle(names: tuple[str, ...]):
    """A pickle that runs a payload in place of each of `names` (those present)."""
    def damage(folder: Path, marker: Path):
        for name in names:
            if (folder / name).exists():
                (folder / name).write_bytes(pickle.dumps(Payload(str(marker))))
    return damage


def _plant_stealth_npz(folder: Path, marker: Path):
    """Each checkpoint with its real arrays plus an object array holding the payload: it would load
    as usual once its payload had run."""
    for name in ("checkpoint.npz", "checkpoint.prev.npz"):
        with np.load(folder / name, allow_pickle=False) as real:
            contents = dict(real)
        buffer = io.BytesIO()
        np.savez(buffer, **contents, stealth=np.array([Payload(str(marker))], dtype=object))
        (folder / name).write_bytes(buffer.getvalue())


def _stealth_npz(work: Work):
    folder, marker = work.copy(work.base, "fault"), _marker(work)
    _plant_stealth_npz(folder, marker)
    saved = _listing(folder)
    code, stderr = cli(MORE + ["--out", str(folder), "--resume"])
    errors = _error_lines(stderr)
    if marker.exists():
        return False, "THE PAYLOAD RAN"
    if code == 2 and len(errors) == 1 and "Traceback" not in stderr:
        return _listing(folder) == saved, errors[0][:110]
    shutil.rmtree(folder)  # resumed, or not cleanly refused: the resume must then equal the whole run
    folder = work.copy(work.base, "fault")
    _plant_stealth_npz(folder, marker)
    ok, note = _resumed_equal(folder, MORE, work.whole)
    return ok and not marker.exists(), ("payload never ran; " if not marker.exists() else "THE PAYLOAD RAN; ") + note


def _plant_sb3_tensors(folder: Path, marker: Path):
    """Each SB3 checkpoint (a zip) with its tensors.pt replaced by a pickle that runs the payload."""
    for path in folder.glob("checkpoint*.zip"):
        with zipfile.ZipFile(path) as z:
            members = {name: z.read(name) for name in z.namelist()}
        members["tensors.pt"] = pickle.dumps(Payload(str(marker)))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
        path.write_bytes(buffer.getvalue())


def _linked_output(argv: list[str], link: str):
    """A check: a copy of `base` with `link` (a path in it, or in `{new}` made a folder) a symbolic
    link to someone's file; `argv` must refuse in one line and leave the file and the link alone."""
    def check(work: Work):
        target = work.path("important-")
        target.write_text("keep me")
        folder = work.copy(work.base, "linked")
        out = work.path("out")
        out.mkdir()
        where = Path(link.replace("{run}", str(folder)).replace("{out}", str(out)))
        where.symlink_to(target)
        words = [w.replace("{run}", str(folder)).replace("{out}", str(out)) for w in argv]
        ok, note = refused(words, "symbolic link")(work)
        if target.read_text() != "keep me":
            ok, note = False, f"WROTE THROUGH THE LINK; {note}"
        elif not where.is_symlink():
            ok, note = False, f"replaced the link; {note}"
        return ok, note
    return check


def fault_cases() -> list[Case]:
    cases = []

    def add(name, expected, check, known=""):
        cases.append(Case("fault", "fault", name, expected, check, known=known))

    one_line = "one line naming the file, nothing changed"
    add("torn metrics row (no newline)", "dropped with a warning, resume equal", recovers(_append("5,60,,1.23")))
    add("short metrics row with newline", "dropped with a warning, resume equal", recovers(_append("5,60,\n")))
    add("zero-byte checkpoint.npz", "falls back to checkpoint.prev.npz, resume equal",
        recovers(_write("checkpoint.npz", b"")))
    add("garbage checkpoint.npz", "falls back to checkpoint.prev.npz, resume equal",
        recovers(_write("checkpoint.npz", b"\x80\x04garbage")))
    add("both checkpoints garbage", "one line naming both files, nothing changed",
        refuses(lambda f: (_write("checkpoint.npz", b"x")(f), _write("checkpoint.prev.npz", b"y")(f)), "checkpoint"))
    add("config.json is a folder", "one line naming config.json", refuses(_config_folder, "config.json"))
    add("config.json truncated", "one line naming config.json", refuses(_truncate("config.json", 20), "config.json"))
    add("config.json removed", "refused (the folder holds a run's files but no config)",
        refuses(lambda f: (f / "config.json").unlink(), "config.json"))
    add("metrics.csv removed", "resume equal from the checkpoint, or one line",
        recovers(lambda f: (f / "metrics.csv").unlink(), or_refuses=True))
    add("config.json of another agent", "one line: the config differs",
        refuses(lambda f: (f / "config.json").write_text(
            (f / "config.json").read_text().replace('"full"', '"modified"')), ("cannot resume", "differ")))
    # metrics.csv edited by hand (issue 32)
    add("metrics.csv: a middle row deleted", one_line,
        refuses(_edit_metrics(lambda lines: lines[:2] + lines[3:]), "metrics.csv"))
    add("metrics.csv: a row duplicated", one_line,
        refuses(_edit_metrics(lambda lines: lines[:3] + lines[2:]), "metrics.csv"))
    add("metrics.csv: the header renamed", one_line,
        refuses(_edit_metrics(lambda lines: [lines[0].replace("update", "step", 1)] + lines[1:]), "metrics.csv"))

    def locked(work: Work):
        folder = work.copy(work.base, "locked")
        with open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return refused(MORE + ["--out", str(folder), "--resume"], "another process")(work)
    add("second writer while the folder is locked", "one line: being written by another process", locked)

    # planted pickles (issue 32): none may run; the command refuses and runs nothing
    never = "refused in one line, the payload never runs, nothing changed"
    both = ("checkpoint.npz", "checkpoint.prev.npz")
    add("pickle planted as checkpoint.npz (and .prev)", never,
        refuses(_plant_pickle(both), "pickle", payload=True))
    add("object array planted in checkpoint.npz (and .prev)",
        "the payload never runs: refused in one line, or resumed equal (the planted member unread)", _stealth_npz)
    add("pickle planted as checkpoint.npz, read by render", never,
        refuses(_plant_pickle(both), "checkpoint", payload=True,
                argv=["render", "--run", "{run}", "--max-steps", "2", "--width", "16", "--height", "16",
                      "--out", "{new}.gif"]))
    add("pickle planted as checkpoint.npz, read by diagnose --policy", never,
        refuses(_plant_pickle(both), "checkpoint", payload=True,
                argv=["diagnose", "--policy", "{run}", "--what", "lyapunov", "--num-states", "1", "--lyapunov-steps",
                      "2", "--no-progress", "--out", "{new}"]))
    sb3_resume = _with(SB3, "--env-steps", "128") + ["--out", "{run}", "--resume"]
    add("pickle planted as SB3's checkpoint.zip (and .prev)", never,
        refuses(_plant_pickle(("checkpoint.zip", "checkpoint.prev.zip")), "checkpoint", source="sb3",
                argv=sb3_resume, payload=True))
    add("pickle planted as tensors.pt in SB3's checkpoint.zip", never,
        refuses(_plant_sb3_tensors, "checkpoint", source="sb3", argv=sb3_resume, payload=True))
    add("pickle planted in every trace-cache entry", "never runs; the entries traced anew, the env steps as before",
        _planted_trace_cache)

    # outputs where a link was planted (issue 32): refused, the link's target untouched
    add("render's episode.gif a symbolic link", "one line naming the link, its target untouched",
        _linked_output(["render", "--run", "{run}", "--max-steps", "2", "--width", "16", "--height", "16"],
                       "{run}/episode.gif"))
    add("diagnose's lyapunov.csv a symbolic link", "one line naming the link, its target untouched",
        _linked_output(["diagnose", "--task", CARTPOLE, "--what", "lyapunov", "--num-states", "1", "--lyapunov-steps",
                        "2", "--no-progress", "--overwrite", "--out", "{out}"], "{out}/lyapunov.csv"))

    # reproduce's folders
    for name, damage in [("torn epochs row", lambda g: open(g / "metrics.csv", "a").write("1,R,NO")),
                         ("zero-byte checkpoint.npz", lambda g: (g / "checkpoint.npz").write_bytes(b"")),
                         ("truncated config.json", _truncate("config.json", 10))]:
        add(f"reproduce: {name}", "recovers equal, or one line naming the file", _reproduce_fault(damage))

    # real processes: kills, a file-size limit, another user's read-only folder, the caches
    for sent in (signal.SIGKILL, signal.SIGINT, signal.SIGTERM):
        add(f"{sent.name} mid-training, then --resume", "resume equal: rows and checkpoint", _killed(sent))
    add("disk full (RLIMIT_FSIZE) mid-training", "one line, no torn row; resume equal", _disk_full)
    add("read-only run folder (chattr +i)", "one line naming the path, nothing changed", _read_only)
    add("compilation cache path is a file", "a warning, the env steps", _cache_is_a_file)
    add("no HOME and no passwd entry", "cache off, the env steps", _no_home)
    add("SIGINT while `chaosgym` imports", "one line, exit 130", _sigint_during_import)
    return cases


def _reproduce_fault(damage):
    def check(work: Work):
        rbase, rwhole, group = work.reproduction
        folder = work.copy(rbase, "rfault")
        damage(folder / group)
        code, stderr = cli(_with(REPRODUCE, "--epochs", "3") + ["--out", str(folder)])
        errors = _error_lines(stderr)
        if "Traceback" in stderr or code not in (0, 2) or (code == 2 and len(errors) != 1):
            return False, f"exit {code}: " + " | ".join(errors)[-140:]
        if code == 0 and rows(folder / group / "metrics.csv") != rows(rwhole / group / "metrics.csv"):
            return False, "metrics differ from the uninterrupted reproduction"
        return True, "recovered, equal" if code == 0 else errors[-1][:110]
    return check


def _process(argv: list[str], file_size_limit: int | None = None) -> subprocess.Popen:
    """`chaosgym ARGV` in a process of its own (in a folder of its own: `python -m` puts the current
    folder first on sys.path), with RLIMIT_FSIZE set by the child itself (no fork hook in this
    multithreaded process)."""
    command = CLI if file_size_limit is None else [
        sys.executable, "-c", f"import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
        f"({file_size_limit}, {file_size_limit})); sys.argv[0] = 'chaosgym'; "
        "runpy.run_module('chaosgym.agents.cli', run_name='__main__')"]
    return subprocess.Popen(command + argv, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env())


def _wait_for_rows(path: Path, count: int, process: subprocess.Popen, seconds: float = 300) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        if path.exists() and path.read_text().count("\n") > count:
            return True
        time.sleep(0.05)
    return False


def _killed(sent: signal.Signals):
    def check(work: Work):
        whole, folder = work.long_whole, work.path(f"killed_{sent.name}_")
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
        ok, note = _resumed_equal(folder, KILLED, whole, limit=600)
        return ok, f"exit {process.returncode}; {note}"
    return check


def _disk_full(work: Work):
    limit = 12_000  # bytes per file: metrics.csv reaches it after about 100 rows, a checkpoint stays below
    whole, folder = work.long_whole, work.path("disk_full")
    process = _process(KILLED + ["--out", str(folder)], file_size_limit=limit)
    _, stderr = process.communicate(timeout=600)
    errors = _error_lines(stderr)
    if process.returncode == 0:
        return False, "never hit the limit"
    if "Traceback" in stderr or len(errors) != 1:
        return False, f"exit {process.returncode}: " + " | ".join(errors)[-140:]
    if not (folder / "metrics.csv").read_text().endswith("\n"):
        return False, "a torn row was left"
    ok, note = _resumed_equal(folder, KILLED, whole, limit=600)
    return ok, f"{errors[0][:70]}; {note}"


def _read_only(work: Work):
    """Immutable (chattr +i), which holds for root too, unlike the folder's permissions."""
    if not shutil.which("chattr"):
        raise Unsupported("no chattr on this machine")
    folder = work.copy(work.base, "read_only")
    paths = [str(p) for p in folder.iterdir()] + [str(folder)]
    if subprocess.run(["chattr", "+i", *paths], capture_output=True).returncode != 0:
        raise Unsupported("chattr +i is refused here (file system or privileges)")
    try:
        return refused(MORE + ["--out", str(folder), "--resume"], str(folder))(work)
    finally:
        subprocess.run(["chattr", "-i", *paths], check=True, capture_output=True)


STEP = ("import gymnasium, chaosgym; env = gymnasium.make('ChaosCartPole-v0'); env.reset(seed=0); "
        "print(env.step(env.action_space.sample())[1])")
STEP_SEEDED = ("import gymnasium, numpy, chaosgym; env = gymnasium.make('ChaosCartPole-v0'); env.reset(seed=0); "
               "print(repr(env.step(numpy.full(1, 0.3, numpy.float32))[0].tolist()))")


def _fresh_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                          env=env, timeout=300)


def _cache_is_a_file(work: Work):
    path = work.path("cache-file")
    path.write_text("not a folder")
    result = _fresh_python(STEP, subprocess_env(CHAOSGYM_CACHE_DIR=str(path)))
    ok = result.returncode == 0 and "Traceback" not in result.stderr
    return ok, f"exit {result.returncode}: " + " | ".join(_error_lines(result.stderr))[-120:]


def _no_home(work: Work):
    code = "import pwd\ndef no(uid): raise KeyError(uid)\npwd.getpwuid = no\n" + STEP.replace("; ", "\n")
    env = {k: v for k, v in subprocess_env().items() if k not in ("HOME", "XDG_CACHE_HOME", "CHAOSGYM_CACHE_DIR")}
    result = _fresh_python(code, env)
    return result.returncode == 0, f"exit {result.returncode} " + result.stderr.strip()[-100:]


def _planted_trace_cache(work: Work):
    """The env stepped in a fresh process with a trace cache of its own; a pickle planted in every
    entry; stepped again: the payload must not run, and the step must give the same observation."""
    cache, marker = work.path("trace-cache"), _marker(work)
    env = subprocess_env(CHAOSGYM_CACHE_DIR=str(cache), CHAOSGYM_TRACE_CACHE="1", JAX_PLATFORMS="cpu")
    first = _fresh_python(STEP_SEEDED, env)
    if first.returncode != 0:
        return False, f"first run: exit {first.returncode}: {first.stderr.strip()[-100:]}"
    entries = [p for p in (cache / "traces").iterdir() if p.is_file()] if (cache / "traces").is_dir() else []
    if not entries:
        return False, "the first run left no trace-cache entries (cache/traces/)"
    for entry in entries:
        entry.write_bytes(pickle.dumps(Payload(str(marker))))
    second = _fresh_python(STEP_SEEDED, env)
    if marker.exists():
        return False, "THE PAYLOAD RAN"
    if second.returncode != 0 or "Traceback" in second.stderr:
        return False, f"exit {second.returncode}: {second.stderr.strip()[-100:]}"
    if second.stdout.strip().splitlines()[-1:] != first.stdout.strip().splitlines()[-1:]:
        return False, "the step differs from the first run's"
    warned = [line for line in _error_lines(second.stderr) if "trace cache" in line]
    return True, f"{len(entries)} entries planted; " + (warned[0][:90] if warned else "stepped as before")


def _sigint_during_import(work: Work):
    """A SIGINT at several moments of the first second of the `chaosgym` command (its console
    script), while Python starts and `chaosgym.agents.cli` imports: it must end the command, in one
    line (exit 130) once chaosgym's first line has run, or by Python's own KeyboardInterrupt (exit
    -2) before that; never lost, never a crash."""
    script = Path(sys.executable).with_name("chaosgym")
    if not script.exists():
        raise Unsupported(f"no console script beside {sys.executable}")
    seen = []
    for delay in (0.05, 0.1, 0.2, 0.3, 0.45):
        process = subprocess.Popen([str(script), "demo", "--steps", "1", "--num-envs", "1"],
                                   cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, env=subprocess_env())
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        clean = (process.returncode == 130 and len(lines) == 1 and "stopped by SIGINT" in lines[0]) or (
            process.returncode == -signal.SIGINT and lines[-1:] == ["KeyboardInterrupt"])
        seen.append(f"{delay} s: " + ("ended" if clean else f"exit {process.returncode}: {lines[-1:] or ''}"))
    return all(note.endswith(": ended") for note in seen), ", ".join(seen)


# ---- every case, and the recount ----------------------------------------------------------------

# Cases chaosgym does not handle yet (found by this harness): the case's name, and what happens.
KNOWN: dict[str, str] = {}  # a case chaosgym does not handle yet: its name -> why (run as a strict xfail)


def all_cases() -> list[Case]:
    """Every case, cheap to build: nothing runs until a case's check does."""
    cases = [dataclasses.replace(case, known=KNOWN.get(case.name, case.known))
             for case in [*cli_cases(), *python_cases(), *fault_cases()]]
    assert set(KNOWN) <= {case.name for case in cases}, set(KNOWN) - {case.name for case in cases}
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
    return cases


def judge(case: Case, work: Work) -> tuple[bool | None, str]:
    """(handled, what happened); handled None when the machine cannot inject the fault."""
    try:
        return case.check(work)
    except Unsupported as why:
        return None, f"skipped: {why}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the fast tier's cases only (seconds)")
    parser.add_argument("--only", choices=["cli", "python", "fault"], help="one group of cases")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import chaosgym

    print(f"chaosgym from {Path(chaosgym.__file__).parent}\n")
    cases = [case for case in all_cases()
             if (not args.tiny or case.tiny) and (not args.only or case.group == args.only)]
    results = []
    print("| kind | case | expected | handled | what happened |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        work = Work(tmp)
        for case in cases:
            start = time.perf_counter()
            try:
                handled, note = judge(case, work)
            except Exception as error:  # noqa: BLE001 (the harness itself: reported, not fatal)
                handled, note = False, f"harness error {type(error).__name__}: {error}"
            results.append((case, handled))
            mark = "skipped" if handled is None else "yes" if handled else "**no**"
            known = f" (known: {case.known})" if case.known else ""
            print(f"| {case.kind} | {case.name} | {case.expected} | {mark} | "
                  f"{note.replace('|', '/')}{known} ({time.perf_counter() - start:.1f} s) |", flush=True)
    inputs = [handled for case, handled in results if case.kind == "input" and handled is not None]
    faults = [handled for case, handled in results if case.kind == "fault" and handled is not None]
    print(f"\nbad inputs: {sum(inputs)} of {len(inputs)} handled cleanly")
    print(f"faults: {sum(faults)} of {len(faults)} survived")
    skipped = [case.name for case, handled in results if handled is None]
    if skipped:
        print("skipped (this machine cannot inject them): " + "; ".join(skipped))
    failed = [case.name for case, handled in results if handled is False]
    if failed:
        print("not handled: " + "; ".join(failed))
    surprises = [case.name for case, handled in results
                 if handled is not None and (handled is False) != bool(case.known)]
    return 1 if surprises else 0


if __name__ == "__main__":
    sys.exit(main())
