"""What every face checks at its boundary before anything reaches the device: actions, reset options,
the autoreset mode, batch sizes against memory, closed envs, keywords that belong to Gymnasium,
and processes forked after JAX started."""

from __future__ import annotations

import os
from typing import Any

import gymnasium
import jax
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from chaosgym.functional.env import Env
from chaosgym.faces.seeding import AHEAD
from chaosgym.validation import POSITIVE_INT, UserError


def check_actions(actions: Any, shape: tuple[int, ...]) -> np.ndarray:
    """An action (or a batch) as float32, refusing one of another shape, dtype or with NaN or inf
    (`ValueError`, nothing stepped). Out-of-range values pass: every backend clips them to [-1, 1]."""
    array = np.asarray(actions)
    if array.dtype.kind not in "fiu":  # floats and integers; booleans, complex, strings and objects are not
        raise ValueError(f"expected a real-valued action array of shape {shape} (float32), got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"expected action shape {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        # where, not the whole array: one line, also for a batch of thousands
        bad = np.argwhere(~np.isfinite(array))
        first = tuple(int(i) for i in bad[0])
        raise ValueError(f"action contains NaN or inf in {len(bad)} of {array.size} entries, the first "
                         f"{array[first]} at index {first}; nothing was stepped")
    return array.astype(np.float32, copy=False)


def check_reset_options(options: Any, accepted: tuple[str, ...]) -> dict:
    """`options` of a `reset` as a dict; refuse a non-dict, and keys outside `accepted`, naming them."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"options must be None or a dict, got {options!r}")
    unknown = sorted(map(repr, set(options) - set(accepted)))
    if unknown:
        known = f"the accepted ones: {', '.join(map(repr, accepted))}" if accepted else "this env accepts none"
        raise ValueError(f"unknown reset option(s) {', '.join(unknown)}; {known}")
    return options


def refuse_if_closed(env: Any, call: str) -> None:
    if env.closed:
        raise gymnasium.error.ClosedEnvironmentError(f"{call}() on a closed {type(env).__name__}; make a new one")


def refuse_episode_length(task_kwargs: dict) -> None:
    """A Gymnasium face's time limit is Gymnasium's own: refuse chaosgym's `episode_length` there,
    which `gymnasium.make` would otherwise pass on beside its `TimeLimit` (and so ignore)."""
    if "episode_length" in task_kwargs:
        raise ValueError(f"episode_length={task_kwargs['episode_length']!r} is not an option of a Gymnasium env; "
                         f"set the time limit Gymnasium's way: max_episode_steps={task_kwargs['episode_length']!r}")


def parse_autoreset_mode(mode: str | AutoresetMode) -> AutoresetMode:
    """Gymnasium's `AutoresetMode` from itself, its value (`"SameStep"`) or its name in any case (`"same_step"`)."""
    if isinstance(mode, AutoresetMode):
        return mode
    spelling = mode.lower().replace("_", "").replace("-", "") if isinstance(mode, str) else None
    for member in AutoresetMode:
        if spelling == member.value.lower():
            return member
    valid = ", ".join(f"{m.name.lower()!r}" for m in AutoresetMode)
    raise ValueError(f"autoreset_mode must be one of {valid} (or a gymnasium.vector.AutoresetMode), got {mode!r}")


def spaces_of(env: Env) -> tuple[spaces.Box, spaces.Box]:
    """The Gymnasium observation and action spaces of one env of `env` (actions in [-1, 1])."""
    observation = spaces.Box(-np.inf, np.inf, (env.observation_size,), np.float32)
    action = spaces.Box(-1.0, 1.0, (env.action_size,), np.float32)
    return observation, action


def check_num_envs(num_envs: Any) -> int:
    """`num_envs` as an int, refused unless a positive integer."""
    POSITIVE_INT("num_envs", num_envs)
    return int(num_envs)


# What one environment's seed stream holds on the host: a numpy Generator with its PCG64 (measured
# with tracemalloc, numpy 2) and the seeds it draws ahead
_SEED_STREAM_BYTES = 900 + 4 * AHEAD


def _available_memory() -> dict[str, int]:
    """Bytes free for a batch, by where it lives: the host (Linux's MemAvailable, else the free
    pages) and, when JAX runs on an accelerator, its devices together."""
    available = {}
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        available["host"] = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            available["host"] = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            pass
    if jax.default_backend() != "cpu":
        stats = [device.memory_stats() or {} for device in jax.devices()]
        if all("bytes_limit" in s for s in stats):
            available["device"] = sum(s["bytes_limit"] - s.get("bytes_in_use", 0) for s in stats)
    return available


def check_batch_fits(env: Env, num_envs: int) -> None:
    """Refuse, before allocating anything, a batch whose memory estimate exceeds what is available.

    The estimate is a lower bound: every environment's whole `mjx.Data` twice (a step's input and
    output, which XLA materialises; its temporaries come on top) and its seed stream on the host.
    """
    state = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(env.empty_data))
    device, host = 2 * state * num_envs, _SEED_STREAM_BYTES * num_envs
    available = _available_memory()
    if "device" not in available:  # JAX on the CPU: its arrays are host memory too
        host, device = host + device, 0
    for where, need in (("host", host), ("device", device)):
        if where in available and need > available[where]:
            gib = 2.0 ** 30
            raise UserError(
                f"num_envs={num_envs:,} needs at least {need / gib:,.1f} GiB of {where} memory ({2 * state:,} bytes of "
                f"MJX state per environment, a step's input and output, and {_SEED_STREAM_BYTES} bytes of seed "
                f"stream), more than the {available[where] / gib:,.1f} GiB available; use fewer environments")


# Whether this process built a face (and so started JAX's runtime threads), and whether it is a
# child forked from a process that had: JAX cannot run in such a child (it waits forever on the
# parent's threads, which the child does not have), as Gymnasium's AsyncVectorEnv would make it.
_jax_started = False
_forked_after_jax = False


def _after_fork_in_child() -> None:
    global _forked_after_jax
    _forked_after_jax = _forked_after_jax or _jax_started


os.register_at_fork(after_in_child=_after_fork_in_child)


def refuse_if_forked_after_jax() -> None:
    """Refuse to build a face in a process forked after JAX started (it would hang at its first
    JAX call), naming the start methods that work; note that this process has started JAX."""
    global _jax_started
    if _forked_after_jax:
        raise RuntimeError("this process was forked after JAX started, and JAX cannot run in it (it would hang): "
                           "start subprocesses with 'spawn' or 'forkserver', e.g. gymnasium.make_vec(id, num_envs, "
                           "vectorization_mode='async', vector_kwargs={'context': 'spawn'})")
    _jax_started = True
