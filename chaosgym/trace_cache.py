"""Traced programs kept on disk, so that a warm start skips JAX's tracing as well as XLA's compiling.

JAX's persistent compilation cache (on by default, see `chaosgym._setup`) keeps compiled XLA
programs, but every new process must still trace the Python function to find out which program it
needs, and for MJX that is most of a warm start: tracing a 100-step cart-pole gradient takes about
3 s of a 4.5 s warm start on a 2-core CPU. `cached_jit(fn, key)` exports the traced program once
(`jax.export`) into `<cache folder>/traces/`; a later process asking for the same key and argument
shapes reads it back and goes straight to the (cached) compilation.

A stored program is used only when everything it was traced from is the same: the caller's `key`
names what `fn` closes over (task, options, configuration), and every key also holds the source
and asset files of chaosgym (its agents included), the versions of jax, jaxlib and mujoco, and the JAX
settings that change tracing (float64 among them). With more than
one device, with the compilation cache turned off, or with `CHAOSGYM_TRACE_CACHE=0`, `cached_jit`
is plain `jax.jit`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import pickle
import pkgutil
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import jax
from jax import export

from chaosgym._setup import compilation_cache_dir



@functools.cache
def _fingerprint() -> str:
    """Hash of the code and assets a traced program may come from, and of the library versions."""
    digest = hashlib.sha256()
    for name in ("jax", "jaxlib", "mujoco", "mujoco-mjx"):
        try:
            digest.update(f"{name}={metadata.version(name)};".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=?;".encode())
    import chaosgym

    # the package's folder, and in a source checkout the top-level folders mapped into it
    top, *mapped = map(Path, chaosgym.__path__)
    folders = [top] + [root / info.name for root in mapped for info in pkgutil.iter_modules([str(root)]) if info.ispkg]
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".py", ".xml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(folder)).encode())
                digest.update(path.read_bytes())
    digest.update(jax.default_backend().encode())
    return digest.hexdigest()


def _settings() -> tuple:
    """The JAX settings that change what tracing produces (float64 above all)."""
    return tuple(getattr(jax.config, name, None) for name in (
        "jax_enable_x64", "jax_default_matmul_precision", "jax_default_prng_impl", "jax_numpy_dtype_promotion"))


def _folder() -> Path | None:
    base = compilation_cache_dir()
    if base is None or os.environ.get("CHAOSGYM_TRACE_CACHE", "1") == "0" or jax.device_count() > 1:
        return None  # off, or sharded programs: traced afresh for their mesh
    return base / "traces"


def _signature(leaves) -> tuple:
    """What tracing sees of the arguments: shapes, dtypes, weak types (Python scalars by type)."""
    return tuple((x.shape, x.dtype, getattr(x, "weak_type", False)) if hasattr(x, "dtype") else (type(x),)
                 for x in leaves)


def _aval(x) -> jax.ShapeDtypeStruct:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    aval = jax.typeof(x)
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


_PLAIN = object()  # a program traced by plain `jax.jit` (no cache)


class CachedJit:
    """`jax.jit(fn)` whose traced program is read from, or written to, the trace cache.

    A call flattens the arguments (pytrees of arrays) and runs the program for their shapes and
    dtypes; `compile(*args)` builds that program without running it (arguments may be
    `jax.ShapeDtypeStruct`s). `donate_argnums` is `jax.jit`'s.
    """

    def __init__(self, fn: Callable, key: Any, donate_argnums: tuple[int, ...] = ()):
        self.fn, self.key, self.donate_argnums = fn, repr(key), tuple(donate_argnums)
        self._plain = jax.jit(fn, donate_argnums=self.donate_argnums)
        self._programs: dict[tuple, Any] = {}
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        leaves, in_tree = jax.tree.flatten(args)
        program = self._program(args, leaves, in_tree)
        if program is _PLAIN:
            return self._plain(*args)
        call, out_tree = program
        return jax.tree.unflatten(out_tree, call(*leaves))

    def compile(self, *args):
        """The compiled program for `args`' shapes and dtypes, without running it."""
        leaves, in_tree = jax.tree.flatten(args)
        program = self._program(args, leaves, in_tree)
        return self._plain.lower(*args).compile() if program is _PLAIN else program[0].lower(*leaves).compile()

    def lower(self, *args):
        """`jax.jit(fn).lower(*args)`, traced afresh: the same program, for inspection."""
        return self._plain.lower(*args)

    def _program(self, args, leaves, in_tree):
        signature = (in_tree, _signature(leaves))
        program = self._programs.get(signature)
        if program is None:
            program = self._programs[signature] = self._load_or_export(args, leaves, in_tree)
        return program

    def _load_or_export(self, args, leaves, in_tree):
        folder = _folder()
        if folder is None:
            return _PLAIN
        # a treedef prints static node data, some of it as object addresses (MJX's contact
        # arrays): those differ between processes and are covered by the key (the model)
        tree = re.sub(r" at 0x[0-9a-f]+", "", str(in_tree))
        name = hashlib.sha256(repr((self.key, tree, _signature(leaves), _settings(), _fingerprint())).encode())
        path = folder / f"{name.hexdigest()}.bin"
        try:
            serialized, out_tree = pickle.loads(path.read_bytes())
            exported = export.deserialize(serialized)
        except Exception:  # noqa: BLE001  (missing, partial or from an older format: trace anew)
            try:
                exported, out_tree = self._export(leaves, in_tree)
                payload = pickle.dumps((exported.serialize(), out_tree))
            except Exception:  # noqa: BLE001  (what jax.export cannot express is traced as usual)
                return _PLAIN
            write_atomic(path, payload)
        offsets = [0, *itertools.accumulate(len(jax.tree.leaves(arg)) for arg in args)]
        donated = tuple(j for i in self.donate_argnums for j in range(offsets[i], offsets[i + 1]))
        return jax.jit(exported.call, donate_argnums=donated), out_tree

    def _export(self, leaves, in_tree):
        out_tree = None

        def flat(*flat_args):
            nonlocal out_tree
            out_leaves, out_tree = jax.tree.flatten(self.fn(*jax.tree.unflatten(in_tree, flat_args)))
            return out_leaves

        exported = export.export(jax.jit(flat))(*map(_aval, leaves))
        return exported, out_tree


def cached_jit(fn: Callable, key: Any, donate_argnums: tuple[int, ...] = ()) -> CachedJit:
    """`jax.jit(fn, donate_argnums=...)` with its traced program kept in the trace cache under `key`.

    `key` must tell apart everything `fn` closes over (e.g. the task, its options, a configuration);
    argument shapes and dtypes, chaosgym's own code and the library versions are added to it.
    """
    return CachedJit(fn, key, donate_argnums)


def write_atomic(path: Path, payload: bytes) -> None:
    """Write `path` whole or not at all, also with other processes writing it at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(payload)
    os.replace(tmp.name, path)
