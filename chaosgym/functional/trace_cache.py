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
settings that change tracing (float64 among them). Code outside chaosgym cannot be fingerprinted
(a task of your own may call anything, anywhere), so a program that runs any is never stored: a key
holding `UNCACHED` (see `object_key`) is plain `jax.jit`, as is every key with more than one device,
with the compilation cache turned off, or with `CHAOSGYM_TRACE_CACHE=0`. XLA's own compilation
cache, keyed on the traced program itself, still serves all of them.

An entry holds no code and reading one runs none: a version line, a JSON header with the output's
tree structure (`_encode_tree`: node types named, their static data as JSON, resolved only among
classes already imported and registered with JAX) and `jax.export`'s own serialisation of the
program (flatbuffers). An entry that does not parse, or whose program does not match the
arguments, is ignored with a one-time warning and written anew. A program whose output structure
JSON cannot express (static data of an unknown kind) is never stored. Programs are still programs:
share a cache folder only with people whose code you would run (JAX's compilation cache beside
it holds compiled executables).

A cache folder that cannot be read or written (read-only, another user's, not a folder) never
stops the program: it warns once and traces as usual. Files are written with the permissions
`open` would give them (the umask's), so a shared cache is readable by the other users.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import pkgutil
import re
import sys
import types
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax import export

try:  # the registry `PyTreeDef.from_node_data_and_children` needs, private to JAX
    from jax._src.tree_util import default_registry
except ImportError:  # a JAX without it: the trace cache is off (`_folder`)
    default_registry = None

from chaosgym._setup import compilation_cache_dir
from chaosgym.functional.compiling import jit, top_level
from chaosgym.files import write_atomic

# In a key: the program runs code that the trace cache cannot fingerprint; trace it every time.
UNCACHED = "<uncached>"

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


def _is_chaosgym(module: str | None) -> bool:
    return module is not None and (module == "chaosgym" or module.startswith("chaosgym."))


def _value_key(value: Any) -> Any:
    """A process-independent description of an attribute's value, or UNCACHED."""
    if isinstance(value, (types.FunctionType, types.MethodType, property, staticmethod, classmethod,
                          functools.partial, type)):
        target = getattr(value, "__func__", getattr(value, "fget", getattr(value, "func", value)))
        module = getattr(target, "__module__", None)
        return f"{module}.{getattr(target, '__qualname__', '')}" if _is_chaosgym(module) else UNCACHED
    if hasattr(value, "__array__") and hasattr(value, "dtype"):  # numpy and JAX arrays: whole, not repr's summary
        array = np.asarray(value)
        return ("array", str(array.dtype), array.shape, hashlib.sha256(array.tobytes()).hexdigest())
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, *map(_value_key, value))
    if isinstance(value, dict):
        return ("dict", *sorted((repr(k), _value_key(v)) for k, v in value.items()))
    text = repr(value)
    # a default repr names an address: it neither says what the object does nor survives a restart
    return UNCACHED if re.search(r" at 0x[0-9a-f]+", text) else text


def object_key(obj: Any) -> tuple | str:
    """What a traced program that calls `obj`'s methods depends on beyond chaosgym's own files: the
    class attributes of every class of its MRO (changed at run time, e.g. `DoublePendulum.link_length`)
    and its instance attributes. `UNCACHED` when any class, method or attribute holds code that is
    not chaosgym's (a user's own subclass, a function assigned to an attribute)."""
    classes = [cls for cls in type(obj).__mro__ if cls is not object]
    if not all(_is_chaosgym(cls.__module__) for cls in classes):
        return UNCACHED
    attributes = [(cls.__qualname__, name, _value_key(value)) for cls in classes
                  for name, value in vars(cls).items() if not (name.startswith("__") and name.endswith("__"))]
    attributes += [("self", name, _value_key(value)) for name, value in sorted(vars(obj).items())]
    if any(_holds_uncached(key) for *_, key in attributes):
        return UNCACHED
    return (f"{type(obj).__module__}.{type(obj).__qualname__}", tuple(attributes))


def argument_key(value: Any) -> Any:
    """What tells one argument of a factory of traced functions apart in a key: the object's own
    `cache_key` where it has one (an `Env`'s: task, options and model), else its value's."""
    own = getattr(value, "cache_key", None)
    return _value_key(value) if own is None else own


def keyed_by_arguments(factory: Callable) -> Callable:
    """Decorate a factory of traced functions: it is called with `key=`, the factory's name and every
    one of its arguments (`argument_key`, defaults included), for the `cached_jit`s it makes. Keys
    written by hand miss an argument added later, and a stale program is then read back silently."""
    signature = inspect.signature(factory)
    public = signature.replace(parameters=[p for name, p in signature.parameters.items() if name != "key"])
    name = f"{factory.__module__}.{factory.__qualname__}"

    @functools.wraps(factory)
    def keyed(*args, **kwargs):
        bound = public.bind(*args, **kwargs)
        bound.apply_defaults()
        key = (name, tuple((argument, argument_key(value)) for argument, value in bound.arguments.items()))
        return factory(*bound.args, key=key, **bound.kwargs)

    keyed.__signature__ = public
    return keyed


def _holds_uncached(key: Any) -> bool:
    return key == UNCACHED if isinstance(key, str) else isinstance(key, tuple) and any(map(_holds_uncached, key))


def _settings() -> tuple:
    """The JAX settings that change what tracing produces (float64 above all)."""
    return tuple(getattr(jax.config, name, None) for name in (
        "jax_enable_x64", "jax_default_matmul_precision", "jax_default_prng_impl", "jax_numpy_dtype_promotion"))


def _folder() -> Path | None:
    base = compilation_cache_dir()
    if (base is None or os.environ.get("CHAOSGYM_TRACE_CACHE", "1") == "0" or jax.device_count() > 1
            or default_registry is None):
        return None  # off, or sharded programs: traced afresh for their mesh
    return base / "traces"


def _signature(leaves) -> tuple:
    """What tracing sees of the arguments: shapes, dtypes, weak types."""
    return tuple((a.shape, a.dtype, a.weak_type) for a in map(_aval, leaves))


def _aval(x) -> jax.ShapeDtypeStruct:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    aval = jax.typeof(x)
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


_PLAIN = object()  # a program traced by plain `jax.jit` (no cache)


_warned: set[str] = set()


def _warn_once(what: str, where: Path, error: Exception) -> None:
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"chaosgym's trace cache cannot {what} {where} ({error}); tracing as usual instead. "
                      "Set CHAOSGYM_CACHE_DIR to a writable folder, or CHAOSGYM_TRACE_CACHE=0 to turn it off.",
                      RuntimeWarning, stacklevel=5)


