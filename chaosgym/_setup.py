"""Process-wide defaults applied on `import chaosgym`, before MuJoCo is imported.

* Headless rendering: with no display and no `MUJOCO_GL` set, MuJoCo renders through EGL (or
  OSMesa) where that library is installed.
* JAX's persistent compilation cache is on by default in `~/.cache/chaosgym/jax` (XLA compiles
  MJX gradients for a minute or more on CPU; the cache makes the second start fast). Override the
  folder with `CHAOSGYM_CACHE_DIR`, or turn the cache off with `CHAOSGYM_COMPILATION_CACHE=0`.
  A cache folder the user already gave JAX is left alone. `$XDG_CACHE_HOME/chaosgym/jax` where
  that is set; with no home folder at all (no HOME, no passwd entry) the cache is off.
* XLA's C++ log is limited to fatal messages (`TF_CPP_MIN_LOG_LEVEL=3`, unless the user set it):
  on a small CPU its "slow_operation_alarm ... Very slow compile? If you want to file a bug" error
  fires on ordinary MJX compiles, which chaosgym announces itself (`chaosgym.agents.announce`);
  real failures still reach Python as exceptions.
* MJX is imported once with its notice about the optional Warp backend held back ("Failed to
  import warp"): it is printed to stdout on every import and would land in piped tables and CSVs.
"""

import contextlib
import io
import os
from pathlib import Path


def _headless_gl() -> str | None:
    """The GL backend MuJoCo can render with off screen here: EGL, else OSMesa, else none."""
    from ctypes.util import find_library

    return next((name for name, lib in (("egl", "EGL"), ("osmesa", "OSMesa")) if find_library(lib)), None)


# Only a library that is there: MuJoCo fails on import when MUJOCO_GL names a missing one.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and (_gl := _headless_gl()):
    os.environ["MUJOCO_GL"] = _gl

# before jax is imported: jax itself sets a default of 1, which shows the slow-compile alarm
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402


def compilation_cache_dir() -> Path | None:
    """The folder of the persistent compilation cache, or None when it is off."""
    if os.environ.get("CHAOSGYM_COMPILATION_CACHE", "1") == "0":
        return None
    # absolute, so that a later chdir or a child process in another folder finds the same cache;
    # an empty value is unset: Path("") would put the cache in the current folder
    if chosen := os.environ.get("CHAOSGYM_CACHE_DIR"):
        return Path(chosen).absolute()
    # the XDG spec: an empty or relative XDG_CACHE_HOME is ignored
    if (xdg := Path(os.environ.get("XDG_CACHE_HOME", ""))).is_absolute():
        return xdg / "chaosgym" / "jax"
    try:
        return Path.home() / ".cache" / "chaosgym" / "jax"
    except RuntimeError:  # no HOME and no passwd entry (a container run as an arbitrary uid): no cache
        return None


def _enable_compilation_cache() -> None:
    folder = compilation_cache_dir()
    if folder is None or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_enable_compilation_cache()


def _import_mjx_quietly() -> None:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        from mujoco import mjx  # noqa: F401
    other = [line for line in captured.getvalue().splitlines()
             if not line.startswith(("Failed to import warp", "Failed to import mujoco_warp"))]
    if other:
        print("\n".join(other))


_import_mjx_quietly()
