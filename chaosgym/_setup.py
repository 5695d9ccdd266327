"""Process-wide defaults applied on `import chaosgym`, before JAX and MuJoCo are imported.

This module imports neither (`import chaosgym` stays fast): both read what is set here from the
environment when they are first imported.

* Headless rendering: with no display and no `MUJOCO_GL` set, MuJoCo renders through EGL (or
  OSMesa) where that library is installed (`HEADLESS_GL`). A MuJoCo imported before chaosgym has
  bound its default, GLFW, already; `chaosgym.faces.rendering` then gives its renderer this choice.
* JAX's persistent compilation cache is on by default in `~/.cache/chaosgym/jax` (XLA compiles
  MJX gradients for a minute or more on CPU; the cache makes the second start fast). Override the
  folder with `CHAOSGYM_CACHE_DIR`, or turn the cache off with `CHAOSGYM_COMPILATION_CACHE=0`.
  `$XDG_CACHE_HOME/chaosgym/jax` where that is set; with no home folder at all (no HOME, no
  passwd entry) the cache is off. It is given to JAX as the variables `JAX_COMPILATION_CACHE_DIR`,
  `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` (0.5) and `JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES`
  (0), or through `jax.config` where JAX was imported first. A cache folder the user already gave
  JAX (that variable, or `jax.config` before `import chaosgym`) is left alone.
* XLA's C++ log is limited to fatal messages (`TF_CPP_MIN_LOG_LEVEL=3`, unless the user set it):
  on a small CPU its "slow_operation_alarm ... Very slow compile? If you want to file a bug" error
  fires on ordinary MJX compiles, which chaosgym announces itself (`chaosgym.agents.announce`);
  real failures still reach Python as exceptions.
* MJX's notice about its optional Warp backend is held back where chaosgym imports MJX
  (`chaosgym._mjx`).
"""

import os
import sys
from ctypes.util import find_library
from pathlib import Path


def _headless_gl() -> str | None:
    """The GL backend MuJoCo can render with off screen here: EGL, else OSMesa, else none."""
    return next((name for name, lib in (("egl", "EGL"), ("osmesa", "OSMesa")) if find_library(lib)), None)


# The GL backend chaosgym chose for MuJoCo ("egl", "osmesa"), or None where a display exists or the
# user set MUJOCO_GL. Only a library that is there: MuJoCo fails on import when MUJOCO_GL names a missing one.
HEADLESS_GL = None
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and (HEADLESS_GL := _headless_gl()):
    os.environ["MUJOCO_GL"] = HEADLESS_GL

# before jax is imported: jax itself sets a default of 1, which shows the slow-compile alarm
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The folder chaosgym itself gave JAX, passed to child processes beside JAX's variable: a child
# tells it from a folder the user gave JAX, and applies its own CHAOSGYM_* settings instead.
_CHOSEN = "_CHAOSGYM_JAX_COMPILATION_CACHE_DIR"


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
    inherited = os.environ.pop(_CHOSEN, None)
    jax = sys.modules.get("jax")  # imported before chaosgym: it has read the variables already
    current = jax.config.jax_compilation_cache_dir if jax else os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if current and current != inherited:
        return  # the user's folder
    folder = compilation_cache_dir()
    if folder is None:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
        if jax and current:
            jax.config.update("jax_compilation_cache_dir", None)
        return
    os.environ.update({"JAX_COMPILATION_CACHE_DIR": str(folder), _CHOSEN: str(folder)})
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    if jax:
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
        jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                          int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


_enable_compilation_cache()
