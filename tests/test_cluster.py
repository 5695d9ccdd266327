"""`compare` and `reproduce` on Ray (`--workers`, `--ray-address`; `chaosgym.agents.cluster`).

Fast tier: the flags, Ray never imported without them, the worker's environment, the compile count
and the scheduling of units that share programs. Slow tier, on a local 2-CPU Ray instance: the same
numbers as the serial command, and the faults (a worker killed in mid-run, the driver interrupted, a
unit's user error)."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from chaosgym.agents import cluster, commands
from chaosgym.agents.cli import main
from chaosgym.agents.commands import ClusterOptions

ROOT = Path(__file__).resolve().parent.parent
CHAOSGYM = [sys.executable, "-m", "chaosgym.agents.cli"]
TIMED = {"wall_time", "compile_time"}  # the columns that differ between any two runs


def _env() -> dict:
    # Ray >= 2.59 turns token authentication on for the clusters it starts; the test's own cluster
    # (`ray start --head` below) and its drivers run without, so that none needs the token's file
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "TQDM_DISABLE": "1", "RAY_AUTH_MODE": "disabled"}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMED} for row in csv.DictReader(f)]


def _arrays(path: Path) -> dict:
    """A checkpoint's arrays (its JSON, with the timings, apart)."""
    with np.load(path, allow_pickle=False) as saved:
        return {k: saved[k] for k in saved.files if k != "__meta__"}


def assert_same_runs(out: Path, reference: Path) -> None:
    """The same table and, run by run, the same metrics and parameters, bit for bit (timings apart)."""
    assert _rows(out / "results.csv") == _rows(reference / "results.csv")
    folders = sorted(p.name for p in (reference / "runs").iterdir())
    assert sorted(p.name for p in (out / "runs").iterdir()) == folders
    for name in folders:
        assert _rows(out / "runs" / name / "metrics.csv") == _rows(reference / "runs" / name / "metrics.csv"), name
        mine, theirs = _arrays(out / "runs" / name / "checkpoint.npz"), _arrays(reference / "runs" / name / "checkpoint.npz")
        assert mine.keys() == theirs.keys() and all(np.array_equal(mine[k], theirs[k]) for k in mine), name


# ---- fast ------------------------------------------------------------------------------------------

