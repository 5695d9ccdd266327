"""The trace cache: a second process reads the traced program back instead of tracing again, and
reading an entry never runs code from it."""

import json
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosgym.functional import trace_cache
from chaosgym.functional.trace_cache import cached_jit

# Runs in a fresh process: steps the cart pole through `Env.jit_step` and a pytree function, and
# reports how often the Python functions were traced, what they returned and the cached files.
WORKER = textwrap.dedent("""
    import json, os, sys
    import jax, jax.numpy as jnp
    import chaosgym
    from chaosgym.functional.trace_cache import cached_jit

    traced = []
    def f(tree, scale):
        traced.append(1)
        return {"sum": tree["a"] * scale + jnp.sum(tree["b"]), "pair": (tree["a"], -tree["b"])}

    g = cached_jit(f, key=("test", sys.argv[1]), donate_argnums=(0,))
    out = g({"a": jnp.ones(3), "b": jnp.arange(2.0)}, 2.0)
    env = chaosgym.make("ChaosCartPole-v0")
    state = env.jit_step(env.jit_reset(jax.random.key(0)), jnp.ones(1))
    folder = os.path.join(os.environ["CHAOSGYM_CACHE_DIR"], "traces")
    print(json.dumps({"traced": len(traced), "sum": out["sum"].tolist(), "pair1": out["pair"][1].tolist(),
                      "qpos": state.data.qpos.tolist(), "dtype": str(state.data.qpos.dtype),
                      "files": sorted(os.listdir(folder)) if os.path.isdir(folder) else []}))
""")


