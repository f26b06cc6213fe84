"""The configuration file (`config.parse`): any text, the shipped demo with any of its values replaced by any TOML
value, and nesting past every limit give a Config or a ConfigError whose lines say what is wrong, never another
error (`check-config` prints those lines and exits 2); and each problem is one line."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from gateway import config
from tests.fuzz.budget import fuzz

ROOT = Path(__file__).resolve().parents[2]
DEMO_TEXT = (ROOT / "config" / "demo.toml").read_text()
DEMO = tomllib.loads(DEMO_TEXT)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every table, array and value of the demo, as the keys that lead to it."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [path, *(p for key, value in items for p in _paths(value, (*path, key)))]


PATHS = _paths(DEMO)[1:]
toml_scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=30),
                         st.sampled_from(["", "..:x", "[::1:80", "0.0.0.0:8080", "127.0.0.1:0", "demo_key", "floor",
                                          "mqtt://x", "/dev/null", "../../etc/passwd", "\x00", "nan"]),
                         st.datetimes(timezones=st.none() | st.just(datetime.UTC)), st.dates(), st.times())
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of `doc` with what `path` leads to replaced by `value` (None: removed)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        out = dict(doc)
        if value is None and not rest:
            out.pop(head, None)
        else:
            out[head] = _replaced(doc[head], rest, value)
        return out
    out_list = list(doc)
    if value is None and not rest:
        del out_list[head]
    else:
        out_list[head] = _replaced(doc[head], rest, value)
    return out_list


edited_demos = st.lists(st.tuples(st.sampled_from(PATHS), st.none() | toml_values), min_size=1, max_size=4)


def _texts(edits: list[tuple[tuple[Any, ...], Any]]) -> str:
    doc: Any = DEMO
    for path, value in edits:
        try:
            doc = _replaced(doc, path, value)
        except (KeyError, IndexError, TypeError):  # an earlier edit took the path away
            continue
    return tomli_w.dumps(doc)


def _spliced(text: str, at: int, insert: str, cut: int) -> str:
    at %= len(text) + 1
    return text[:at] + insert + text[at + cut:]


texts = st.one_of(
    edited_demos.map(_texts), st.text(max_size=200),
    st.builds(_spliced, st.just(DEMO_TEXT), st.integers(0, len(DEMO_TEXT)), st.text(max_size=20), st.integers(0, 20)),
    st.integers(1, 3000).map(lambda n: "a = " + "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: "a = " + "{b = " * n + "1" + "}" * n),
    st.integers(1, 300).map(lambda n: "".join(f"[{'.'.join(['t'] * (i + 1))}]\n" for i in range(n))))


@fuzz(15)
@given(texts)
def test_any_configuration_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        config.parse(Path("/nonexistent/gateway.toml"), text)
    except config.ConfigError as exc:
        lines = exc.lines()
        assert lines and all(isinstance(line, str) and line for line in lines), lines


def test_a_problem_is_one_line_whatever_the_key_says() -> None:
    """Found by the target above: a quoted key holding a newline (or a terminal escape) is printed as it is, so that
    one problem spans two lines of `check-config`'s output (or rewrites the terminal)."""
    with pytest.raises(config.ConfigError) as caught:
        config.parse(Path("/nonexistent/gateway.toml"), '[gateway]\nid = "gw"\nvenue = "v"\n"a\\nb" = 1\n')
    assert all("\n" not in line and "\x1b" not in line for line in caught.value.lines()), caught.value.lines()