# ---- an entry: a version line, a JSON header, jax.export's flatbuffers -------------------------

_FORMAT = b"chaosgym-trace 1\n"
_LEAF = jax.tree.structure(0)
# static node data that is an array wrapped to be hashable (MJX's contact arrays): rebuilt by the
# wrapper's constructor, the only constructor an entry can name
_ARRAY_WRAPPERS = ("mujoco.mjx._src.dataclasses:_NumPyArrayHashWrapper",)


class _Unencodable(ValueError):
    """A tree structure or static value JSON cannot express."""


def _type_name(kind: type) -> str:
    return f"{kind.__module__}:{kind.__qualname__}"


def _resolve(name: str) -> type:
    """The class `module:qualname` names, among the modules already imported; nothing is imported."""
    if name == "builtins:NoneType":
        return type(None)
    module, _, qualname = name.partition(":")
    found = sys.modules.get(module)
    for part in qualname.split("."):  # attribute by attribute, from `__dict__`: no `__getattr__` runs
        found = getattr(found, "__dict__", {}).get(part)
    if not isinstance(found, type):
        raise ValueError(f"no class {name} in the modules imported")
    return found


def _encode_value(value: Any) -> Any:
    """Static node data as JSON: None, bool, int, float, str, tuples and lists of them, NumPy
    scalars and numeric arrays, and arrays in `_ARRAY_WRAPPERS`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return {type(value).__name__: [_encode_value(v) for v in value]}
    if isinstance(value, (np.generic, np.ndarray)) and np.dtype(value.dtype).kind in "biufc":
        array = np.asarray(value)
        return {"numpy" if isinstance(value, np.generic) else "ndarray":
                [array.dtype.str, list(array.shape), array.tolist()]}
    if _type_name(type(value)) in _ARRAY_WRAPPERS:
        return {"wrapped": [_type_name(type(value)), _encode_value(value.array)]}
    raise _Unencodable(f"static data of type {type(value).__qualname__}")


def _decode_value(data: Any) -> Any:
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    (tag, content), = data.items()
    if tag in ("tuple", "list"):
        return {"tuple": tuple, "list": list}[tag](map(_decode_value, content))
    if tag in ("numpy", "ndarray"):
        dtype, shape, values = content
        if np.dtype(dtype).kind not in "biufc":
            raise ValueError(f"dtype {dtype} in a trace entry")
        array = np.array(values, np.dtype(dtype)).reshape(shape)
        return array[()] if tag == "numpy" else array
    if tag == "wrapped" and content[0] in _ARRAY_WRAPPERS:
        return _resolve(content[0])(_decode_value(content[1]))
    raise ValueError(f"unknown value {tag!r} in a trace entry")


def _encode_tree(treedef) -> Any:
    """A tree structure as JSON: None for a leaf, else [node type, static data, children]."""
    if jax.tree_util.treedef_is_leaf(treedef) and treedef.num_leaves == 1:
        return None
    kind, data = treedef.node_data()
    if "<locals>" in kind.__qualname__:
        raise _Unencodable(f"the local class {kind.__qualname__}")
    return [_type_name(kind), _encode_value(data), [_encode_tree(child) for child in treedef.children()]]


def _decode_tree(data: Any):
    """The tree structure `_encode_tree` wrote; a node type must be registered with JAX already."""
    if data is None:
        return _LEAF
    kind, node_data, children = data
    return jax.tree_util.PyTreeDef.from_node_data_and_children(
        default_registry, (_resolve(kind), _decode_value(node_data)), [_decode_tree(c) for c in children])


def _entry(exported: export.Exported, out_tree) -> bytes:
    header = json.dumps({"out_tree": _encode_tree(out_tree)}, separators=(",", ":"))
    return _FORMAT + header.encode() + b"\n" + bytes(exported.serialize())


def _read_entry(payload: bytes, leaves) -> tuple[export.Exported, Any]:
    """(program, output structure) of an entry for arguments `leaves`; ValueError if it is not one."""
    if not payload.startswith(_FORMAT):
        raise ValueError("not a trace entry of this version")
    header, _, program = payload[len(_FORMAT):].partition(b"\n")
    try:
        out_tree = _decode_tree(json.loads(header)["out_tree"])
        exported = export.deserialize(bytearray(program))
    except Exception as error:  # noqa: BLE001  (whatever a damaged header or program raises)
        raise ValueError(f"damaged ({type(error).__name__}: {error})") from None
    # shapes and dtypes (jax.export keeps no weak types; the entry's name holds them)
    if ([(a.shape, a.dtype) for a in exported.in_avals] != [signature[:2] for signature in _signature(leaves)]
            or len(exported.out_avals) != out_tree.num_leaves):
        raise ValueError("its program does not match the arguments")
    return exported, out_tree


class CachedJit:
    """`jax.jit(fn)` whose traced program is read from, or written to, the trace cache, compiled with
    chaosgym's XLA options (`chaosgym.functional.compiling`).

    A call runs one `jax.jit` function: jax's own dispatch (in C++) finds the compiled program
    for the arguments' shapes and dtypes, so a call costs what a `jax.jit` call costs. What that
    function traces, once per signature, is not `fn` but the program stored for it, read back
    from the cache or exported there first. `compile(*args)` builds the program without running it
    (arguments may be `jax.ShapeDtypeStruct`s). `donate_argnums` is `jax.jit`'s.
    """

    def __init__(self, fn: Callable, key: Any, donate_argnums: tuple[int, ...] = ()):
        self.fn, self.donate_argnums = fn, tuple(donate_argnums)
        self.key = None if _holds_uncached(key) else repr(key)
        self._plain = jit(fn, donate_argnums=self.donate_argnums)

        def traced(*args):  # named as `fn`, so that JAX's and XLA's logs name the program after it
            return self._stored_or_traced(*args)

        traced.__name__ = traced.__qualname__ = getattr(fn, "__name__", "cached")
        self._jitted = jit(traced, donate_argnums=self.donate_argnums)
        # inside another trace (jit, eval_shape): inlined there, where JAX allows no compile options
        self._nested = jax.jit(traced, donate_argnums=self.donate_argnums)
        self._programs: dict[tuple, Any] = {}
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        return (self._jitted if top_level() else self._nested)(*args)

    def _stored_or_traced(self, *args):
        """What `jax.jit` traces: a call of the stored program, or `fn` itself where none can be stored."""
        leaves, in_tree = jax.tree.flatten(args)
        program = self._program(leaves, in_tree)
        if program is _PLAIN:
            return self.fn(*args)
        call, out_tree = program
        return jax.tree.unflatten(out_tree, call(*leaves))

    def compile(self, *args):
        """The compiled program for `args`' shapes and dtypes, without running it."""
        return self._jitted.lower(*args).compile()

    def lower(self, *args):
        """`jax.jit(fn).lower(*args)`, traced afresh: the same program, for inspection."""
        return self._plain.lower(*args)

    def _program(self, leaves, in_tree):
        signature = (in_tree, _signature(leaves))
        program = self._programs.get(signature)
        if program is None:
            program = self._programs[signature] = self._load_or_export(leaves, in_tree)
        return program

    def _load_or_export(self, leaves, in_tree):
        folder = _folder()
        if folder is None or self.key is None:
            return _PLAIN
        # a treedef prints static node data, some of it as object addresses (MJX's contact
        # arrays): those differ between processes and are covered by the key (the model)
        tree = re.sub(r" at 0x[0-9a-f]+", "", str(in_tree))
        name = hashlib.sha256(repr((self.key, tree, _signature(leaves), _settings(), _fingerprint())).encode())
        path = folder / f"{name.hexdigest()}.trace"
        try:
            exported, out_tree = _read_entry(path.read_bytes(), leaves)
            return exported.call, out_tree  # traced into the caller's jax.jit, which donates
        except (FileNotFoundError, NotADirectoryError):
            pass  # not stored yet (or no folder at all: the write will say so)
        except OSError as error:
            _warn_once("read", folder, error)
        except ValueError as error:  # written by someone else, damaged, or planted: never run, replaced
            _warn_once("use the entry", path, error)
        try:
            exported, out_tree = self._export(leaves, in_tree)
            payload = _entry(exported, out_tree)
        except Exception:  # noqa: BLE001  (what jax.export or the JSON header cannot express is traced as usual)
            return _PLAIN
        if "write" not in _warned:  # one failed write per process is enough to know
            try:
                write_atomic(path, payload)
            except OSError as error:
                _warn_once("write", folder, error)
        return exported.call, out_tree

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

    `key` must tell apart everything `fn` closes over (e.g. the task, its options, a configuration):
    derive it from the arguments of the factory that builds `fn` (`keyed_by_arguments`). Argument
    shapes and dtypes, chaosgym's own code and the library versions are added to it.
    """
    return CachedJit(fn, key, donate_argnums)
