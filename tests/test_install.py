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
        assert target in Path(str(chaosgym.env.asset_path(task.asset))).resolve().parents
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
    core = sorted(p.stem for p in (REPO_ROOT / "chaosgym").glob("*.py") if p.stem not in ("__init__", "__main__"))
    check = ("import sys, importlib; import chaosgym; "
             f"[importlib.import_module('chaosgym.' + m) for m in {core!r}]; "
             "print(sorted(m for m in sys.modules if m.startswith('chaosgym.agents')))")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-2] == "[]" and len(core) > 10
