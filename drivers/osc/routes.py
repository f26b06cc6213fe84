"""OSC routes: a console's own addresses (an OSC 1.0 address pattern) mapped to the gateway's, with fixed
arguments, the incoming ones, or one of them kept (`arg`) and mapped from a range onto 0.0..1.0 (`range`: a fader's
level). `RouteOptions` is a route as the configuration gives it, `Route` as the driver's hot path uses it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.driver import Problem, setting


def pattern(osc_pattern: str) -> re.Pattern[str]:
    """An OSC 1.0 address pattern (`*`, `?`, `[a-z]`, `[!x]`, `{a,b}`) as a regular expression."""
    out, i = [], 0
    while i < len(osc_pattern):
        c = osc_pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = osc_pattern.index("]", i)
            out.append(_char_class(osc_pattern[i + 1:end]))
            i = end
        elif c == "{":
            end = osc_pattern.index("}", i)
            out.append("(?:" + "|".join(re.escape(a) for a in osc_pattern[i + 1:end].split(",")) + ")")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def _char_class(body: str) -> str:
    """An OSC `[...]`: its characters taken literally (a regular expression's own `[`, `\\` or `^` in it mean
    nothing more), `-` between two of them a range, `!` first negates; never matching the `/` between parts."""
    negate = body.startswith("!")
    chars = body[1:] if negate else body
    if not chars:
        raise ValueError("an empty [] matches nothing")
    inner = "".join("-" if ch == "-" and 0 < k < len(chars) - 1 else re.escape(ch) for k, ch in enumerate(chars))
    return f"[^/{inner}]" if negate else f"[{inner}]"


def _pattern_problem(text: str) -> str | None:
    try:
        pattern(text)
    except (ValueError, re.error):
        return f"{text!r} is not an OSC address pattern (allowed: /path with * ? [..] {{a,b}})"
    return None if text.startswith("/") else f"{text!r} must start with /"


@dataclass(frozen=True)
class RouteOptions:
    match: str = setting(check=_pattern_problem)  # e.g. "/eos/out/event/cue/1/*/fire"
    to: str = setting(check=lambda t: None if t.startswith("/vg/") else "must be a /vg/ address")
    args: list[Any] = field(default_factory=list)  # the arguments sent with `to` (default: the incoming ones)
    arg: int | None = None  # keep only this incoming argument (0: the first); `range` alone keeps the first
    range: list[float] | None = None  # [lo, hi]: the kept number mapped from lo..hi onto 0.0..1.0

    def problems(self) -> list[Problem]:
        out = []
        if self.arg is not None and self.arg < 0:
            out.append(Problem("arg", f"{self.arg} is not an argument's index (allowed: 0 for the first, 1 for the "
                                      "second, ...)"))
        if self.range is not None and not (len(self.range) == 2 and self.range[0] < self.range[1]
                                           and math.isfinite(self.range[1] - self.range[0])):
            out.append(Problem("range", f"{self.range} is not [lo, hi] (allowed: two finite numbers, lo below hi, "
                                        "e.g. [0, 100])"))
        if self.args and (self.arg is not None or self.range is not None):
            out.append(Problem("args", "`args` replaces the incoming arguments and `arg`/`range` pick one of them "
                                       "(allowed: `args`, or `arg` and `range`, not both)"))
        return out


class Route:
    """A route as the hot path uses it, worked out once: the pattern, the address, and what becomes of the
    arguments (fixed ones, all the incoming ones, or one of them, scaled or not)."""

    __slots__ = ("args", "hi", "index", "label", "lo", "regex", "scaled", "span", "to")

    def __init__(self, number: int, options: RouteOptions) -> None:
        self.regex = pattern(options.match)
        self.to = options.to
        self.args = list(options.args) or None  # fixed arguments, else None
        self.index = options.arg if options.arg is not None else 0 if options.range is not None else None
        self.scaled = options.range is not None
        self.lo, self.hi = options.range if options.range is not None else (0.0, 1.0)
        self.span = self.hi - self.lo
        self.label = f"routes[{number}] ({options.match} to {options.to})"
        if options.range is not None:
            self.label += f" takes argument {self.index}, a number from {self.lo:g} to {self.hi:g}"
        elif self.index is not None:
            self.label += f" takes argument {self.index}"

    def map(self, args: list[Any]) -> list[Any] | None:
        """The arguments sent on to `to`, or None when the incoming ones cannot be mapped."""
        if self.index is None:
            return list(self.args) if self.args is not None else args
        if self.index >= len(args):
            return None
        value = args[self.index]
        if not self.scaled:
            return [value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not self.lo <= value <= self.hi:  # NaN fails too; never clamped
            return None
        return [(value - self.lo) / self.span]  # lo gives 0.0 and hi 1.0 exactly, nothing in between falls outside
