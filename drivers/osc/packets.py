"""OSC packets to the messages they carry, each with the time it is for: python-osc parses the messages, the bundles
around them are walked here. python-osc's own bundle parser recurses without bound (a bundle nested 1500 deep is a
RecursionError), loops for ever on an element of negative size, copies the rest of the datagram at every element,
and logs a warning with the bytes for an element that is neither a message nor a bundle, or for a type tag it does
not read (dropping that argument). Here each of those is `Malformed`, found cheaply, before python-osc sees it."""

from __future__ import annotations

from pythonosc import osc_message
from pythonosc.parsing import osc_types

BUNDLE = b"#bundle\x00"
MAX_DEPTH = 8  # bundles within a bundle, and arrays within an array
MAX_TYPE_TAGS = 256  # arguments (and array brackets) of one message
TYPE_TAGS = b"ihfdsbrmtTFN[]"  # what python-osc reads

TimedMessage = tuple[float, osc_message.OscMessage]


class Malformed(ValueError):
    """Bytes that are not an OSC packet the gateway takes; the text says why."""


class TooDeep(Malformed):
    """Bundles within bundles, or arrays within arrays, deeper than MAX_DEPTH."""


def timed_messages(data: bytes, now: float) -> list[TimedMessage]:
    """Every message of a packet with its time (`now` for a message alone, or a bundle timed now, in the past or
    "immediately"), in time order; Malformed for anything python-osc should not be given or cannot parse."""
    if data.startswith(BUNDLE):
        out: list[TimedMessage] = []
        _bundle(data, 0, len(data), now, MAX_DEPTH, out)
        out.sort(key=lambda timed: timed[0])
        return out
    return [(now, _message(data, 0, len(data)))]


def _bundle(data: bytes, start: int, end: int, now: float, depth: int, out: list[TimedMessage]) -> None:
    if depth == 0:
        raise TooDeep(f"bundles nested deeper than {MAX_DEPTH}")
    if end - start < 16:
        raise Malformed("a bundle shorter than its header")
    at, _ = osc_types.get_date(data, start + 8)
    at = now if at == osc_types.IMMEDIATELY or at < now else at
    position = start + 16
    while position < end:
        if end - position < 4:
            raise Malformed("a bundle element's size cut short")
        size = int.from_bytes(data[position:position + 4], "big", signed=True)
        position += 4
        if size <= 0 or position + size > end:
            raise Malformed(f"a bundle element of {size} bytes where {max(0, end - position)} are left")
        if data.startswith(BUNDLE, position):
            _bundle(data, position, position + size, now, depth - 1, out)
        else:
            out.append((at, _message(data, position, position + size)))
        position += size


def _message(data: bytes, start: int, end: int) -> osc_message.OscMessage:
    if not data.startswith(b"/", start):
        raise Malformed("neither a message (an address starting with /) nor a bundle")
    address_end = data.find(0, start, end)
    if address_end < 0:
        raise Malformed("an address without its terminating null")
    tags = address_end + 4 - (address_end - start) % 4  # the type tag string starts on the next 4-byte boundary
    if tags < end:
        tags_end = data.find(0, tags, end)
        if data[tags] != ord(",") or tags_end < 0:
            raise Malformed("a type tag string that does not start with ',' or is not terminated")
        if tags_end - tags - 1 > MAX_TYPE_TAGS:
            raise Malformed(f"more than {MAX_TYPE_TAGS} type tags")
        type_tags = data[tags + 1:tags_end]
        if unread := type_tags.translate(None, TYPE_TAGS):
            raise Malformed(f"type tag {chr(unread[0])!r} is not one the gateway reads")
        if b"[" in type_tags and _array_depth(type_tags) > MAX_DEPTH:
            raise TooDeep(f"arrays nested deeper than {MAX_DEPTH}")
        # python-osc reads a string byte by byte, up to its null: one without would be read to the end, slowly
        strings = type_tags.count(b"s")
        if strings and data.count(0, tags_end + 4 - (tags_end - tags) % 4, end) < strings:
            raise Malformed("a string argument without its terminating null")
    try:
        return osc_message.OscMessage(data if start == 0 and end == len(data) else data[start:end])
    except (osc_message.ParseError, ValueError, IndexError) as exc:  # (a UnicodeDecodeError is a ValueError)
        raise Malformed(str(exc) or type(exc).__name__) from None


def _array_depth(type_tags: bytes) -> int:
    depth = deepest = 0
    for tag in type_tags:
        depth += (tag == 0x5B) - (tag == 0x5D)  # [ and ]
        deepest = max(deepest, depth)
    return deepest