def run_worker(cache_dir, key="k", trace_cache="1", x64=False):
    env = {**os.environ, "CHAOSGYM_CACHE_DIR": str(cache_dir), "CHAOSGYM_COMPILATION_CACHE": "1",
           "CHAOSGYM_TRACE_CACHE": trace_cache, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1" if x64 else "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", WORKER, key], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_trace_back(tmp_path):
    cold = run_worker(tmp_path)
    assert cold["traced"] == 1 and len(cold["files"]) >= 3  # f, and the cart pole's reset and step
    warm = run_worker(tmp_path)
    assert warm["traced"] == 0, "the warm process traced the function again"
    assert warm["files"] == cold["files"]
    assert warm["sum"] == cold["sum"] == [3.0, 3.0, 3.0] and warm["pair1"] == [-0.0, -1.0]
    assert warm["qpos"] == cold["qpos"]


@pytest.mark.slow  # three subprocesses that trace and compile
def test_another_key_float64_or_the_cache_turned_off_traces_again(tmp_path):
    cold = run_worker(tmp_path)
    other = run_worker(tmp_path, key="another")
    assert other["traced"] == 1 and len(other["files"]) == len(cold["files"]) + 1
    off = run_worker(tmp_path, trace_cache="0")
    assert off["traced"] == 1 and off["files"] == other["files"]
    x64 = run_worker(tmp_path, x64=True)  # float64 traces other programs from the same arguments
    assert x64["traced"] == 1 and x64["dtype"] == "float64" and cold["dtype"] == "float32"
    assert len(x64["files"]) > len(other["files"])


def test_cached_jit_matches_jax_jit_in_process():
    def f(x, n):
        return jnp.cumsum(x) * n, {"max": jnp.max(x)}

    g = cached_jit(f, key="in-process")
    x = jnp.linspace(-1.0, 1.0, 7)
    for n in (1.5, 3):  # a float and an int: two signatures
        ours, reference = g(x, n), jax.jit(f)(x, n)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    compiled = g.compile(jax.ShapeDtypeStruct((7,), jnp.float32), 2.0)
    assert compiled is not None
    with pytest.raises(TypeError):
        g(x)  # a wrong call fails as jax.jit's would


# Runs in a fresh process: what a user does first, a Gymnasium env's reset (the C engine's start
# states come from a cached MJX program) and a functional env's jit_step; prints the step's state.
USER = textwrap.dedent("""
    import json, warnings
    warnings.simplefilter("always")
    import gymnasium, jax, jax.numpy as jnp
    import chaosgym

    obs, _ = gymnasium.make("ChaosCartPole-v0").reset(seed=0)
    env = chaosgym.make("ChaosCartPole-v0")
    state = env.jit_step(env.jit_reset(jax.random.key(0)), jnp.ones(1))
    print(json.dumps({"obs": obs.tolist(), "qpos": state.data.qpos.tolist()}))
""")


class Planted:
    """A pickle that, loaded, writes `marker`: what anyone who can write to a shared cache could plant."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "code from the trace cache ran")


def run_user(cache_dir):
    env = {**os.environ, "CHAOSGYM_CACHE_DIR": str(cache_dir), "CHAOSGYM_COMPILATION_CACHE": "1",
           "CHAOSGYM_TRACE_CACHE": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", USER], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_planted_pickle_in_every_entry_runs_nothing_and_is_replaced(tmp_path):
    first, _ = run_user(tmp_path / "cache")
    entries = sorted((tmp_path / "cache" / "traces").iterdir())
    assert len(entries) >= 3  # the C engine's start states, the MJX reset and step
    marker = tmp_path / "marker"
    for entry in entries:
        entry.write_bytes(pickle.dumps(Planted(marker)))
    second, warned = run_user(tmp_path / "cache")
    assert not marker.exists(), "loading the trace cache ran code planted in it"
    assert second == first
    assert warned.count("trace cache cannot use the entry") == 1, warned[-3000:]
    assert all(entry.read_bytes().startswith(trace_cache._FORMAT) for entry in entries)  # written anew


def test_an_entry_names_only_classes_already_registered(cartpole):
    state = jax.eval_shape(cartpole.reset, jax.random.key(0))
    leaves, tree = jax.tree.flatten(state)
    header = trace_cache._encode_tree(tree)
    assert trace_cache._decode_tree(json.loads(json.dumps(header))) == tree  # MJX's static arrays included
    program = trace_cache.export.export(jax.jit(lambda *x: list(x)))(*leaves)
    entry = trace_cache._entry(program, tree)
    assert trace_cache._read_entry(entry, leaves)[1] == tree
    for kind in ("posix:system", "builtins:object", "builtins:type", "os:PathLike", "not.imported:Class"):
        planted = entry.replace(b'"chaosgym.functional.env:State"', json.dumps(kind).encode(), 1)
        with pytest.raises(ValueError, match="damaged"):
            trace_cache._read_entry(planted, leaves)
    with pytest.raises(ValueError, match="does not match the arguments"):
        trace_cache._read_entry(entry, leaves[1:])
    with pytest.raises(trace_cache._Unencodable):
        trace_cache._encode_value(object())


# ---- the trace cache never replays outdated code -----------------------------------------------------

EDITED_WORKER = textwrap.dedent("""
    import json, os, sys
    import jax, jax.numpy as jnp
    import chaosgym
    from chaosgym.tasks import DoublePendulum

    DoublePendulum.link_length = float(sys.argv[1])
    sys.path.insert(0, os.path.dirname(sys.argv[2]))
    from user_task import UserPendulum

    def reward(env):
        return float(env.jit_step(env.jit_reset(jax.random.key(0)), jnp.ones(env.action_size)).reward)

    rewards = [reward(chaosgym.make("ChaosDoublePendulum-v0")), reward(chaosgym.Env(UserPendulum()))]
    folder = os.path.join(os.environ["CHAOSGYM_CACHE_DIR"], "traces")
    files = {name: os.stat(os.path.join(folder, name)).st_mode for name in os.listdir(folder)}
    print(json.dumps({"rewards": rewards, "files": files}))
""")

EDITED_USER_TASK = textwrap.dedent("""
    from chaosgym.tasks import DoublePendulum

    class UserPendulum(DoublePendulum):
        def reward(self, data, action, next_data):
            reward, metrics = super().reward(data, action, next_data)
            return reward - {offset}, metrics
""")

def run_edited_worker(cache_dir, module, link_length: float, offset: float) -> dict:
    module.write_text(EDITED_USER_TASK.format(offset=offset))
    env = {**os.environ, "CHAOSGYM_CACHE_DIR": str(cache_dir), "CHAOSGYM_COMPILATION_CACHE": "1",
           "CHAOSGYM_TRACE_CACHE": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", EDITED_WORKER, str(link_length), str(module)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

@pytest.mark.slow  # four subprocesses that trace and compile
def test_changed_class_attributes_and_edited_user_tasks_are_never_replayed(tmp_path):
    module = tmp_path / "user" / "user_task.py"
    module.parent.mkdir()
    first = run_edited_worker(tmp_path / "cache", module, link_length=0.5, offset=0.0)
    second = run_edited_worker(tmp_path / "cache", module, link_length=0.25, offset=3.0)
    # the reward is the tip's height over the chain's length minus 0.01 |a|^2 (one actuator): halving
    # the class's link_length doubles the first term, h = reward + 0.01
    assert second["rewards"][0] == pytest.approx(2 * first["rewards"][0] + 0.01, abs=1e-4)
    assert second["rewards"][1] == pytest.approx(2 * first["rewards"][1] + 0.01 - 3.0, abs=1e-4)
    # the chaosgym task is cached under both settings; the user's task (code the cache cannot
    # fingerprint) is never stored: reset and step of the pendulum per run, nothing more
    assert len(first["files"]) == 2 and len(second["files"]) == 4 and set(first["files"]) < set(second["files"])
    # and the files are readable by other users (the umask of the test run allowing)
    if os.umask(os.umask(0)) & 0o044 == 0:
        assert all(mode & 0o044 == 0o044 for mode in second["files"].values())

def test_object_key_sees_class_attributes_and_refuses_foreign_code(monkeypatch):
    from chaosgym.tasks import DoublePendulum

    task = DoublePendulum()
    key = trace_cache.object_key(task)
    monkeypatch.setattr(DoublePendulum, "link_length", 0.25)
    assert trace_cache.object_key(task) != key
    monkeypatch.setattr(DoublePendulum, "reward", lambda self, data, action, next_data: (0.0, {}))
    assert trace_cache.object_key(task) == trace_cache.UNCACHED

    class Mine(DoublePendulum):
        pass

    assert trace_cache.object_key(Mine()) == trace_cache.UNCACHED


# ---- a cache that cannot be written never stops the program ------------------------------------------

@pytest.mark.parametrize("where", ["/proc/x", "a file"])
def test_an_unwritable_trace_cache_warns_once_and_runs_uncached(where, tmp_path, monkeypatch):
    if where == "a file":
        where = tmp_path / "not-a-folder"
        where.write_text("")
    monkeypatch.setenv("CHAOSGYM_CACHE_DIR", str(where))
    monkeypatch.setenv("CHAOSGYM_COMPILATION_CACHE", "1")
    monkeypatch.setenv("CHAOSGYM_TRACE_CACHE", "1")
    monkeypatch.setattr(trace_cache, "_warned", set())
    with pytest.warns(RuntimeWarning, match="trace cache cannot write") as warned:
        results = [float(trace_cache.cached_jit(lambda x, k=k: x * k, ("unwritable", k))(2.0)) for k in (3, 4)]
    assert results == [6.0, 8.0]
    assert len([w for w in warned if "trace cache" in str(w.message)]) == 1
