"""The `chaosgym` command: one subcommand per pair of modules, one that builds its arguments and one
that runs it.

A command's arguments module is imported to build its parser (for `chaosgym CMD --help` too), so it
imports neither JAX nor MuJoCo: it defines `add_arguments(parser)` and may define `check(args)`,
which refuses wrong arguments (ValueError, TypeError, OSError: one line) before the run module, and
with it JAX, is imported. The run module defines `run(args) -> int | None`. `chaosgym --help`
imports neither module.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import signal
import sys
import threading
from typing import NamedTuple

from chaosgym.flags import InvalidSetting, flag_name

class Command(NamedTuple):
    arguments: str  # the module with add_arguments (and perhaps check): imported for the parser
    runs: str  # the module with run: imported only when the command runs
    help: str


COMMANDS = {
    "demo": Command("chaosgym.demo", "chaosgym.demo", "step every task with a random policy and print a table"),
    "train": Command("chaosgym.agents.train", "chaosgym.agents.train",
                     "train a gradient-based agent or an SB3 baseline on a task"),
    "compare": Command("chaosgym.agents.compare", "chaosgym.agents.compare",
                       "train tasks x agents x seeds under one budget; write a table and plots"),
    "reproduce": Command("chaosgym.agents.reproduce_config", "chaosgym.agents.reproduce",
                         "reproduce a paper's experiment (stable-bptt: Schnell & Thuerey's multi-pole cart pole)"),
    "render": Command("chaosgym.agents.render", "chaosgym.agents.render",
                      "write an animated GIF of a trained policy's episode from a run folder"),
    "diagnose": Command("chaosgym.diagnose_config", "chaosgym.diagnose",
                        "Lyapunov exponents, Jacobian spectra, gradient variance and loss landscapes of a task"),
}


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
    raise Stopped(signum)


def _redelivering(hook):
    """`sys.unraisablehook` that sends a stop again when Python dropped it: raised while a gc
    callback or a `__del__` ran (JAX runs one on every collection), it ends only that callback."""
    def unraisable(report) -> None:
        if isinstance(report.exc_value, Stopped):
            # from another thread, once this hook has returned: raised in here, it would be dropped too
            threading.Timer(0.01, os.kill, (os.getpid(), report.exc_value.signum)).start()
        else:
            hook(report)
    return unraisable


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
        return f"{error.strerror or error}: {error.filename}"
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
    unraisable_hook, sys.unraisablehook = sys.unraisablehook, _redelivering(sys.unraisablehook)
    command = argv[0] if argv else "command"
    try:
        commands = {}
        for name, spec in COMMANDS.items():
            commands[name] = sub.add_parser(name, help=spec.help, description=spec.help,
                                            formatter_class=HelpFormatter, allow_abbrev=False)
            # a subcommand's arguments are only built when it (or --help) is asked for
            if argv[:1] == [name]:
                importlib.import_module(spec.arguments).add_arguments(commands[name])
        args, unknown = parser.parse_known_args(argv)
        command = args.command
        if unknown:
            _refuse_unknown(commands[args.command], unknown)
        spec = COMMANDS[args.command]
        if check := getattr(importlib.import_module(spec.arguments), "check", None):
            check(args)
        return importlib.import_module(spec.runs).run(args) or 0
    except (ValueError, TypeError, OSError) as error:  # bad input: one clear line, no traceback
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
