"""The stream decoders on any bytes in any chunks: bytes from a wire arrive split anywhere, so what a decoder makes
of a stream, garbage included, cannot depend on where it was split (the messages and the counts), and no chunk
raises. (Each decoder's any-bytes property in one piece lives beside its other tests: `budget.DECODER_PROPERTIES`.)"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from drivers.dmx import enttec_codec
from drivers.osc import slip
from drivers.serial.lines import LineDecoder, NodeLine
from drivers.wristband import hci
from tests.fuzz.budget import DECODER_PROPERTIES, fuzz

ROOT = Path(__file__).resolve().parents[2]
chunks = st.lists(st.binary(max_size=300), max_size=8)
# Bytes that mean something to some decoder (starts, ends, escapes, packet types, newlines), so that the chunks
# hold frames and near-frames, not only noise.
MEANINGFUL = bytes([0x7E, 0xE7, 0xC0, 0xDB, 0xDC, 0xDD, 0x02, 0x03, 0x04, 0x05, 0x0E, 0x0F, 0x10, 0x0A, 0x0D, 0x00])
dense = st.lists(st.lists(st.sampled_from(MEANINGFUL) | st.integers(0, 255), max_size=200).map(bytes), max_size=8)


def _split_invariant(make: Callable[[], Any], counts: Callable[[Any], Any], parts: list[bytes]) -> None:
    whole = make()
    expected = whole.feed(b"".join(parts))
    split = make()
    assert [m for part in parts for m in split.feed(part)] == expected
    assert counts(split) == counts(whole)


DECODERS: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]] = {
    "enttec": (enttec_codec.Decoder, lambda d: d.dropped),
    "slip": (slip.Decoder, lambda d: d.dropped),
    "hci": (hci.H4Reader, lambda d: (dict(d.dropped), d.ignored)),
    "lines": (lambda: LineDecoder("optional", 64), lambda d: (d.lines, d.bad_lines, d.garbage_bytes, d.overlong)),
}


@fuzz(60)
@given(st.sampled_from(sorted(DECODERS)), chunks | dense)
def test_any_bytes_split_anywhere_decode_the_same_and_never_raise(name: str, parts: list[bytes]) -> None:
    make, counts = DECODERS[name]
    _split_invariant(make, counts, parts)


def test_the_decoders_any_bytes_properties_that_make_fuzz_runs_exist() -> None:
    for node in DECODER_PROPERTIES:
        path, _, function = node.partition("::")
        tree = ast.parse((ROOT / path).read_text())
        found = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == function]
        assert found, f"{node} is gone: make fuzz would not run it"
        calls = [d.func for d in found[0].decorator_list if isinstance(d, ast.Call)]
        assert any(isinstance(f, ast.Name) and f.id == "given" for f in calls), f"{node} is not a hypothesis test"


def test_the_rest_of_an_overlong_line_is_dropped_and_counted_as_it_comes() -> None:
    """Found by the split property: bytes after an overlong line's first max_line were held until its newline (and
    uncounted until then), so the counts depended on where the stream was cut."""
    decoder = LineDecoder("optional", 64)
    decoder.feed(b"\x00" * 65)
    decoder.feed(b"x")
    assert (decoder.overlong, decoder.garbage_bytes) == (1, 66)
    assert decoder.feed(b"\n" + b'{"node":"n1","t":1}\n') == [NodeLine("n1", {"t": 1.0}, (), False)]
    assert decoder.garbage_bytes == 67
