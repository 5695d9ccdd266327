"""A fast start (issue 22): `chaosgym --help`, every command's `--help` and argument errors answer
without importing JAX or MuJoCo. Each case is a fresh interpreter; the time bound is generous (a
loaded machine), the import check is what fails when a heavy import creeps back."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chaosgym.agents.cli import COMMANDS

HEAVY = ("jax", "jaxlib", "mujoco", "optax", "torch", "stable_baselines3", "matplotlib")
BOUND_S = 30.0  # JAX alone takes seconds to import here, tens of seconds on a loaded machine

WORKER = textwrap.dedent(f"""
    import json, sys
    from chaosgym.agents.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as stop:
        code = stop.code
    print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)
""")


def run_cli(argv: list[str]) -> tuple[int, str, str, list[str]]:
    """(exit status, stdout, stderr without the report line, heavy modules imported) of `chaosgym ARGV`."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WORKER, *argv], capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    *err, report = result.stderr.splitlines()
    got = json.loads(report)
    assert elapsed < BOUND_S, f"chaosgym {' '.join(argv)} took {elapsed:.1f} s"
    return got["code"], result.stdout, "\n".join(err), got["heavy"]


def test_top_level_help_lists_every_command_without_importing_any():
    code, out, _, heavy = run_cli(["--help"])
    assert code == 0 and out.startswith("usage: chaosgym ")
    assert all(name in out for name in COMMANDS)
    assert heavy == []


def test_the_console_script_prints_its_help_without_importing_jax():
    script = Path(sys.executable).with_name("chaosgym")
    check = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", check, str(script), "--help"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.startswith("usage: chaosgym ")
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines()}
    assert not imported & set(HEAVY)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_imports_no_jax(command):
    code, out, _, heavy = run_cli([command, "--help"])
    assert code == 0 and out.startswith(f"usage: chaosgym {command} ")
    assert heavy == []


@pytest.mark.parametrize("agent, flag", [("apg", "--num-envs"), ("ppo", "--n-steps"), ("brax-ppo", "--unroll-length")])
def test_each_agents_own_flags_are_listed_without_importing_jax(agent, flag):
    code, out, _, heavy = run_cli(["train", "--agent", agent, "--help"])
    assert code == 0 and flag in out and f"{agent}'s own settings" in out
    assert heavy == []


@pytest.mark.parametrize("argv, message", [
    (["nope"], "argument COMMAND: invalid choice: 'nope'"),
    (["demo", "--num-envs", "0"], "argument --num-envs: expected a positive integer, got '0'"),
    (["diagnose", "--out", "x", "--task", "ChaosNope-v0"], "unknown task id 'ChaosNope-v0'; valid ids: "),
    (["diagnose", "--out", "x", "--lyapunov-k", "0"], "argument --lyapunov-k: must be a positive integer, got 0"),
    (["diagnose", "--out", "x", "--lyapunov-kk", "2"], "--lyapunov-kk (did you mean --lyapunov-k?)"),
    (["reproduce", "stable-bptt", "--flows", "R,X"], "--flows: unknown X; valid: R, M, S, C"),
    (["reproduce", "stable-bptt", "--states", "12"], "states must be a positive multiple of the batch size 8"),
    (["reproduce", "stable-bptt", "--physics", "exact"], "argument --physics: invalid choice: 'exact'"),
    (["train", "--task", "ChaosNope-v0", "--agent", "full", "--out", "x"],
     "unknown task id 'ChaosNope-v0'; valid ids: ChaosAnt-v0, ChaosCartPole-v0, ChaosDoublePendulum-v0"),
    (["train", "--task", "ChaosCartPole-v0", "--agent", "full", "--out", "x", "--updates", "-1"],
     "argument --updates: must be a positive integer, or None, got -1"),
    (["train", "--task", "ChaosCartPole-v0", "--agent", "apg", "--out", "x", "--num-envs", "0"],
     "argument --num-envs: must be a positive integer, got 0"),
    (["train", "--task", "ChaosCartPole-v0", "--agent", "apg", "--out", "x", "--batch-size", "4"],
     "unrecognized arguments: --batch-size"),
    (["compare", "--agents", "nope", "--out", "x"], "unknown agent(s) ['nope'] in --agents"),
    (["compare", "--agents", "apg", "--set", "apg.batch_size=4", "--out", "x"],
     "--set apg.batch_size=4: apg has no setting 'batch_size'"),
    (["render", "--run", "x"], "x is not a run folder of `chaosgym train` (it has no config.json)"),
], ids=lambda case: " ".join(case) if isinstance(case, list) else "")
def test_argument_errors_are_one_line_without_importing_jax(argv, message, tmp_path):
    argv = [str(tmp_path / word) if word == "x" else word for word in argv]
    code, out, err, heavy = run_cli(argv)
    assert code == 2 and out == ""
    assert message in err.splitlines()[-1], err
    assert heavy == []
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_the_startup_benchmark_times_every_bar(tmp_path):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "first_output.py"
    done = subprocess.run([sys.executable, str(script), "--startup", "--repeats", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    header, rule, *rows = done.stdout.strip().splitlines()
    assert header.startswith("| first output of |") and len(rows) == 5
    for row in rows:
        label, median, slowest, runs = [cell.strip() for cell in row.strip("|").split("|")]
        assert 0 < float(median) <= float(slowest) and runs == "1", row
    assert [row.split("|")[1].strip() for row in rows][-2:] == ["`gymnasium.make` + reset, cold",
                                                                 "`gymnasium.make` + reset, warm"]
