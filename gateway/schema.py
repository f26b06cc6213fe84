"""Typed loading of TOML tables into frozen dataclasses, collecting every problem with its key path.

A small loader of our own rather than a validation framework: it gives the exact message form the CLI
promises (`key.path: what is wrong (what is allowed)`), rejects unknown keys with the list of known ones,
and lets each driver declare its options as a plain dataclass that the same code checks. A dataclass may
define `problems() -> list[Problem]` for checks across its keys (paths relative to the table).
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from gateway.addresses import parse_listen

T = TypeVar("T")

# Matched whole (fullmatch): `$` would let a trailing newline through, into MQTT topics and file names.
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        """One line, whatever a key or a value quoted in it holds: control characters (a newline, a terminal
        escape) shown escaped."""
        return _CONTROL.sub(lambda m: repr(m.group())[1:-1], f"{self.path}: {self.message}")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    min: float | None = None,
    max: float | None = None,
    check: Callable[[Any], str | None] | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with bounds and an optional check returning an error message (or None)."""
    meta = {"min": min, "max": max, "check": check}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_slug(value: str) -> str | None:
    """For `setting(check=...)`: a name used in the twin, topics and files."""
    if _SLUG.fullmatch(value):
        return None
    return f"{value!r} is not a valid name (allowed: 1-64 of a-z 0-9 _ -, starting with a letter or digit)"


def check_listen(value: str) -> str | None:
    """For `setting(check=...)`: a `host:port` to listen on or send to."""
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path and key else path or key


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if tp in names:
        return names[tp]
    origin = get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


class _Loader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path or "(top level)", message))

    def value(self, tp: Any, raw: Any, path: str) -> Any:
        origin = get_origin(tp)
        if origin is Literal:
            allowed = get_args(tp)
            if raw not in allowed:
                self.fail(path, f"{raw!r} is not allowed (allowed: {', '.join(map(str, allowed))})")
            return raw
        if origin in (Union, types.UnionType):
            options = [a for a in get_args(tp) if a is not type(None)]
            if raw is None and len(options) < len(get_args(tp)):
                return None
            return self.value(options[0], raw, path)
        if origin is list:
            (item,) = get_args(tp)
            if not isinstance(raw, list):
                self.fail(path, f"must be {_type_name(tp)} (got {_type_name(type(raw))})")
                return []
            return [self.value(item, v, _join(path, i)) for i, v in enumerate(raw)]
        if origin is dict:
            _, item = get_args(tp)
            if not isinstance(raw, Mapping):
                self.fail(path, f"must be {_type_name(tp)} (got {_type_name(type(raw))})")
                return {}
            return {k: self.value(item, v, _join(path, k)) for k, v in raw.items()}
        if dataclasses.is_dataclass(tp):
            return self.table(tp, raw, path)
        if tp is Any:
            return raw
        return self.scalar(tp, raw, path)

    def scalar(self, tp: Any, raw: Any, path: str) -> Any:
        ok = (
            isinstance(raw, bool)
            if tp is bool
            else (isinstance(raw, int | float) and not isinstance(raw, bool))
            if tp is float
            else (isinstance(raw, int) and not isinstance(raw, bool))
            if tp is int
            else isinstance(raw, tp)
        )
        if not ok:
            self.fail(path, f"must be {_type_name(tp)} (got {raw!r})")
            return raw
        if tp is str and "\0" in raw:  # no name, path or secret holds one; the OS refuses it in a path
            self.fail(path, f"{raw!r} holds a NUL character (allowed: text without NUL)")
            return raw
        return float(raw) if tp is float else raw

    def table(self, cls: Any, raw: Any, path: str) -> Any:
        if not isinstance(raw, Mapping):
            self.fail(path, f"must be a table (got {raw!r})")
            raw = {}
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in raw:
            if key not in fields:
                self.fail(_join(path, key), f"unknown key (allowed: {', '.join(sorted(fields)) or 'none'})")
        values: dict[str, Any] = {}
        before_table = len(self.problems)
        for name, f in fields.items():
            key_path = _join(path, name)
            if name not in raw:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    self.fail(key_path, f"is required ({_type_name(hints[name])})")
                continue
            before = len(self.problems)
            value = self.value(hints[name], raw[name], key_path)
            if len(self.problems) == before:
                self.bounds(f, value, raw[name], key_path)
            values[name] = value
        try:
            built = cls(**values)
        except TypeError:
            # Required keys were missing: the problems already say which; build nothing.
            return None
        # Checks across keys: a table may declare `problems()`. They run even when some keys are wrong, so that one
        # run lists everything; what they say of a key already reported is left out, and so is a check that cannot
        # run on a wrong value (it raises): that key's own problem says what to fix first.
        if hasattr(built, "problems"):
            reported = [p.path for p in self.problems[before_table:]]
            try:
                found = built.problems()
            except Exception:
                if not reported:
                    raise
                found = []
            for p in found:
                key = _join(path, p.path)
                if not any(r == key or r.startswith((key + ".", key + "[")) for r in reported):
                    self.fail(key, p.message)
        return built

    def bounds(self, f: dataclasses.Field[Any], value: Any, given: Any, path: str) -> None:
        lo, hi, check = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("check")
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and not ((lo is None or value >= lo) and (hi is None or value <= hi)):  # NaN fails too
            span = (
                f"from {lo} to {hi}" if lo is not None and hi is not None
                else f"at least {lo}" if lo is not None else f"at most {hi}"
            )
            self.fail(path, f"{given!r} is out of range (allowed: {span})")
            return
        if check is not None and value is not None:
            message = check(value)
            if message:
                self.fail(path, message)


def check_all(cls: type[T], raw: Mapping[str, Any], path: str = "") -> tuple[T | None, list[Problem]]:
    """Build `cls` from `raw`: the object (None if anything is wrong) and every problem found."""
    loader = _Loader()
    result: T = loader.table(cls, raw, path)
    return (None if loader.problems else result), loader.problems
