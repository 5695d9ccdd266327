"""The `chaosgym` command: one subcommand per module, each with `add_arguments` and `run`."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help); modules are imported only when their command runs
COMMANDS = {
    "demo": ("chaosgym.demo", "step every task with a random policy and print a table"),
    "train": ("chaosgym.agents.train", "train a gradient-based agent or an SB3 baseline on a task"),
    "compare": ("chaosgym.agents.compare", "train tasks x agents x seeds under one budget; write a table and plots"),
    "reproduce": ("chaosgym.agents.reproduce", "reproduce a paper's experiment (stable-bptt: Schnell & Thuerey's multi-pole cart pole)"),
    "render": ("chaosgym.agents.render", "write an animated GIF of a trained policy's episode from a run folder"),
    "diagnose": ("chaosgym.diagnose", "Lyapunov exponents, Jacobian spectra, gradient variance and loss landscapes of a task"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is None or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaosgym", description="Chaotic control tasks on MuJoCo MJX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=HelpFormatter)
        # a subcommand's arguments are only built when it (or --help) is asked for
        if argv[:1] == [name]:
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    try:
        return importlib.import_module(COMMANDS[args.command][0]).run(args) or 0
    except (ValueError, TypeError, FileExistsError) as error:  # bad input: one clear line, no traceback
        parser.exit(2, f"chaosgym {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
