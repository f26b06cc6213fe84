"""The BLE advertisement codecs: published example vectors of each format, what is not ours, what is refused, and
property tests (any bytes decode or raise FrameError; encode then decode gives the values back)."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.frames import (
    BTHOME_UUID,
    EDDYSTONE_UUID,
    PHYSICAL_RANGE,
    Beacon,
    FrameError,
    SensorFrame,
    bthome_v2,
    decode,
    eddystone_tlm,
    eddystone_uid,
    ibeacon,
    ruuvi_v5,
)

APPLE, RUUVI = 0x004C, 0x0499
ADDRESS = "54:48:E6:8F:80:A5"
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")  # bthome.io/encryption's example key


def bthome(hex_payload: str, key: bytes | None = None, address: str = ADDRESS) -> SensorFrame:
    frame = decode(address, {}, {BTHOME_UUID: bytes.fromhex(hex_payload)}, key)
    assert isinstance(frame, SensorFrame) and frame.kind == "bthome_v2"
    return frame


def ruuvi(hex_payload: str) -> SensorFrame | Beacon | None:
    return decode("CB:B8:33:4C:88:4F", {RUUVI: bytes.fromhex(hex_payload)}, {})


# -- Ruuvi data format 5: the four test vectors of docs.ruuvi.com, "Data format 5 (RAWv2)" -----------------------
def test_ruuvi_valid_vector() -> None:
    frame = ruuvi("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F")
    assert frame == SensorFrame("ruuvi_v5", {
        "temperature_c": 24.3, "humidity_pct": 53.49, "pressure_hpa": 1000.44, "acceleration_x_g": 0.004,
        "acceleration_y_g": -0.004, "acceleration_z_g": 1.036, "battery_v": 2.977, "tx_power_dbm": 4,
        "movement_count": 66}, packet_id=205)


def test_ruuvi_maximum_and_minimum_vectors() -> None:
    high = ruuvi("057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F")
    assert isinstance(high, SensorFrame) and high.packet_id == 65534
    assert high.values == {"temperature_c": 163.835, "humidity_pct": 163.835, "pressure_hpa": 1155.34,
                           "acceleration_x_g": 32.767, "acceleration_y_g": 32.767, "acceleration_z_g": 32.767,
                           "battery_v": 3.646, "tx_power_dbm": 20, "movement_count": 254}
    low = ruuvi("058001000000008001800180010000000000CBB8334C884F")
    assert isinstance(low, SensorFrame) and low.packet_id == 0
    assert low.values == {"temperature_c": -163.835, "humidity_pct": 0, "pressure_hpa": 500,
                          "acceleration_x_g": -32.767, "acceleration_y_g": -32.767, "acceleration_z_g": -32.767,
                          "battery_v": 1.6, "tx_power_dbm": -40, "movement_count": 0}
    # Decoded, not believed: beyond the physical range, for the driver to flag.
    lo, hi = PHYSICAL_RANGE["humidity_pct"]
    assert not lo <= high.values["humidity_pct"] <= hi


def test_ruuvi_invalid_vector_gives_no_values() -> None:
    assert ruuvi("058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF") == SensorFrame("ruuvi_v5", {}, packet_id=None)


def test_other_ruuvi_formats_are_not_ours_and_a_short_format_5_is_malformed() -> None:
    assert ruuvi("03291A1ECE1EFC18F94202CA0B53") is None  # data format 3, docs.ruuvi.com's valid vector
    assert ruuvi("06170C5668C79E007000C90501D900CD004C884F") is None  # data format 6
    assert ruuvi("E1" + "00" * 39) is None
    with pytest.raises(FrameError):
        ruuvi("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C88")  # 23 bytes
    with pytest.raises(FrameError):
        ruuvi("")


# -- iBeacon and Eddystone ----------------------------------------------------------------------------------------
def test_ibeacon() -> None:
    # Apple's AirLocate sample UUID, major 1, minor 2, -59 dBm at 1 m (0xC5), as widely captured.
    payload = bytes.fromhex("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5")
    assert decode("AA:BB:CC:DD:EE:FF", {APPLE: payload}, {}) == Beacon(
        "ibeacon", "e2c56db5-dffb-48d2-b060-d0f5a71096e0/1/2", -59)
    with pytest.raises(FrameError):
        decode("AA:BB:CC:DD:EE:FF", {APPLE: payload[:20]}, {})


def test_eddystone_uid_with_and_without_the_rfu_bytes() -> None:
    # The layout of github.com/google/eddystone eddystone-uid: 0x00, tx power at 0 m, namespace, instance, RFU.
    frame = bytes.fromhex("00ec" "00010203040506070809" "aabbccddeeff" "0000")
    expected = Beacon("eddystone_uid", "00010203040506070809/aabbccddeeff", -20)
    assert decode("x", {}, {EDDYSTONE_UUID: frame}) == expected
    assert decode("x", {}, {EDDYSTONE_UUID: frame[:18]}) == expected
    with pytest.raises(FrameError):
        decode("x", {}, {EDDYSTONE_UUID: frame[:17]})


def test_eddystone_tlm() -> None:
    # eddystone-tlm/tlm-plain.md: 3000 mV, 25.5 °C (8.8: 0x1980), 100 advertisements, 360.0 s (0.1 s units).
    frame = decode("x", {}, {EDDYSTONE_UUID: bytes.fromhex("2000" "0bb8" "1980" "00000064" "00000e10")})
    assert frame == SensorFrame("eddystone_tlm", {"uptime_s": 360.0, "battery_v": 3.0, "temperature_c": 25.5},
                                packet_id=100)
    # 0x8000: no temperature sensor; 0 mV: no battery (a powered beacon): no values, rather than wrong ones.
    frame = decode("x", {}, {EDDYSTONE_UUID: bytes.fromhex("2000" "0000" "8000" "00000001" "00000000")})
    assert isinstance(frame, SensorFrame) and frame.values == {"uptime_s": 0.0}
    negative = decode("x", {}, {EDDYSTONE_UUID: bytes.fromhex("2000" "0bb8" "ff80" "00000001" "00000001")})
    assert isinstance(negative, SensorFrame) and negative.values["temperature_c"] == -0.5


def test_eddystone_frames_that_are_not_ours_and_malformed_ones() -> None:
    for not_ours in ("10ec0367676c2f4171313878", "30ec0102030405060708", "2001" + "00" * 16):  # URL, EID, eTLM
        assert decode("x", {}, {EDDYSTONE_UUID: bytes.fromhex(not_ours)}) is None
    for malformed in ("", "20", "2000" + "00" * 11, "2002" + "00" * 12):  # empty, cut, 13 bytes, version 2
        with pytest.raises(FrameError):
            decode("x", {}, {EDDYSTONE_UUID: bytes.fromhex(malformed)})


def test_phones_are_not_ours() -> None:
    phone = {APPLE: bytes.fromhex("1005031c2a5f1d"),  # Apple nearby info
             0x0006: bytes.fromhex("0109200236444da103b7448ce1a6e2220f1e9ab734c9348a35")}  # Microsoft CDP
    services = {"0000fe9f-0000-1000-8000-00805f9b34fb": b"\x00" * 20,  # Google
                "0000fd6f-0000-1000-8000-00805f9b34fb": bytes(20)}  # exposure notification
    assert decode("11:22:33:44:55:66", phone, services) is None
    assert decode("11:22:33:44:55:66", {}, {}) is None


# -- BTHome v2 ----------------------------------------------------------------------------------------------------
# The object table of bthome.io/format: (example, metric, value).
FORMAT_EXAMPLES = [
    ("0161", "battery_pct", 97), ("02CA09", "temperature_c", 25.06), ("03BF13", "humidity_pct", 50.55),
    ("04138A01", "pressure_hpa", 1008.83), ("05138A14", "illuminance_lux", 13460.67), ("065E1F", "mass_kg", 80.3),
    ("073E1D", "mass_lb", 74.86), ("08CA06", "dewpoint_c", 17.38), ("0960", "count", 96),
    ("0A138A14", "energy_kwh", 1346.067), ("0B021B00", "power_w", 69.14), ("0C020C", "voltage_v", 3.074),
    ("0D120C", "pm25_ugm3", 3090), ("0E021C", "pm10_ugm3", 7170), ("12E204", "co2_ppm", 1250),
    ("133301", "tvoc_ugm3", 307), ("14020C", "moisture_pct", 30.74), ("2E23", "humidity_pct", 35),
    ("2F23", "moisture_pct", 35), ("3D0960", "count", 24585), ("3E2A2C0960", "count", 1611213866),
    ("3F020C", "rotation_deg", 307.4), ("400C00", "distance_mm", 12), ("414E00", "distance_m", 7.8),
    ("424E3400", "duration_s", 13.39), ("434E34", "current_a", 13.39), ("451101", "temperature_c", 27.3),
    ("4A020C", "voltage_v", 307.4), ("4B138A14", "gas_m3", 1346.067), ("4C41018A01", "gas_m3", 25821.505),
    ("4D12138A14", "energy_kwh", 344593.17), ("518756", "acceleration_m_s2", 22.151),
    ("56E803", "conductivity_us_cm", 1000), ("59EA", "count", -22), ("5AEAEA", "count", -5398),
    ("5BEA0234EA", "count", -365690134), ("5D02EA", "current_a", -5.63),
    ("1001", "power", 1), ("1100", "opening", 0), ("2101", "motion", 1),  # binary sensors
    ("3A01", "button", 1), ("3A04", "button", 4), ("3C0103", "dimmer_steps", -3), ("3C0205", "dimmer_steps", 5),
]


@pytest.mark.parametrize(("example", "metric", "value"), FORMAT_EXAMPLES)
def test_bthome_format_examples(example: str, metric: str, value: float) -> None:
    frame = bthome("40" + example)
    assert frame.values == {metric: pytest.approx(value, abs=1e-9)} and not frame.encrypted
    assert metric in PHYSICAL_RANGE


def test_bthome_whole_advertisements() -> None:
    # bthome.io/format's example: 0A16D2FC 40 02C409 03BF13.
    assert bthome("4002C40903BF13").values == {"temperature_c": 25.0, "humidity_pct": 50.55}
    # Bluetooth-Devices/bthome-ble issue 118, decoded there by the maintainer.
    frame = bthome("40003f015e02820803ac170c830b")
    assert frame.packet_id == 63
    assert frame.values == {"battery_pct": 94, "temperature_c": 21.78, "humidity_pct": 60.6, "voltage_v": 2.947}
    # A Shelly BLU H&T display (bthome-ble's tests): packet id, battery, a binary, humidity 0x2E, temperature 0x45.
    frame = bthome("40002e01641e012e34451601")
    assert frame.packet_id == 46
    assert frame.values == {"battery_pct": 100, "light": 1, "humidity_pct": 52, "temperature_c": 27.8}
    # Early v2 firmware sent its MAC first (bit 1, reversed): bthome-ble's vector.
    assert bthome("42b2188d38c1a404138a01").values == {"pressure_hpa": 1008.83}
    # Trigger-based devices (bit 2) decode alike.
    assert bthome("4404138a01").values == {"pressure_hpa": 1008.83}


def test_bthome_repeated_objects_are_numbered() -> None:
    frame = bthome("40" + "3a01" + "3a00" + "3a04" + "3a00" + "3a02")  # a four-button remote, and one too many
    assert frame.values == {"button": 1, "button_2": 0, "button_3": 4, "button_4": 0}
    assert bthome(bthome_v2({"temperature_c": 20.5, "temperature_2_c": 21.25})[1].hex()).values == {
        "temperature_c": 20.5, "temperature_2_c": 21.25}


def test_bthome_unknown_object_ends_parsing() -> None:
    assert bthome("40" + "02CA09" + "FF0102" + "03BF13").values == {"temperature_c": 25.06}
    assert bthome("40" + "02CA09" + "03BF").values == {"temperature_c": 25.06}  # cut in an object
    assert bthome("40" + "530548656c6c6f" + "02CA09").values == {"temperature_c": 25.06}  # text is skipped
    for nothing in ("40FF0102", "40", "4002CA", "4053"):
        with pytest.raises(FrameError):
            bthome(nothing)


def test_bthome_other_versions_are_malformed() -> None:
    with pytest.raises(FrameError, match="version 7"):
        bthome("e102000c0404138a01")  # bthome-ble's "version 7" vector
    with pytest.raises(FrameError, match="version 1"):
        bthome("2002ca09")


def test_bthome_encryption_example() -> None:
    # bthome.io/encryption: key 231d39c1..., MAC 5448E68F80A5, device info 0x41, counter bytes 00112233
    # (nonce 5448e68f80a5d2fc4100112233), plaintext 02CA09 03BF13; bthome-ble's tests carry the result.
    frame = bthome("41a47266c95f730011223378237214", KEY)
    assert frame.values == {"temperature_c": 25.06, "humidity_pct": 50.55}
    assert frame.encrypted and frame.counter == 0x33221100
    assert bthome_v2({"temperature_c": 25.06, "humidity_pct": 50.55}, key=KEY, address=ADDRESS,
                     counter=0x33221100) == (BTHOME_UUID, bytes.fromhex("41a47266c95f730011223378237214"))
    # bthome-ble's v2 encryption example: the same with counter 1122867.
    assert bthome("41e445f3c9962b332211006c7c4519", KEY).counter == 1122867
    # And with the MAC in the frame (early v2): the scanner's address is not used for the nonce.
    frame = bthome("43a5808fe64854f196c06ffb4900112233f08ecbde", KEY, address="00:00:00:00:00:00")
    assert frame.values == {"temperature_c": 25.06, "humidity_pct": 50.55}


def test_bthome_refusals() -> None:
    with pytest.raises(FrameError, match="no key"):
        bthome("41a47266c95f730011223378237214")
    with pytest.raises(FrameError, match="MIC"):
        bthome("41a47266c95f730011223378237214", bytes.fromhex("814aac74c4f17b6c1581e1ab87816b99"))
    with pytest.raises(FrameError, match="MIC"):
        bthome("41a47266c95f730011223378237214", KEY, address="54:48:E6:8F:80:A6")  # another device's nonce
    with pytest.raises(FrameError, match="downgrade"):
        bthome("4004138a01", KEY)
    with pytest.raises(FrameError, match="too short"):
        bthome("4111223378237214", KEY)
    with pytest.raises(FrameError, match="MAC address"):
        bthome("41a47266c95f730011223378237214", KEY, address="not-a-mac")
    with pytest.raises(FrameError, match="16 bytes"):
        bthome("41a47266c95f730011223378237214", KEY[:8])


def test_every_metric_has_a_physical_range() -> None:
    decodable = [bytes([i]) + bytes(8) for i in range(256)]
    for payload in decodable:
        try:
            frame = bthome("40" + payload.hex())
        except FrameError:
            continue
        assert set(frame.values) <= set(PHYSICAL_RANGE), payload.hex()
    assert all(lo < hi for lo, hi in PHYSICAL_RANGE.values())


# -- properties ---------------------------------------------------------------------------------------------------
keys = st.one_of(st.none(), st.binary(min_size=16, max_size=16))


@given(st.binary(max_size=40), st.binary(max_size=40), st.binary(max_size=40), st.binary(max_size=40), keys)
def test_any_bytes_in_any_slot_decode_or_raise_frame_error(apple: bytes, ruuvi_data: bytes, eddystone: bytes,
                                                           bthome_data: bytes, key: bytes | None) -> None:
    for manufacturer, services in (({APPLE: apple}, {}), ({RUUVI: ruuvi_data}, {}),
                                   ({}, {EDDYSTONE_UUID: eddystone}), ({}, {BTHOME_UUID: bthome_data})):
        try:
            frame = decode(ADDRESS, manufacturer, services, key)
        except FrameError:
            continue
        if isinstance(frame, SensorFrame):
            assert set(frame.values) <= set(PHYSICAL_RANGE)
            assert all(math.isfinite(v) for v in frame.values.values())


@given(st.binary(min_size=1, max_size=40), keys, st.text(max_size=20))
def test_any_bthome_frame_with_the_encrypted_flag_and_any_address_raises_only_frame_error(
        data: bytes, key: bytes | None, address: str) -> None:
    with contextlib.suppress(FrameError):
        decode(address, {}, {BTHOME_UUID: bytes([0x41 | data[0] & 0x06]) + data[1:]}, key)


@given(st.uuids(), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(-128, 127))
def test_ibeacon_round_trip(uuid: object, major: int, minor: int, power: int) -> None:
    company, payload = ibeacon(str(uuid), major, minor, power)
    assert decode("x", {company: payload}, {}) == Beacon("ibeacon", f"{uuid}/{major}/{minor}", power)


@given(st.binary(min_size=10, max_size=10), st.binary(min_size=6, max_size=6), st.integers(-128, 127))
def test_eddystone_uid_round_trip(namespace: bytes, instance: bytes, tx: int) -> None:
    uuid, payload = eddystone_uid(namespace, instance, tx)
    assert decode("x", {}, {uuid: payload}) == Beacon("eddystone_uid", f"{namespace.hex()}/{instance.hex()}", tx)


@given(st.integers(1, 0xFFFF), st.one_of(st.none(), st.floats(-127, 127)), st.integers(0, 0xFFFFFFFF),
       st.floats(0, 0xFFFFFFFF / 10 - 1))
def test_eddystone_tlm_round_trip(battery_mv: int, temperature: float | None, adv_count: int, uptime: float) -> None:
    uuid, payload = eddystone_tlm(battery_mv, temperature, adv_count, uptime)
    frame = decode("x", {}, {uuid: payload})
    assert isinstance(frame, SensorFrame) and frame.packet_id == adv_count
    assert frame.values["battery_v"] == battery_mv / 1000
    assert frame.values["uptime_s"] == pytest.approx(uptime, abs=0.05 + 1e-9)
    if temperature is None:
        assert "temperature_c" not in frame.values
    else:
        assert frame.values["temperature_c"] == pytest.approx(temperature, abs=1 / 512 + 1e-9)


# metric: (low, high, resolution) within which the format carries the value
RUUVI_FIELDS = {"temperature_c": (-163.835, 163.835, 0.005), "humidity_pct": (0, 163.835, 0.0025),
                "pressure_hpa": (500, 1155.34, 0.01), "acceleration_x_g": (-32.767, 32.767, 0.001),
                "acceleration_y_g": (-32.767, 32.767, 0.001), "acceleration_z_g": (-32.767, 32.767, 0.001),
                "battery_v": (1.6, 3.646, 0.001), "tx_power_dbm": (-40, 20, 2), "movement_count": (0, 254, 1)}


@st.composite
def readings(draw: st.DrawFn, fields: dict[str, tuple[float, float, float]]) -> dict[str, float]:
    names = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
    return {n: draw(st.floats(fields[n][0], fields[n][1])) for n in names}


@given(readings(RUUVI_FIELDS), st.binary(min_size=6, max_size=6), st.integers(0, 65534))
def test_ruuvi_round_trip(values: dict[str, float], mac: bytes, sequence: int) -> None:
    _, payload = ruuvi_v5(values, mac, sequence)
    frame = ruuvi(payload.hex())
    assert isinstance(frame, SensorFrame) and frame.packet_id == sequence and set(frame.values) == set(values)
    for name, value in values.items():
        assert frame.values[name] == pytest.approx(value, abs=RUUVI_FIELDS[name][2] / 2 + 1e-9)


def test_ruuvi_clips_what_the_format_cannot_carry() -> None:
    frame = ruuvi(ruuvi_v5({"temperature_c": 170, "acceleration_x_g": -40}, bytes(6), 1)[1].hex())
    assert isinstance(frame, SensorFrame)
    assert frame.values == {"temperature_c": 163.835, "acceleration_x_g": -32.767}


BTHOME_FIELDS = {"temperature_c": (-327.68, 327.67, 0.01), "humidity_pct": (0, 655.35, 0.01),
                 "pressure_hpa": (0, 167772.15, 0.01), "illuminance_lux": (0, 167772.15, 0.01),
                 "battery_pct": (0, 255, 1), "co2_ppm": (0, 65535, 1), "voltage_v": (0, 65.535, 0.001),
                 "power_w": (-21474836.48, 21474836.47, 0.01), "count": (-2**31, 2**32 - 1, 1),
                 "pm25_ugm3": (0, 65535, 1), "dewpoint_c": (-327.68, 327.67, 0.01), "motion": (0, 1, 1),
                 "button": (0, 255, 1), "dimmer_steps": (-255, 255, 1), "energy_kwh": (0, 4294967.295, 0.001)}


@given(readings(BTHOME_FIELDS), st.one_of(st.none(), st.integers(0, 255)), keys,
       st.integers(0, 0xFFFFFFFF), st.binary(min_size=6, max_size=6))
def test_bthome_round_trip(values: dict[str, float], packet_id: int | None, key: bytes | None, counter: int,
                           mac: bytes) -> None:
    address = ":".join(f"{b:02X}" for b in mac)
    if not values and packet_id is None:
        packet_id = 0  # a frame of no objects at all is refused
    uuid, payload = bthome_v2(values, packet_id, key=key, address=address, counter=counter)
    frame = decode(address, {}, {uuid: payload}, key)
    assert isinstance(frame, SensorFrame) and frame.packet_id == packet_id and set(frame.values) == set(values)
    assert frame.encrypted == (key is not None) and frame.counter == (counter if key else None)
    for name, value in values.items():
        assert frame.values[name] == pytest.approx(value, abs=BTHOME_FIELDS[name][2] / 2 + 1e-6)


@given(readings(BTHOME_FIELDS).filter(bool), st.binary(min_size=16, max_size=16), st.data())
def test_encrypted_bthome_with_the_wrong_key_or_a_flipped_bit_is_refused(values: dict[str, float], key: bytes,
                                                                        data: st.DataObject) -> None:
    _, payload = bthome_v2(values, key=key, address=ADDRESS, counter=7)
    wrong = data.draw(st.binary(min_size=16, max_size=16).filter(lambda k: k != key))
    with pytest.raises(FrameError):
        decode(ADDRESS, {}, {BTHOME_UUID: payload}, wrong)
    bit = data.draw(st.integers(0, len(payload) * 8 - 1))
    flipped = bytearray(payload)
    flipped[bit // 8] ^= 1 << bit % 8
    with pytest.raises(FrameError):
        decode(ADDRESS, {}, {BTHOME_UUID: bytes(flipped)}, key)


def test_encoders_refuse_what_no_frame_can_carry() -> None:
    for bad in (lambda: bthome_v2({"no_such_metric": 1}), lambda: bthome_v2({"co2_ppm": -1}),
                lambda: bthome_v2({"temperature_c": math.nan}), lambda: bthome_v2({"co2_ppm": 1}, key=KEY),
                lambda: ibeacon("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 70000, 0, 0),
                lambda: eddystone_uid(bytes(9), bytes(6), 0), lambda: eddystone_tlm(3000, None, -1, 0),
                lambda: ruuvi_v5({}, bytes(5), 0)):
        with pytest.raises(ValueError):
            bad()
