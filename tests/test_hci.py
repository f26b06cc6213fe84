"""The HCI H4 codec: commands dissected by tshark, events framed from any byte stream without a crash."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from drivers.wristband import hci
from drivers.wristband.protocol import Effect, WristbandPacket
from peers.tshark import dissect_hci

KEY = bytes(range(16))
ADV = WristbandPacket(1, 123456, 7, Effect.PULSE, 480, 0b101, (255, 0, 64)).encode(KEY)


def test_the_radios_commands_are_dissected_by_tshark(tmp_path: Path) -> None:
    address = bytes([1, 2, 3, 4, 5, 0xC6])
    out = dissect_hci(tmp_path, [
        (True, hci.command(hci.RESET)),
        (False, bytes([0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00])),
        (True, hci.command(hci.LE_SET_EXT_ADV_PARAMETERS, hci.extended_parameters(20))),
        (True, hci.command(hci.LE_SET_ADV_SET_RANDOM_ADDRESS, bytes([hci.ADV_HANDLE]) + address)),
        (True, hci.command(hci.LE_SET_EXT_ADV_DATA, hci.extended_data(ADV))),
        (True, hci.command(hci.LE_SET_EXT_ADV_ENABLE, hci.extended_enable(True, max_events=1))),
        (True, hci.command(hci.LE_SET_EXT_ADV_ENABLE, hci.extended_enable(False))),
        (True, hci.command(hci.LE_SET_ADV_PARAMETERS, hci.legacy_parameters(20))),
        (True, hci.command(hci.LE_SET_ADV_DATA, hci.legacy_data(ADV))),
        (True, hci.command(hci.LE_SET_ADV_ENABLE, b"\x01")),
    ])
    for name in ("Reset", "LE Set Extended Advertising Parameters", "LE Set Advertising Set Random Address",
                 "LE Set Extended Advertising Data", "LE Set Extended Advertising Enable",
                 "LE Set Advertising Parameters", "LE Set Advertising Data", "LE Set Advertise Enable"):
        assert f"Command Opcode: {name} (" in out, name
    assert out.count("Company ID: For use in internal and interoperability tests (0xffff)") == 2  # the packet
    assert "Use Legacy PDUs: True" in out and "= Connectable: False" in out and "= Scannable: False" in out
    assert "Advertising Interval Min: 32 (20 msec)" in out
    assert "Advertising Type: Non-Connectable Undirected Advertising (0x03)" in out


def test_events_are_framed_across_any_split() -> None:
    stream = (bytes([0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00])  # Reset complete
              + bytes([0x02, 0x01, 0x20, 0x02, 0x00, 0xAA, 0xBB])  # ACL data: skipped
              + bytes([0x04, 0x0F, 0x04, 0x0C, 0x01, 0x36, 0x20])  # Command Status, failed
              + bytes([0x04, 0x10, 0x01, 0x42])  # Hardware Error
              + bytes([0x04, 0x3E, 0x02, 0x12, 0x00]))  # an LE meta event: ignored
    expected = [hci.CommandComplete(hci.RESET, 0, 1, b""), hci.CommandStatus(0x2036, 0x0C, 1),
                hci.HardwareError(0x42)]
    for cut in range(len(stream)):
        reader = hci.H4Reader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == expected
        assert reader.dropped["data_packets"] == 1 and reader.ignored == 1


@given(st.binary(max_size=300))
def test_any_bytes_from_the_controller_are_framed_or_counted_never_raised(data: bytes) -> None:
    reader = hci.H4Reader()
    for event in reader.feed(data):
        assert isinstance(event, hci.CommandComplete | hci.CommandStatus | hci.HardwareError)
