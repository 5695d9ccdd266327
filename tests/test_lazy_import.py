"""`import chaosgym` costs no JAX or MuJoCo import (issue 22): the ids, their presets and their
Gymnasium registration are known before any task imports, the public names load on first use, and
the compilation cache is set up through JAX's environment variables."""

import json
import os
import subprocess
import sys
import textwrap

import gymnasium

import chaosgym
from chaosgym import tasks as task_ids
from chaosgym.presets import PRESETS
from chaosgym.registry import TASKS

HEAVY = ("jax", "mujoco", "mujoco.mjx", "optax", "torch", "matplotlib")


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_import_chaosgym_registers_every_id_and_imports_no_jax_until_a_public_name_is_used():
    result = _python(f"""
        import json, sys
        import gymnasium
        import chaosgym
        from chaosgym import tasks as task_ids
        from chaosgym.presets import PRESETS
        try:
            task_ids.check_task_id("ChaosNope-v0")
        except ValueError as error:
            message = str(error)
        before = [name for name in {HEAVY!r} if name in sys.modules]
        ids = sorted(i for i in gymnasium.registry if i.startswith("Chaos"))
        presets = sorted(PRESETS)
        env = chaosgym.make("ChaosDoublePendulum-v0")  # the first public name: JAX and MJX load now
        print(json.dumps({{"before": before, "message": message, "ids": ids, "presets": presets,
                           "after": "jax" in sys.modules, "env": type(env).__name__,
                           "rollout": callable(chaosgym.rollout), "tasks": sorted(chaosgym.TASKS)}}))
    """)
    got, = map(json.loads, result.stdout.splitlines())  # and no other line: MJX's Warp notice is held back
    builtin = sorted(task_ids.BUILTIN)
    assert got["before"] == []
    assert got["message"] == f"unknown task id 'ChaosNope-v0'; valid ids: {', '.join(task_ids.BUILTIN)}"
    assert got["ids"] == got["presets"] == got["tasks"] == builtin
    assert got["after"] and got["env"] == "Env"
    assert got["rollout"]  # the function, though `chaosgym.functional.rollout`, the submodule, is imported by now


def test_the_static_id_table_is_what_the_task_modules_register():
    registered = {env_id: cls for env_id, cls in TASKS.items() if cls.__module__.startswith("chaosgym.tasks.")}
    assert list(registered) == list(task_ids.BUILTIN)
    for env_id, builtin in task_ids.BUILTIN.items():
        assert registered[env_id].episode_length == task_ids.episode_length_of(builtin.task_class), env_id
        assert gymnasium.spec(env_id).max_episode_steps == registered[env_id].episode_length
        assert PRESETS[env_id] == builtin.presets, env_id
    assert chaosgym.TASKS is TASKS


# Where JAX's compilation cache is after `import chaosgym` (which must not import JAX itself), and
# in a child process started with the changes of argv[1] to the environment.
CACHE_WORKER = """
    import json, os, subprocess, sys
    import chaosgym
    assert "jax" not in sys.modules
    import jax
    child = subprocess.run([sys.executable, "-c", "import chaosgym, jax; print(jax.config.jax_compilation_cache_dir)"],
                           env={**os.environ, **json.loads(sys.argv[1])}, capture_output=True, text=True, check=True)
    print(json.dumps([jax.config.jax_compilation_cache_dir, child.stdout.strip()]))
"""


def _cache_folders(tmp_path, parent: dict, child: dict) -> list:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CHAOSGYM_", "JAX_", "_CHAOSGYM"))}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(CACHE_WORKER), json.dumps(child)],
                            capture_output=True, text=True, env={**env, **parent}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_a_child_process_applies_its_own_cache_settings_not_the_folder_its_parent_chose(tmp_path):
    mine, other = str(tmp_path / "mine"), str(tmp_path / "other")
    assert _cache_folders(tmp_path, {"CHAOSGYM_CACHE_DIR": mine}, {"CHAOSGYM_COMPILATION_CACHE": "0"}) == [mine, "None"]
    assert _cache_folders(tmp_path, {"CHAOSGYM_CACHE_DIR": mine}, {"CHAOSGYM_CACHE_DIR": other}) == [mine, other]


def test_a_folder_the_user_gave_jax_is_left_alone_in_a_child_process_too(tmp_path):
    given = str(tmp_path / "given")
    assert _cache_folders(tmp_path, {"JAX_COMPILATION_CACHE_DIR": given, "CHAOSGYM_CACHE_DIR": str(tmp_path / "x")},
                          {}) == [given, given]
