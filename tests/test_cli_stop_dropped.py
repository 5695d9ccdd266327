"""A stop that lands where Python drops exceptions (a gc callback, a `__del__`: JAX runs a gc
callback on every collection) still ends the command with its one line and status (issue 21:
the SB3 kill test's SIGINT was printed as "Exception ignored" and the run went on)."""

import signal
import subprocess
import sys
import textwrap

# a command whose run() gets the stop inside a __del__, as a SIGINT arriving during JAX's gc
# callback does, and then works on for a minute
WORKER = textwrap.dedent("""
    import signal, sys, time, types
    from chaosgym.agents import cli

    def run(args):
        class Dropping:
            def __del__(self):
                cli._stop(signal.SIGINT, None)
        Dropping()
        time.sleep(60)
        return 0

    sys.modules["stop_worker"] = types.SimpleNamespace(add_arguments=lambda parser: None, run=run)
    cli.COMMANDS["work"] = cli.Command("stop_worker", "stop_worker", "a command")
    sys.exit(cli.main(["work"]))
""")


def test_a_stop_dropped_by_a_del_or_gc_callback_still_ends_the_command(tmp_path):
    result = subprocess.run([sys.executable, "-c", WORKER], cwd=tmp_path, capture_output=True, text=True, timeout=50)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("chaosgym work: stopped by SIGINT")
