"""A stop that lands where Python drops exceptions (a gc callback, a `__del__`: JAX runs a gc
callback on every collection; or the hook that reports those) still ends the command with its one
line and status (issue 21: the SB3 kill test's SIGINT was printed as "Exception ignored" and the
run went on)."""

import signal
import subprocess
import sys
import textwrap

import pytest

# a command whose run() gets the stop where Python drops it, then works on for a minute:
# "del": inside a __del__, as a SIGINT arriving while JAX's gc callback runs;
# "hook": inside sys.unraisablehook itself, while it reports another dropped exception
WORKER = textwrap.dedent("""
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
    result = subprocess.run([sys.executable, "-c", WORKER, where], cwd=tmp_path, capture_output=True, text=True,
                            timeout=50)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("chaosgym work: stopped by SIGINT")
