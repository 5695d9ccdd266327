"""Checks of the values a user gives, written once: the config classes and the command line's
argparse types share them. Nothing here imports JAX.

A bad value raises `InvalidSetting` (a `UserError`, itself a `ValueError`), which names the
setting: the command line shows it as one line under the flag the user typed, Python code sees the
field. Anything else that escapes a command is a bug and keeps its traceback (`chaosgym.agents.cli`).

    from chaosgym.validation import POSITIVE_INT, setting

    @dataclass(frozen=True)
    class MyConfig:
        num_envs: int = field(default=64, metadata=setting("environments stepped together", POSITIVE_INT))

        def __post_init__(self):
            check_fields(self)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable


class UserError(ValueError):
    """A bad input from the user (a value, an id, an option, a file): shown as one line, no traceback."""


class InvalidSetting(UserError):
    """A setting's value refused: `setting` is its path (`num_envs`, `estimator.horizon`), so that a
    command line names the flag the user typed and Python code the field."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting} {problem}")
        self.setting, self.problem = setting, problem


def is_int(value: Any) -> bool:
    """An integer that is not a bool (`True` is an int to Python, never a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool) or type(value).__name__ in (
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def is_number(value: Any) -> bool:
    """A finite real number that is not a bool."""
    return (is_int(value) or isinstance(value, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Check:
    """One rule for a value: `test(value)` says whether it holds; `expected` says what it asks for
    ("a positive integer"), and is the message when it fails."""

    test: Callable[[Any], bool]
    expected: str

    def __call__(self, name: str, value: Any) -> None:
        """Refuse `value` of the setting `name` unless it holds."""
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidSetting(name, f"must be {self.expected}, got {value!r}")

    def optional(self) -> Check:
        """The same rule, or None."""
        return Check(lambda v: v is None or self.test(v), f"{self.expected}, or None")

    def saying(self, expected: str) -> Check:
        """The same rule, its message in words of the setting's own (a unit, a limit's reason, an example)."""
        return Check(self.test, expected)


def int_at_least(least: int) -> Check:
    return Check(lambda v: is_int(v) and v >= least,
                 "a positive integer" if least == 1 else f"an integer >= {least}")


def int_in(low: int, high: int) -> Check:
    """An integer from `low` to `high`, both included."""
    return Check(lambda v: is_int(v) and low <= v <= high, f"an integer in {low}..{high}")


def number_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """A finite number in the interval, each end open or closed."""
    def test(v):
        return (is_number(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high))
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return Check(test, f"a number in {left}{low:g}, {high:g}{right}")


def one_of(*choices: Any) -> Check:
    return Check(lambda v: v in choices, "one of " + ", ".join(map(repr, choices)))


def one_or_more_of(*choices: Any) -> Check:
    """A non-empty tuple (or list) of names out of `choices`."""
    return Check(lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(x in choices for x in v),
                 "one or more of " + ", ".join(map(str, choices)))


def tuple_of(item: Check, *, nonempty: bool = True) -> Check:
    return Check(lambda v: isinstance(v, (tuple, list)) and (len(v) > 0 or not nonempty)
                 and all(item.test(x) for x in v), f"one or more of {item.expected}, comma-separated")


POSITIVE_INT = int_at_least(1)
NON_NEGATIVE_INT = int_at_least(0)
SEED = Check(lambda v: is_int(v) and 0 <= v < 2**63, "an integer in [0, 2**63) (a Gymnasium seed)")
POSITIVE = Check(lambda v: is_number(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = Check(lambda v: is_number(v) and v >= 0, "a finite number >= 0")
FRACTION = number_in(0, 1)  # discounts, lambdas, Polyak rates
ADAM_BETA = number_in(0, 1, high_open=True)
BOOL = Check(lambda v: isinstance(v, bool), "True or False")
LAYERS = tuple_of(POSITIVE_INT)


def setting(help: str, check: Check | None = None, **metadata) -> dict:
    """A config field's metadata: its help text (the command line's) and its rule."""
    return {"help": help, **({"check": check} if check is not None else {}), **metadata}


def check_fields(config: Any, prefix: str = "") -> None:
    """Apply every field's rule (`metadata["check"]`) of a dataclass instance, nested ones too."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_fields(value, f"{prefix}{f.name}.")
        elif (check := f.metadata.get("check")) is not None:
            check(prefix + f.name, value)


def argparse_type(check: Check, parse: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse `type`: the text parsed by `parse`, then held to `check`; argparse's own
    one-line error names the flag when either fails."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except (TypeError, ValueError):
            value = text
        try:
            check("value", value)
        except InvalidSetting:
            raise argparse.ArgumentTypeError(f"expected {check.expected}, got {text!r}") from None
        return value
    convert.__name__ = check.expected  # what argparse says of a value it could not convert
    return convert


class UnknownOption(UserError, TypeError):
    """An option (keyword) a task or agent does not take: a `TypeError` to Python, as an unexpected
    keyword is, and a one-line `UserError` to the command line."""
