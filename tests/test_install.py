"""A non-editable install finds its MJCF files from any directory, and Gymnasium finds the ids."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Left out of the copy that is built: git's data, the .gitignore'd outputs, and the build folder an
# in-tree build would otherwise leave behind (stale files there can end up in a later wheel).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".whl", ".gl", "MUJOCO_LOG.TXT")

# Runs in a fresh interpreter whose only copy of chaosgym is the installed one.
CHECK_INSTALLED = textwrap.dedent("""
    import sys
    from pathlib import Path

    import gymnasium

    target = Path(sys.argv[1]).resolve()
    # the "module:id" form imports chaosgym itself and builds the env from the installed assets
    env = gymnasium.make("chaosgym:ChaosCartPole-v0")
    env.reset(seed=0)
    import chaosgym
    from chaosgym.registry import make_task

    assert target in Path(chaosgym.__file__).resolve().parents, chaosgym.__file__
    for env_id, task in chaosgym.TASKS.items():
        assert target in Path(str(chaosgym.functional.env.asset_path(task.asset))).resolve().parents
        model = make_task(env_id).mj_model()
        assert model.nu >= 1, env_id
    import chaosgym.agents.cli  # the agents install as chaosgym's subpackage, not as a top-level one

    assert target in Path(chaosgym.agents.cli.__file__).resolve().parents
    print("ok", sorted(chaosgym.TASKS))
""")


@pytest.mark.slow
def test_installed_package_loads_its_assets(tmp_path):
    source, target = tmp_path / "source", tmp_path / "site-packages"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCE)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    assert sorted(p.name for p in (target / "chaosgym" / "assets").glob("*.xml")) == [
        "ant.xml", "cartpole.xml", "double_pendulum.xml"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", CHECK_INSTALLED, str(target)], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout


def test_source_checkout_on_sys_path_loads_the_assets():
    # `python -c ...` in the repository root imports the source package, which has no
    # chaosgym.assets subpackage (the MJCF files sit in the top-level assets/ folder).
    check = ("import chaosgym; env = chaosgym.make('ChaosAnt-v0'); "
             "assert chaosgym.__file__.startswith(%r), chaosgym.__file__; print(env.action_size)" % str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "8"


def test_the_core_never_imports_the_agents():
    package = REPO_ROOT / "chaosgym"
    core = sorted(".".join(p.relative_to(package).with_suffix("").parts).removesuffix(".__init__")
                  for p in package.rglob("*.py") if p.stem != "__main__" and p.name != "__init__.py" or p.parent != package)
    # optional faces import their extra's library (brax): those are checked where it is installed
    core = [m for m in core if "__pycache__" not in m]
    check = ("import sys, importlib; import chaosgym; "
             f"[importlib.import_module('chaosgym.' + m) for m in {core!r}]; "
             "print(sorted(m for m in sys.modules if m.startswith('chaosgym.agents')))")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-2] == "[]" and len(core) > 10


def _requirements() -> list:
    """Every requirement pyproject.toml declares: the dependencies and those of every extra."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in listed]


def _lock() -> dict:
    """requirements-lock.txt as {canonical name: version}."""
    from packaging.utils import canonicalize_name

    lines = (REPO_ROOT / "requirements-lock.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(p) == 2 for p in pins), "every line of the lock file is NAME==VERSION"
    return {canonicalize_name(name): version for name, version in pins}


def test_installed_mujoco_and_mjx_versions_match():
    # MJX is released with MuJoCo, version for version; a mismatched pair fails at run time
    from importlib.metadata import version

    assert version("mujoco") == version("mujoco-mjx"), (version("mujoco"), version("mujoco-mjx"))


def test_pyproject_pins_mujoco_with_mjx_and_bounds_every_other_requirement():
    requirements = {r.name: r.specifier for r in _requirements()}
    pins = {name: str(requirements[name]) for name in ("mujoco", "mujoco-mjx")}
    assert pins["mujoco"].startswith("==") and pins["mujoco"] == pins["mujoco-mjx"], pins
    unbounded = [name for name, spec in requirements.items()
                 if not any(s.operator in ("<", "==") for s in spec)]
    assert not unbounded, f"no upper bound on {unbounded}"


def test_lock_file_satisfies_pyproject_and_install_script_uses_it():
    lock = _lock()
    for requirement in _requirements():
        name = requirement.name.lower().replace("_", "-")
        assert name in lock, f"{requirement.name} is not in requirements-lock.txt"
        assert requirement.specifier.contains(lock[name]), (str(requirement), lock[name])
    assert lock["mujoco"] == lock["mujoco-mjx"]
    # a pin with a local label (torch==2.13.0+cpu) could never be met from PyPI
    assert "+" not in lock["torch"]
    assert "-c requirements-lock.txt" in (REPO_ROOT / "scripts" / "install.sh").read_text()


@pytest.mark.slow
def test_install_script_in_a_fresh_copy_installs_the_lock(tmp_path):
    """scripts/install.sh end to end, in a copy with no .venv: the lock's versions, PyTorch's CPU
    build (or PyPI's, where PyTorch's index cannot be reached, as on a machine that only reaches
    PyPI), and a working command."""
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCE)
    install = subprocess.run(["bash", "scripts/install.sh"], cwd=source, capture_output=True, text=True,
                             timeout=1800)
    assert install.returncode == 0, install.stderr[-3000:]
    assert "install: torch 2.13.0" in install.stdout and "build" in install.stdout, install.stdout
    freeze = subprocess.run([str(source / ".venv/bin/pip"), "freeze", "--all"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    from packaging.utils import canonicalize_name

    installed = {canonicalize_name(n): v.partition("+")[0] for n, _, v in (line.partition("==") for line in freeze)
                 if v}
    lock = _lock()
    assert {name: installed.get(name) for name in lock} == lock
    assert subprocess.run([str(source / ".venv/bin/chaosgym"), "--help"], capture_output=True, text=True,
                          timeout=120).returncode == 0
