"""Checkpoints that run no code when read: arrays in an `.npz`, everything else as JSON.

A checkpoint is one `.npz` (numpy's zip of `.npy` arrays), read with `allow_pickle=False`: an
array is plain numbers, and a file that holds anything else (an object array, a pickle) is refused.
Its member `__meta__` is UTF-8 JSON: the format, each array's path in the saved pytree, and the
caller's metadata (progress counters, the run's config). The pytree's structure is never stored: a
reader gives a template (the structure and shapes its code builds, e.g. `jax.eval_shape` of the
agent's init), and the arrays must fill it exactly, path for path, shape for shape, dtype for dtype.
So a checkpoint written in float64 (`JAX_ENABLE_X64=1`) is refused by a float32 process, naming
the dtype, instead of continuing in another precision.

Files written by chaosgym before 0.2 were pickles; they are refused with the one-off command that
converts a trusted one (`chaosgym convert-checkpoint`, which itself unpickles: only for files you
wrote yourself).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import jax
import numpy as np

from chaosgym.agents.config import BUDGET_FIELDS, TrainConfig
from chaosgym.agents.run import CheckpointError

FORMAT = "chaosgym-checkpoint/1"
META = "__meta__"
PICKLE_MAGIC = b"\x80"  # every pickle protocol >= 2 starts so


def _is_key(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def encode(tree: Any, meta: dict) -> bytes:
    """`tree`'s arrays and `meta` (JSON-able) as the bytes of one `.npz`."""
    flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
    arrays, paths, keys = {}, [], []
    for index, (path, leaf) in enumerate(flat):
        if _is_key(leaf):
            keys.append(index)
            leaf = jax.random.key_data(leaf)
        arrays[f"a{index}"] = np.asarray(leaf)
        paths.append(jax.tree_util.keystr(path))
    header = {"format": FORMAT, "paths": paths, "keys": keys, "meta": meta}
    arrays[META] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_meta(payload: bytes) -> dict:
    """The metadata of a checkpoint, its arrays unread."""
    return _open(payload)[1]["meta"]


def _open(payload: bytes):
    if payload[:1] == PICKLE_MAGIC:
        raise CheckpointError("it is a pickle (a checkpoint of chaosgym < 0.2), which could run code when read: "
                              "chaosgym does not read it; convert one you wrote yourself with `chaosgym "
                              "convert-checkpoint RUN_FOLDER --i-trust-this-folder`")
    try:
        arrays = np.load(io.BytesIO(payload), allow_pickle=False)
        header = json.loads(bytes(arrays[META]).decode())
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, EOFError) as error:
        raise CheckpointError(f"not a chaosgym checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"not a checkpoint of format {FORMAT}")
    return arrays, header


def decode(payload: bytes, template: Any, only: str | None = None) -> tuple[Any, dict]:
    """`(tree, meta)` of a checkpoint, its arrays filling `template`'s structure (arrays or
    `jax.ShapeDtypeStruct`s) exactly; a `CheckpointError` saying what differs otherwise. With `only`,
    `template` is the saved tree's entry `only` alone (e.g. "params": a policy needs no optimiser
    state, so a run whose carried env state has since gained fields still gives its policy)."""
    arrays, header = _open(payload)
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    prefix = "" if only is None else f"[{only!r}]"
    expected = [prefix + jax.tree_util.keystr(path) for path, _ in flat]
    saved = [p for p in header["paths"] if p.startswith(prefix)]
    if saved != expected:
        missing = sorted(set(expected) - set(saved))[:3]
        extra = sorted(set(saved) - set(expected))[:3]
        raise CheckpointError(f"its arrays are not this config's (missing {missing}, unexpected {extra})")
    position = {p: i for i, p in enumerate(header["paths"])}
    leaves = []
    keys = set(header["keys"])
    for name, (path, like) in zip(expected, flat):
        index = position[name]
        array = arrays[f"a{index}"]
        if index in keys:
            leaves.append(jax.random.wrap_key_data(array))
            continue
        want = (tuple(np.shape(like)), np.dtype(like.dtype))
        if (array.shape, array.dtype) != want:
            hint = (" (a float64 run resumes with JAX_ENABLE_X64=1, a float32 one without)"
                    if {array.dtype, want[1]} == {np.dtype("float32"), np.dtype("float64")} else "")
            raise CheckpointError(f"{name} is {array.dtype}{list(array.shape)}, this config "
                                  f"needs {want[1]}{list(want[0])}{hint}")
        leaves.append(array)
    return jax.tree_util.tree_unflatten(treedef, leaves), header["meta"]


def check_identity(saved: dict | None, config: TrainConfig) -> None:
    """Refuse a checkpoint of another config. The saved identity is read as a config first, so a
    setting added to chaosgym since (whose default keeps the old behaviour) is no difference."""
    try:
        saved = TrainConfig.from_json({**(saved or {}), **{k: v for k, v in config.to_json().items()
                                                           if k in BUDGET_FIELDS}}).identity()
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"its config cannot be read ({error})") from None
    if saved != config.identity():
        differ = sorted(k for k, v in config.identity().items() if saved.get(k) != v)
        raise CheckpointError(f"it is a checkpoint of another config (differs in {differ})")


# ---- plain data: nested dicts, lists, tuples, numbers, strings and numpy arrays ----------------------

def to_plain(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """`value` as JSON-able data, its numpy arrays moved into `arrays` (referenced by name) and its
    tuples marked, so that `from_plain` gives back the same structure. Anything else is refused:
    what is saved must be data, so that reading it runs nothing."""
    if isinstance(value, np.ndarray):
        name = f"p{len(arrays)}"
        arrays[name] = value
        return {"__array__": name}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [to_plain(v, arrays) for v in value]}
    if isinstance(value, list):
        return [to_plain(v, arrays) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: to_plain(v, arrays) for k, v in value.items()}
    raise TypeError(f"cannot save {type(value).__name__} as plain data")


def from_plain(value: Any, arrays) -> Any:
    """The structure `to_plain` gave, its arrays read from `arrays` (an `.npz` read with allow_pickle=False)."""
    if isinstance(value, list):
        return [from_plain(v, arrays) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.asarray(arrays[value["__array__"]])
        if set(value) == {"__tuple__"}:
            return tuple(from_plain(v, arrays) for v in value["__tuple__"])
        return {k: from_plain(v, arrays) for k, v in value.items()}
    return value


def encode_plain(value: Any) -> tuple[str, bytes]:
    """`(JSON text, npz bytes)` of plain data (`to_plain`)."""
    arrays: dict[str, np.ndarray] = {}
    text = json.dumps(to_plain(value, arrays))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return text, buffer.getvalue()


def decode_plain(text: str, payload: bytes) -> Any:
    """The plain data of `encode_plain`; a `CheckpointError` for anything that is not."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
            return from_plain(json.loads(text), {name: arrays[name] for name in arrays.files})
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, EOFError) as error:
        raise CheckpointError(f"its saved state cannot be read ({type(error).__name__}: {error})") from None
