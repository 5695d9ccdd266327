"""Where the compilation cache goes when the environment is odd (issue 21): no home folder at all,
empty or relative cache variables, a cache path with spaces and non-ASCII characters. Each case is a
fresh process that imports chaosgym, steps a Gymnasium env and says where its cache went."""

import json
import os
import subprocess
import sys
import textwrap

# argv[1] == "no-home": the passwd lookup fails too, as for a container run as an arbitrary uid
# without an entry (Path.home() then raises instead of falling back to it)
WORKER = textwrap.dedent("""
    import json, sys
    if sys.argv[1] == "no-home":
        import pwd
        def no_entry(uid):
            raise KeyError(uid)
        pwd.getpwuid = no_entry
    import gymnasium, jax
    import chaosgym
    from chaosgym._setup import compilation_cache_dir

    env = gymnasium.make("ChaosCartPole-v0")
    env.reset(seed=0)
    _, reward, *_ = env.step(env.action_space.sample())
    folder = compilation_cache_dir()
    print(json.dumps({"folder": folder and str(folder), "jax": jax.config.jax_compilation_cache_dir,
                      "reward": float(reward)}))
""")


def _run(tmp_path, environment: dict, mode: str = "") -> dict:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("HOME", "XDG_CACHE_HOME", "CHAOSGYM_CACHE_DIR", "CHAOSGYM_COMPILATION_CACHE")}
    result = subprocess.run([sys.executable, "-c", WORKER, mode], cwd=cwd, capture_output=True, text=True,
                            env={**env, **environment}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_no_home_folder_turns_the_cache_off_and_the_env_still_steps(tmp_path):
    got = _run(tmp_path, {}, mode="no-home")
    assert got["folder"] is None and got["jax"] is None
    assert -1.0 <= got["reward"] <= 0.0
    assert os.listdir(tmp_path / "cwd") == []


def test_empty_cache_variables_are_unset_and_nothing_lands_in_the_current_folder(tmp_path):
    home = tmp_path / "home"
    got = _run(tmp_path, {"HOME": str(home), "XDG_CACHE_HOME": "", "CHAOSGYM_CACHE_DIR": ""})
    assert got["folder"] == got["jax"] == str(home / ".cache" / "chaosgym" / "jax")
    assert os.listdir(tmp_path / "cwd") == []
    assert os.listdir(home / ".cache" / "chaosgym" / "jax")  # the step's reset program was cached


def test_a_relative_cache_path_with_spaces_and_non_ascii_characters_is_made_absolute(tmp_path):
    home = tmp_path / "home"
    got = _run(tmp_path, {"HOME": str(home), "XDG_CACHE_HOME": "relative", "CHAOSGYM_CACHE_DIR": "a b/ü"})
    folder = tmp_path / "cwd" / "a b" / "ü"
    assert got["folder"] == got["jax"] == str(folder)
    assert os.listdir(folder)
    assert not home.exists()
