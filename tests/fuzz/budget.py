"""How many inputs a fuzz target runs: a short budget in the suite (each target's own, about 15 s for all of
them together), or FUZZ_EXAMPLES each when `make fuzz` sets it (one round of its long run)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = "FUZZ_EXAMPLES"

# The decoders' any-bytes properties that live beside their codecs' other tests: `make fuzz` runs them under the
# long budget too (tests/fuzz/test_decoders.py checks that each still exists).
DECODER_PROPERTIES = (
    "tests/test_artnet_codec.py::test_any_bytes_decode_or_raise_the_codecs_own_error",
    "tests/test_artnet_codec.py::test_any_bytes_after_the_id_decode_or_raise_the_codecs_own_error",
    "tests/test_enttec.py::test_any_bytes_decode_without_error",
    "tests/test_modbus.py::test_any_bytes_decode_without_error",
    "tests/test_hci.py::test_any_bytes_from_the_controller_are_framed_or_counted_never_raised",
    "tests/test_osc.py::test_slip_any_bytes_decode_without_error",
    "tests/test_serial_nodes.py::test_any_bytes_decode_without_error",
    "tests/test_serial_nodes.py::test_any_text_parses_or_raises_the_codecs_own_error",
    "tests/test_xl2.py::test_any_answer_parses_or_raises_the_protocols_own_error",
    "tests/test_ble_frames.py::test_any_bytes_in_any_slot_decode_or_raise_frame_error",
    "tests/test_ble_frames.py::test_any_bthome_frame_with_the_encrypted_flag_and_any_address_raises_only_frame_error",
    "tests/test_ble.py::test_any_advertising_bytes_map_without_error",
)


def long_budget() -> int | None:
    """FUZZ_EXAMPLES when `make fuzz` runs the targets, else None."""
    value = os.environ.get(EXAMPLES)
    return int(value) if value else None


def fuzz(short: int) -> settings:
    """A target's settings: `short` inputs in the suite, FUZZ_EXAMPLES under `make fuzz`. No deadline (a slow
    input is not a failure here) and no health check that would stop a long run for a slow or filtered strategy."""
    return settings(max_examples=long_budget() or short, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
