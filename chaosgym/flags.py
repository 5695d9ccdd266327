"""Command-line flags generated from config dataclasses, so that every setting is declared once.

Each field of a (frozen) config dataclass is one setting: its default, and its `metadata`, make one
argparse flag (`batch_size` -> `--batch-size`). Metadata keys:

* ``help`` -- the flag's help text; the default is appended as "(default: ...)" unless it is None,
  False or empty, or the text already says it;
* ``choices`` -- valid values (argparse checks a single value; a tuple's items are the config's to check);
* ``group`` -- title of the argument group the flag is listed under;
* ``items``, ``example`` -- how a comma-separated tuple's error message names its items ("layer
  sizes") and shows an example (default: the field's default);
* ``flag=False`` -- a setting the command sets itself (e.g. the estimator's name, from `--agent`).

A nested dataclass's fields become flags of their own name (`estimator.es_pairs` -> `--es-pairs`),
with the defaults of the parent field's default instance and the parent's ``group``; the parent's
``defaults`` ({name: text}) describes a nested default the command fills in ("the task's preset"),
and its ``only`` (names) keeps just those nested fields as settings of this config.

Flags default to "not given", so a command knows what the user set (`given`) and builds its config
from that (`build`), or lets presets fill in the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from typing import Any, Callable, NamedTuple

from chaosgym.tasks import parse_task_kwargs
from chaosgym.validation import InvalidSetting  # noqa: F401  (re-exported: a refused setting names its flag)


class _Setting(NamedTuple):
    path: str  # "batch_size", or "estimator.es_pairs" for a nested field
    field: dataclasses.Field
    hint: Any
    default: Any  # dataclasses.MISSING where the setting is required
    default_text: str | None  # the default as the help shows it, where the value does not say it
    group: str | None


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _settings(cls, prefix: str = "", group: str | None = None, only=None, default_texts=None,
              instance=None) -> list[_Setting]:
    """Every setting of `cls` a command line can give, nested dataclasses flattened; the other
    arguments are those of the parent field of a nested `cls`."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("flag", True) is False or (only is not None and f.name not in only):
            continue
        default = getattr(instance, f.name) if instance is not None else _default(f)
        if dataclasses.is_dataclass(hints[f.name]):
            out += _settings(hints[f.name], f"{prefix}{f.name}.", f.metadata.get("group", group),
                             f.metadata.get("only"), f.metadata.get("defaults", {}),
                             None if default is dataclasses.MISSING else default)
        else:
            out.append(_Setting(prefix + f.name, f, hints[f.name], default, (default_texts or {}).get(f.name),
                                f.metadata.get("group", group)))
    return out


def fields(cls) -> list[tuple[str, dataclasses.Field, Any]]:
    """(path, field, type hint) of every setting of `cls` (`estimator.horizon` for nested ones)."""
    return [(s.path, s.field, s.hint) for s in _settings(cls)]


def flag_name(path: str) -> str:
    """The flag of a setting: `estimator.es_pairs` -> `--es-pairs`."""
    return "--" + path.rpartition(".")[2].replace("_", "-")


def finite_float(text: str) -> float:
    """A float flag's type: any finite number (nan and inf would never end or never compare)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number; got {text!r}")
    return value


def _comma_separated(item: type, what: str, example: str | None) -> Callable[[str], tuple]:
    item = finite_float if item is float else item

    def parse(text: str) -> tuple:
        try:
            values = tuple(item(x.strip()) for x in text.split(","))
        except (ValueError, argparse.ArgumentTypeError):
            values = ()
        if not values:
            hint = f", e.g. {example}" if example else ""
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}{hint}; got {text!r}")
        return values
    return parse


def _kwargs(text: str) -> dict:
    try:
        return parse_task_kwargs(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _render(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A type for an `X | None` setting: "none" gives None, anything else an X."""
    def convert(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _parser(s: _Setting) -> tuple[Any, bool]:
    """(argparse type, is a switch) of a setting."""
    hint, optional = s.hint, False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the flag gives an X, or none
        hint, optional = next(a for a in typing.get_args(hint) if a is not type(None)), True
    if hint is bool:
        return None, True
    if hint is dict:
        return _kwargs, False
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        example = s.field.metadata.get("example") or (_render(s.default) if isinstance(s.default, tuple) else None)
        what = s.field.metadata.get("items") or {int: "integers", float: "numbers"}.get(item, "names")
        return _comma_separated(item, what, example), False
    parse = finite_float if hint is float else hint
    return (_or_none(parse) if optional else parse), False


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                  required: tuple[str, ...] = (), default_texts: dict[str, str] | None = None,
                  only: tuple[str, ...] | None = None, group: str | None = None,
                  choices: dict[str, tuple] | None = None) -> None:
    """One flag per setting of `cls` (those in `only`, if given) but the paths in `skip`; a setting
    without a default, or in `required`, is a required flag (its help shows no default).
    `default_texts` (path -> text) describes defaults the command fills in itself, e.g. each task's
    preset; `group` titles the flags' group (a setting's own `group` metadata comes first);
    `choices` (path -> values) lists a setting's valid values. A boolean setting is a pair of
    switches (`--layer-norm`, `--no-layer-norm`), one switch where its name is itself a negation
    (`no_termination`). Only given flags reach the namespace, each under its path."""
    groups = {}
    for s in _settings(cls):
        if s.path in skip or (only is not None and s.path not in only):
            continue
        s = s._replace(group=s.group or group)
        name = s.path.rpartition(".")[2]
        kind, switch = _parser(s)
        text = s.field.metadata.get("help", "")
        is_required = s.path in required or s.default is dataclasses.MISSING
        shown = (default_texts or {}).get(s.path) or s.default_text or (
            None if s.default is None or s.default is False or s.default == {} or is_required
            else _render(s.default))
        if shown is not None and "default:" not in text:
            text += f" (default: {shown})"
        if s.group is not None and s.group not in groups:
            groups[s.group] = parser.add_argument_group(s.group)
        target = groups.get(s.group, parser)
        flag = "--" + name.replace("_", "-")
        if switch:  # a pair (--layer-norm, --no-layer-norm), or one switch for a setting that is a negation
            action = "store_true" if name.startswith("no_") else argparse.BooleanOptionalAction
            target.add_argument(flag, dest=s.path, action=action, default=argparse.SUPPRESS, help=text)
            continue
        valid = (choices or {}).get(s.path) or s.field.metadata.get("choices")
        choices_ = valid if typing.get_origin(s.hint) is not tuple else None
        target.add_argument(flag, dest=s.path, type=kind, default=argparse.SUPPRESS, help=text, choices=choices_,
                            required=is_required,
                            metavar=None if choices_ else name.upper())


def given(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The settings of `cls` the user gave on the command line, by path."""
    paths = {s.path for s in _settings(cls)}
    return {k: v for k, v in vars(args).items() if k in paths}


def _split(changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    top, nested = {}, {}
    for path, value in changes.items():
        head, dot, rest = path.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    return top, nested


def replace(config, changes: dict[str, Any]):
    """`config` with `changes` (path -> value; nested fields as `estimator.<name>`)."""
    top, nested = _split(changes)
    top |= {name: replace(getattr(config, name), values) for name, values in nested.items()}
    return dataclasses.replace(config, **top)


def build(cls, changes: dict[str, Any]):
    """A `cls` from its defaults and `changes` (path -> value), e.g. `build(cls, given(args, cls))`."""
    top, nested = _split(changes)
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    top |= {name: replace(_default(defaults[name]), values) for name, values in nested.items()}
    return cls(**top)
