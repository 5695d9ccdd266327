"""The `chaosgym` command: one subcommand per `Command`, whose functions are named "module:function".

A command's `arguments` function adds its flags to a parser and its `check` (if any) refuses wrong
arguments. A `chaosgym.validation.UserError` (a bad value, id, option or file) and an OSError about a
path end the command with one line and status 2; any other exception is a bug and keeps its
traceback. Both modules are imported before
the command runs, for `chaosgym CMD --help` too, so they import neither JAX nor MuJoCo. Only then is
the module of `runs`, `run(args) -> int | None`, imported. `chaosgym --help` imports none of them.
"""

from __future__ import annotations

import _thread
import argparse
import difflib
import functools
import importlib
import os
import signal
import sys
import time
from typing import NamedTuple

import chaosgym
from chaosgym.flags import flag_name
from chaosgym.validation import InvalidSetting, UserError


class Command(NamedTuple):
    arguments: str  # (parser) -> None: adds the flags
    runs: str  # (args) -> exit status or None: runs the command
    help: str
    check: str | None = None  # (args) -> anything: raises on wrong arguments


COMMANDS = {
    "demo": Command("chaosgym.demo:add_arguments", "chaosgym.demo:run",
                    "step every task with a random policy and print a table"),
    "train": Command("chaosgym.agents.commands:train_arguments", "chaosgym.agents.train_command:run",
                     "train an agent (gradient-based, SB3 or Brax) on a task",
                     check="chaosgym.agents.commands:train_check"),
    "compare": Command("chaosgym.agents.commands:compare_arguments", "chaosgym.agents.compare_command:run",
                       "train tasks x agents x seeds under one budget; write a table and plots",
                       check="chaosgym.agents.commands:compare_config"),
    "reproduce": Command("chaosgym.agents.reproduce_config:add_arguments", "chaosgym.agents.reproduce:run",
                         "reproduce a paper's experiment (stable-bptt: Schnell & Thuerey's multi-pole cart pole)",
                         check="chaosgym.agents.reproduce_config:from_args"),
    "render": Command("chaosgym.agents.commands:render_arguments", "chaosgym.agents.render:run",
                      "write an animated GIF of a trained policy's episode from a run folder",
                      check="chaosgym.agents.commands:render_check"),
    "convert-checkpoint": Command("chaosgym.agents.commands:convert_arguments", "chaosgym.agents.convert:run",
                                  "convert a run folder of chaosgym 0.1 (pickled checkpoints) that you trust to "
                                  "this version's files"),
    "diagnose": Command("chaosgym.diagnostics.config:add_arguments", "chaosgym.agents.diagnose_command:run",
                        "Lyapunov exponents, Jacobian spectra, gradient variance and loss landscapes of a task",
                        check="chaosgym.diagnostics.config:config_from_args"),
}


def _function(name: str, also: tuple[str, ...] = ()):
    """The function a "module:function" name names, its module (and the modules `also` names)
    imported with SIGINT and SIGTERM held back: a library imported on the way may catch
    BaseException around an optional import (trimesh, which MJX imports, does: it would swallow the
    stop); held, the stop arrives afterwards."""
    module, _, function = name.partition(":")
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        for other in also:
            importlib.import_module(other)
        imported = importlib.import_module(module)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return getattr(imported, function)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is None or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT: a KeyboardInterrupt, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame) -> None:
    if frame is not None and frame.f_code in (_unraisable.__code__, _send_again.__code__):
        _send_again(signum)  # raised in the hook, it would be dropped too
        return
    raise Stopped(signum)


def _send_again(signum: int) -> None:
    """The stop again in 50 ms, from another thread: by then the main thread has left the hook."""
    def send() -> None:
        time.sleep(0.05)
        os.kill(os.getpid(), signum)
    _thread.start_new_thread(send, ())


def _unraisable(previous_hook, report) -> None:
    """`sys.unraisablehook` while a command runs: a stop that Python dropped (raised while a gc
    callback or a `__del__` ran; JAX runs a gc callback on every collection) is sent again."""
    if isinstance(report.exc_value, Stopped):
        _send_again(report.exc_value.signum)
    else:
        previous_hook(report)


def _refuse_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exit with the command's own usage, naming each unknown flag and the closest valid one."""
    valid = [option for action in parser._actions for option in action.option_strings]
    problems = []
    for word in unknown:
        close = difflib.get_close_matches(word.partition("=")[0], valid, n=1) if word.startswith("-") else []
        problems.append(f"{word} (did you mean {close[0]}?)" if close else word)
    parser.error(f"unrecognized arguments: {' '.join(problems)}")


def _one_line(error: BaseException) -> str:
    """A bad input or an unusable path as one line: the flag the user typed, the path involved."""
    if isinstance(error, InvalidSetting):
        return f"argument {flag_name(error.setting)}: {error.problem}"
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    # no prefix matching anywhere: `--update 2` must not silently mean `--updates 2`
    parser = argparse.ArgumentParser(prog="chaosgym", description="Chaotic control tasks on MuJoCo MJX.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    # a killed run ends as an interrupted one: what its last checkpoint saved stays, the status says
    # so; installed first, so that a stop while the command's modules import is one line too
    handlers = {signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    unraisable_hook, sys.unraisablehook = sys.unraisablehook, functools.partial(_unraisable, sys.unraisablehook)
    command = argv[0] if argv else "command"
    try:
        if chaosgym._AS_COMMAND:  # what came while chaosgym imported is delivered now, to `_stop`
            signal.pthread_sigmask(signal.SIG_UNBLOCK, chaosgym.HELD_SIGNALS)
        commands = {}
        for name, spec in COMMANDS.items():
            commands[name] = sub.add_parser(name, help=spec.help, description=spec.help,
                                            formatter_class=HelpFormatter, allow_abbrev=False)
            # a subcommand's arguments are only built when it (or --help) is asked for
            if argv[:1] == [name]:
                add = _function(spec.arguments)
                add(commands[name], argv) if add.__code__.co_argcount > 1 else add(commands[name])
        args, unknown = parser.parse_known_args(argv)
        command = args.command
        if unknown:
            _refuse_unknown(commands[args.command], unknown)
        spec = COMMANDS[args.command]
        if spec.check:
            _function(spec.check)(args)
        # a command that runs MJX imports it here, held, not later on first use (its modules load it lazily)
        return _function(spec.runs, also=() if args.command == "convert-checkpoint" else ("chaosgym._mjx",))(args) or 0
    except (UserError, OSError) as error:
        if isinstance(error, OSError) and error.filename is None:
            raise  # not about a path the user gave: a bug or the system's, with its traceback
        # bad input, or a path that cannot be used: one clear line, no traceback
        parser.exit(2, f"chaosgym {command}: error: {_one_line(error)}\n")
    except Stopped as stop:
        parser.exit(128 + stop.signum, f"chaosgym {command}: stopped by {stop}; a run resumes from its "
                                       "last checkpoint with --resume\n")
    finally:  # main() called from Python leaves the caller's handlers as they were
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        sys.unraisablehook = unraisable_hook


if __name__ == "__main__":
    sys.exit(main())