@pytest.mark.slow  # a whole compare in a fresh process (~20 s cold, a minute under load)
def test_without_workers_or_ray_address_compare_never_imports_ray(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from chaosgym.agents.cli import main
        status = main(["compare", "--tasks", "ChaosCartPole-v0", "--agents", "full", "--seeds", "1",
                       "--env-steps", "80", "--eval-episodes", "2", "--set", "estimator.horizon=20",
                       "--set", "full.batch_size=4", "--out", {str(tmp_path / "cmp")!r}])
        print("status", status, "imported", sorted(m for m in ("ray", "chaosgym.agents.cluster") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "status 0 imported []" in done.stdout
    assert (tmp_path / "cmp" / "summary.md").exists()


@pytest.mark.parametrize("argv, message", [
    (["compare", "--workers", "0"], "--workers: expected a number of workers (a whole number >= 1), got '0'"),
    (["compare", "--compile-cache", "c"], "--compile-cache apply to Ray workers: give --workers N or --ray-address"),
    (["compare", "--cpus-per-unit", "2"], "--cpus-per-unit apply to Ray workers"),
    (["compare", "--ray-address", " "], "--ray-address needs an address"),
    (["reproduce", "stable-bptt", "--compile-cache", "c", "--cpus-per-unit", "2"],
     "--compile-cache and --cpus-per-unit apply to Ray workers"),
])
def test_the_ray_flags_are_checked_before_anything_runs(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["compare"], ["reproduce", "stable-bptt"]], ids=" ".join)
def test_without_ray_installed_the_flags_say_how_to_install_it(command, monkeypatch, tmp_path, capsys):
    real = commands.importlib.util.find_spec
    monkeypatch.setattr(commands.importlib.util, "find_spec", lambda name: None if name == "ray" else real(name))
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--workers", "2", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "which is not installed: pip install 'chaosgym[cluster]'" in capsys.readouterr().err


def test_the_flags_give_the_cluster_options(monkeypatch):
    real = commands.importlib.util.find_spec  # Ray installed or not
    monkeypatch.setattr(commands.importlib.util, "find_spec", lambda name: "ray" if name == "ray" else real(name))
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    args = _compare_args("--workers", "3", "--compile-cache", "/shared/jax", "--cpus-per-unit", "2")
    commands.compare_config(args)
    assert args.cluster == ClusterOptions(3, None, Path("/shared/jax"), 2)
    # the driver leaves the GPU memory to the units (JAX would take 75% of a GPU at its first use)
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    args = _compare_args("--ray-address", "auto")
    commands.compare_config(args)
    assert args.cluster == ClusterOptions(None, "auto", None, 1)
    args = _compare_args()
    commands.compare_config(args)
    assert args.cluster is None


def _compare_args(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    commands.compare_arguments(parser)
    return parser.parse_args(argv)


def test_every_worker_compiles_into_the_shared_cache_and_imports_this_checkout(tmp_path, monkeypatch):
    env = cluster.worker_environment(ClusterOptions(2, compile_cache=tmp_path / "jax"))
    assert env["CHAOSGYM_CACHE_DIR"] == env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "jax")
    assert env["CHAOSGYM_COMPILATION_CACHE"] == "1"
    # a source checkout leads the workers' import path; an installed chaosgym (CI's `pip install .`)
    # is found by the workers as it was by the driver, with nothing added
    checkout = SimpleNamespace(__file__=str(ROOT / "chaosgym" / "__init__.py"))
    installed = SimpleNamespace(__file__=str(tmp_path / "site-packages" / "chaosgym" / "__init__.py"))
    monkeypatch.setattr(cluster, "chaosgym", checkout)
    assert cluster.worker_environment(ClusterOptions(2))["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    monkeypatch.setattr(cluster, "chaosgym", installed)
    assert "PYTHONPATH" not in cluster.worker_environment(ClusterOptions(2))
    # by default the driver's own cache; with none, none
    monkeypatch.setattr(cluster, "jax", SimpleNamespace(config=SimpleNamespace(jax_compilation_cache_dir=str(tmp_path))))
    assert cluster.worker_environment(ClusterOptions(2))["CHAOSGYM_CACHE_DIR"] == str(tmp_path)
    monkeypatch.setattr(cluster, "jax", SimpleNamespace(config=SimpleNamespace(jax_compilation_cache_dir=None)))
    env = cluster.worker_environment(ClusterOptions(2))
    assert env["CHAOSGYM_COMPILATION_CACHE"] == "0" and "CHAOSGYM_CACHE_DIR" not in env


def test_a_worker_that_sets_the_cache_before_importing_chaosgym_compiles_into_it(tmp_path):
    """What a Ray task's environment does: the variables `worker_environment` gives, set before the
    worker's first import of chaosgym (so before JAX's), point its JAX at the shared folder."""
    node = {**_env(), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "node's"), "CHAOSGYM_COMPILATION_CACHE": "0"}
    env = {**node, **cluster.worker_environment(ClusterOptions(2, compile_cache=tmp_path / "shared"))}
    code = "import chaosgym, jax; print(jax.config.jax_compilation_cache_dir)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip() == str(tmp_path / "shared"), done.stderr[-2000:]


def test_compiles_are_counted_cold_and_loaded_from_the_cache(tmp_path):
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp
        import chaosgym
        from chaosgym.agents.cluster import counting_compiles
        f = lambda x: jnp.cumsum(jnp.sin(x) * 3.0)
        with counting_compiles() as first:
            jax.jit(f)(jnp.ones(123))
        jax.clear_caches()  # a second process, as far as the compiled programs go
        with counting_compiles() as second:
            jax.jit(f)(jnp.ones(123))
        print(first.cold, first.loaded, second.cold, second.loaded)
    """)
    env = {**_env(), "CHAOSGYM_CACHE_DIR": str(tmp_path / "cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    cold, loaded, cold_again, loaded_again = map(int, done.stdout.split())
    assert cold >= 1 and loaded == 0  # f, and jnp.ones' own programs
    assert cold_again == 0 and loaded_again == cold  # every one of them read back from the cache


def test_a_unit_waits_while_another_of_its_program_compiles_and_others_go_first():
    compiled = {"apg": False, "full": False}

    def unit(agent, seed):
        return cluster.Unit(f"{agent} {seed}", print, (), program=agent, compiled=lambda: compiled[agent])

    apg0, full0, apg1, full1, other = unit("apg", 0), unit("full", 0), unit("apg", 1), unit("full", 1), \
        cluster.Unit("group", print, ())
    assert cluster._startable([apg1, full1, other], [apg0, full0]) is other
    assert cluster._startable([apg1, full1], [apg0, full0]) is None  # the worker waits
    compiled["full"] = True  # full0 has written its first checkpoint: its programs are in the cache
    assert cluster._startable([apg1, full1], [apg0, full0]) is full1
    assert cluster._startable([apg1, full1], []) is apg1  # nothing compiling: in order


def test_compile_counts_add_up():
    total = cluster.CompileCount(2, 30.0, 1, 0.5) + cluster.CompileCount(1, 10.0, 3, 1.5)
    assert total == cluster.CompileCount(3, 40.0, 4, 2.0)
    assert total.describe() == "3 programs compiled cold (40 s), 4 loaded from the compilation cache (2 s)"


# ---- slow: a local 2-CPU Ray instance -------------------------------------------------------------

# a tiny grid whose runs last a few seconds each (long enough to be killed in mid-run)
GRID = ["compare", "--tasks", "ChaosCartPole-v0", "--agents", "apg,full", "--seeds", "2", "--env-steps", "32768",
        "--eval-episodes", "2", "--set", "apg.num_envs=4", "--set", "apg.window=16", "--set", "estimator.horizon=20",
        "--set", "full.batch_size=4"]


def _run(argv: list[str], timeout: float = 1200) -> subprocess.CompletedProcess:
    done = subprocess.run(CHAOSGYM + argv, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    """The grid run the ordinary way, in one process."""
    out = tmp_path_factory.mktemp("serial") / "cmp"
    _run([*GRID, "--out", str(out)])
    return out


def _descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        children = [child for child, parent in parents.items() if parent == todo[-1]]
        todo.pop()
        found.update(children)
        todo += children
    return found


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists() and
            "Z" not in Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1]}


def _start_until_a_checkpoint(out: Path) -> subprocess.Popen:
    """The grid on 2 workers, returned once some run has written its first checkpoint (in mid-run)."""
    process = subprocess.Popen(CHAOSGYM + [*GRID, "--workers", "2", "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 900
    while not list(out.glob("runs/*/checkpoint.npz")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint in 900 s"
        time.sleep(0.05)
    return process


@pytest.mark.slow
def test_two_workers_give_the_serial_runs_numbers(serial, tmp_path):
    out = tmp_path / "cmp"
    done = _run([*GRID, "--workers", "2", "--out", str(out)])
    assert "4 unit(s) on a local Ray instance of 2 worker(s)" in done.stdout
    assert done.stdout.count("reading back") == 4  # the driver trains nothing: it reads the folders
    assert_same_runs(out, serial)
    # a second call finds every run finished: Ray is not even started
    again = _run([*GRID, "--workers", "2", "--out", str(out)])
    assert "Ray" not in again.stdout and again.stdout.count("reading back") == 4


@pytest.fixture
def ray_cluster(tmp_path):
    """An existing 2-CPU Ray cluster on this machine (`ray start --head`, in its own session, ended
    by its process group): its address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while head.poll() is None and time.monotonic() < deadline:  # until its GCS answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        assert head.poll() is None, "ray start --head failed"
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


@pytest.mark.slow
def test_ray_address_sends_the_units_to_an_existing_cluster(serial, ray_cluster, tmp_path):
    out = tmp_path / "cmp"
    done = _run([*GRID, "--ray-address", ray_cluster, "--out", str(out)])
    assert f"4 unit(s) on the Ray cluster at {ray_cluster}" in done.stdout
    assert_same_runs(out, serial)


@pytest.mark.slow
def test_reproduce_on_two_workers_gives_the_serial_groups(tmp_path):
    grid = ["reproduce", "stable-bptt", "--poles", "1,2", "--flows", "R,C", "--clip", "NONE", "--seeds", "2",
            "--epochs", "2", "--states", "16", "--physics", "equations", "--no-progress", "--checkpoint-every", "1"]
    _run([*grid, "--out", str(tmp_path / "serial")])
    done = _run([*grid, "--workers", "2", "--out", str(tmp_path / "ray")])
    assert "2 unit(s) on a local Ray instance of 2 worker(s)" in done.stdout
    for group in ("poles1-RC", "poles2-RC"):
        assert _rows(tmp_path / "ray" / group / "metrics.csv") == _rows(tmp_path / "serial" / group / "metrics.csv")
    assert (tmp_path / "ray" / "results.md").read_text() == (tmp_path / "serial" / "results.md").read_text()


@pytest.mark.slow
def test_a_worker_killed_in_mid_run_is_retried_from_its_checkpoint(serial, tmp_path):
    out = tmp_path / "cmp"
    process = _start_until_a_checkpoint(out)
    units = [pid for pid in _descendants(process.pid) if _title(pid).startswith("ray::run_unit")]
    assert units, "no worker running a unit"
    os.kill(units[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=1200)
    assert process.returncode == 0, stderr[-3000:]
    assert_same_runs(out, serial)  # Ray ran the unit again; it resumed: no row lost, none repeated


@pytest.mark.slow
def test_an_interrupted_driver_ends_its_workers_and_a_rerun_continues(serial, tmp_path):
    out = tmp_path / "cmp"
    process = _start_until_a_checkpoint(out)
    ray_processes = _descendants(process.pid)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGINT and "stopped by SIGINT" in stderr, stderr[-3000:]
    deadline = time.monotonic() + 60  # Ray's processes end with the driver
    while _alive(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(ray_processes), [_title(pid) for pid in _alive(ray_processes)]
    done = _run([*GRID, "--workers", "2", "--out", str(out)])
    assert done.stdout.count("reading back") == 4
    assert_same_runs(out, serial)


@pytest.mark.slow
def test_a_units_user_error_stops_the_grid_in_one_line_and_the_other_folders_stay_whole(serial, tmp_path):
    out = tmp_path / "cmp"
    # a folder holding the start of another run (another learning rate) under one unit's name
    bad = out / "runs" / "ChaosCartPole-v0-full-seed1"
    bad.mkdir(parents=True)
    config = json.loads((serial / "runs" / bad.name / "config.json").read_text())
    config["settings"]["learning_rate"] = 0.5
    (bad / "config.json").write_text(json.dumps(config))
    done = subprocess.run(CHAOSGYM + [*GRID, "--workers", "2", "--out", str(out)], capture_output=True, text=True,
                          env=_env(), timeout=1200)
    assert done.returncode == 2, done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"chaosgym compare: error: cannot resume {bad}") and "learning_rate" in error
    assert "Traceback" not in done.stderr and not (out / "results.csv").exists()
    # with the stray folder gone, a rerun finishes every run, the others from where they were
    (bad / "config.json").unlink()
    _run([*GRID, "--workers", "2", "--out", str(out)])
    assert_same_runs(out, serial)
