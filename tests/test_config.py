"""Configuration: typed loading, every problem reported with its key and what is allowed, the CLI's exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config
from tests.conftest import ROOT

BASE = """
[gateway]
id = "box-1"
venue = "hall"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        config.parse(Path("/etc/vg.toml"), text)
    return err.value.lines()


def test_shipped_configs_are_valid() -> None:
    demo = config.load(ROOT / "config" / "demo.toml")
    assert demo.gateway.id == "demo-01"
    assert sorted(d.type for d in demo.drivers) == ["air", "artnet", "artnet-in", "ble", "modbus", "nodes", "osc",
                                                    "sacn", "sim", "wristband", "xl2", "xl2", "xl2"]
    assert [p.name for p in demo.show.presets] == ["intro", "drop", "chorus", "sparkle", "encore"]
    assert demo.data_dir == (ROOT / "var" / "demo").resolve()
    example = config.load(ROOT / "config" / "venue.example.toml")
    assert example.api.listen.startswith("0.0.0.0")
    assert all(t.demo_token is None for t in example.api.tokens)


def test_defaults_fill_what_is_not_given() -> None:
    cfg = config.parse(Path("/etc/vg.toml"), BASE)
    assert cfg.store.synchronous == "full"
    assert cfg.api.listen == "127.0.0.1:8080"
    assert cfg.drivers == []
    assert cfg.data_dir == Path("/var/lib/venue-gateway")


def test_unknown_keys_are_errors_naming_what_is_allowed() -> None:
    lines = problems(BASE + "\n[store]\nmax_mbb = 10\n[stor]\n")
    assert "/etc/vg.toml: store.max_mbb: unknown key (allowed: flush_interval_ms, max_mb, max_pending_rows, " \
           "synchronous, telemetry_retention_hours, twin_flush_interval_ms)" in lines
    assert any(line.startswith("/etc/vg.toml: stor: unknown key (allowed: api, cloud, compliance, dashboard, "
                                "discovery, dmx, drivers, gateway,")
               for line in lines)


def test_every_problem_is_reported_at_once() -> None:
    text = """
[gateway]
id = "Box 1"
log_level = "loud"
[api]
listen = "localhost"
max_body_kb = 0
[store]
synchronous = "sometimes"
flush_interval_ms = "fast"
"""
    lines = problems(text)
    expected = [
        "gateway.id: 'Box 1' is not a valid name",
        "gateway.venue: is required (a string)",
        "gateway.log_level: 'loud' is not allowed (allowed: debug, info, warning, error)",
        "api.listen: 'localhost' is not host:port",
        "api.max_body_kb: 0 is out of range (allowed: from 1 to 65536)",
        "store.synchronous: 'sometimes' is not allowed (allowed: full, normal)",
        "store.flush_interval_ms: must be an integer (got 'fast')",
    ]
    for fragment in expected:
        assert any(fragment in line for line in lines), (fragment, lines)
    assert len(lines) == len(expected)


def test_checks_across_keys_run_beside_wrong_keys_so_one_run_lists_everything() -> None:
    """A duplicate zone index and a bad colour (checks of the whole [show] table) are listed in the same run as a
    wrong key of the same table; what they would say of that wrong key is not said twice."""
    lines = problems(BASE + """
[[show.zones]]
name = "floor"
index = 0
[[show.zones]]
name = "bar"
index = 0
[[show.presets]]
name = "x"
colour = "red"
[[show.presets]]
name = "y"
intensity = 2
""")
    assert lines == [
        "/etc/vg.toml: show.presets[1].intensity: 2 is out of range (allowed: from 0 to 1)",
        "/etc/vg.toml: show.zones: zone indexes must be unique (each is a bit in the wristband packet)",
        "/etc/vg.toml: show.presets[0]: colour 'red' is not #RRGGBB"]


def test_demo_tokens_are_refused_off_loopback() -> None:
    text = BASE + '[api]\nlisten = "0.0.0.0:8080"\n[[api.tokens]]\nrole = "admin"\ndemo_token = "demo-admin-token"\n'
    assert problems(text) == [
        "/etc/vg.toml: api.tokens[0].demo_token: a demo token is refused on the non-loopback listener "
        "0.0.0.0:8080 (allowed: env or file, or listen on 127.0.0.1)"]


def test_a_token_needs_exactly_one_secret_source() -> None:
    text = BASE + '[[api.tokens]]\nrole = "viewer"\nenv = "A"\nfile = "b"\n[[api.tokens]]\nrole = "boss"\nenv = "C"\n'
    lines = problems(text)
    assert "/etc/vg.toml: api.tokens[0]: needs exactly one secret source (allowed: env, file, demo_token)" in lines
    assert "/etc/vg.toml: api.tokens[1].role: 'boss' is not allowed (allowed: viewer, operator, admin)" in lines


def test_secrets_come_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "admin.token").write_text("s3cret-from-file\n")
    (tmp_path / "admin.token").chmod(0o600)
    cfg = config.parse(tmp_path / "vg.toml", BASE + '[[api.tokens]]\nrole = "admin"\nfile = "admin.token"\n'
                       '[[api.tokens]]\nrole = "viewer"\nenv = "VG_TEST_TOKEN"\n')
    assert config.resolve_secret(cfg, cfg.api.tokens[0]) == "s3cret-from-file"
    monkeypatch.delenv("VG_TEST_TOKEN", raising=False)
    with pytest.raises(ValueError, match="VG_TEST_TOKEN is not set"):
        config.resolve_secret(cfg, cfg.api.tokens[1])
    monkeypatch.setenv("VG_TEST_TOKEN", "from-env")
    assert config.resolve_secret(cfg, cfg.api.tokens[1]) == "from-env"


def test_a_token_file_other_users_may_read_is_refused_at_load(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("s3cret-from-file\n")
    cfg = config.parse(tmp_path / "vg.toml", BASE + '[[api.tokens]]\nrole = "admin"\nfile = "admin.token"\n')
    for mode in (0o644, 0o604, 0o660, 0o602):
        token.chmod(mode)
        with pytest.raises(ValueError) as err:
            config.resolve_secret(cfg, cfg.api.tokens[0])
        assert str(err.value) == (f"the admin token file {token} has mode {mode:04o}, open to other users (allowed: "
                                  f"0600 or 0640; chmod 600 {token})")
    token.chmod(0o640)  # root:venue-gateway, as install.sh leaves it
    assert config.resolve_secret(cfg, cfg.api.tokens[0]) == "s3cret-from-file"
    token.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"admin.token is not UTF-8 text \(byte 0\)"):
        config.resolve_secret(cfg, cfg.api.tokens[0])


def test_driver_options_are_checked_by_the_drivers_own_schema() -> None:
    text = BASE + """
[drivers.venue]
type = "sim"
speed = 0
zones = [{ name = "floor", capacity = "lots" }]
faults = [{ kind = "fan_stall", asset = "amp:r99.1", at_min = 10 }, { kind = "melt", asset = "x", at_min = 1 }]
colour = "red"
[drivers.other]
type = "teleporter"
"""
    lines = problems(text)
    for fragment in [
        "drivers.venue.speed: 0 is out of range (allowed: from 0.01 to 1000)",
        "drivers.venue.zones[0].capacity: must be an integer (got 'lots')",
        "drivers.venue.faults[1].kind: 'melt' is not allowed (allowed: fan_stall, driver_open",
        "drivers.venue.colour: unknown key (allowed: channels_per_rack, circuits, device_prefix, devices, faults,",
        "drivers.other.type: unknown driver type 'teleporter' (allowed: air, artnet, artnet-in, ble, enttec, modbus, "
        "nodes, osc, sacn, sacn-in, sim, wristband, xl2, or module.path:ClassName)",
    ]:
        assert any(fragment in line for line in lines), (fragment, lines)


def test_driver_cross_checks_run_when_the_options_are_well_formed() -> None:
    text = BASE + '[drivers.venue]\ntype = "sim"\n' \
        'faults = [{ kind = "breaker_trip", asset = "amp:r01.1", at_min = 5 }]\n'
    assert problems(text) == [
        "/etc/vg.toml: drivers.venue.faults[0].asset: 'amp:r01.1' is not a power of this venue "
        "(allowed: e.g. mains:A, mains:B)"]


def test_toml_syntax_errors_name_the_line() -> None:
    (line,) = problems("[gateway\nid = 1")
    assert line.startswith("/etc/vg.toml: (syntax): ") and "line 1" in line


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60)


def test_check_config_exit_codes(tmp_path: Path) -> None:
    ok = run_cli("check-config", str(ROOT / "config" / "demo.toml"))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nid = "x"\nvenue = "y"\n[store]\nmax_mb = 1\nbogus = true\n')
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{bad}: store.bogus: unknown key (allowed: flush_interval_ms, max_mb, max_pending_rows, synchronous, "
        "telemetry_retention_hours, twin_flush_interval_ms)",
        f"{bad}: store.max_mb: 1 is out of range (allowed: at least 8)",
    ]
    missing = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert "nope.toml: (file): cannot be read: No such file or directory" in missing.stderr


def test_usage_errors_exit_2() -> None:
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("run").returncode == 2


def test_problems_in_every_section_are_listed_even_without_a_gateway_section() -> None:
    lines = problems('[store]\nmax_mbb = 1\n[api]\nlisten = "nowhere"\n[drivers.api]\ntype = "sim"\n')
    assert "/etc/vg.toml: gateway: is required (a table)" in lines
    assert any("store.max_mbb: unknown key" in line for line in lines)
    assert any("api.listen: 'nowhere' is not host:port" in line for line in lines)
    assert "/etc/vg.toml: drivers.api: 'api' is the name of a gateway service (allowed: any other name)" in lines


def test_nan_is_out_of_every_range() -> None:
    lines = problems(BASE + "[dmx]\nframe_rate_hz = nan\n[show]\npresets = [{ name = \"x\", chance = nan }]\n")
    assert any("dmx.frame_rate_hz: nan is out of range" in line for line in lines)
    assert any("show.presets[0].chance: nan is out of range" in line for line in lines)


def test_the_wristband_radio_needs_exactly_one_show_key() -> None:
    lines = problems(BASE + """
[drivers.none]
type = "wristband"
port = "/dev/ttyACM0"
[drivers.two]
type = "wristband"
port = "/dev/ttyACM0"
key_env = "SHOW_KEY"
demo_key = "00112233445566778899aabbccddeeff"
[drivers.relative]
type = "wristband"
port = "/dev/ttyACM0"
key_file = "show.key"
[drivers.short]
type = "wristband"
port = "/dev/pts/7"
demo_key = "0011"
[drivers.real]
type = "wristband"
port = "/dev/ttyACM0"
demo_key = "00112233445566778899aabbccddeeff"
""")
    for fragment in ["drivers.none: needs exactly one show key source (allowed: key_file, key_env, demo_key)",
                     "drivers.two: needs exactly one show key source",
                     "drivers.relative.key_file: 'show.key' is not an absolute path",
                     "drivers.short.demo_key: a show key is 16 bytes (32 hexadecimal digits), not 2",
                     "drivers.real.demo_key: a demo key is for the virtual air only, not the real port /dev/ttyACM0"]:
        assert any(fragment in line for line in lines), (fragment, lines)


def test_artnet_discovery_does_not_forget_nodes_between_polls() -> None:
    lines = problems(BASE + """
[drivers.artnet]
type = "artnet"
discover = "2.255.255.255"
poll_interval_s = 10
node_timeout_s = 15
""")
    expected = "drivers.artnet.node_timeout_s: 15.0 s would forget nodes between polls"
    assert any(expected in line for line in lines), lines


def test_the_cloud_section_is_checked_across_its_keys() -> None:
    assert problems(BASE + '\n[cloud]\nbroker = "http://broker"\n') == [
        "/etc/vg.toml: cloud.broker: 'http://broker' is not a broker address (allowed: mqtt://HOST[:PORT] or "
        "mqtts://HOST[:PORT])"]
    lines = problems(BASE + '\n[cloud]\nbroker = "mqtt://broker"\npassword_env = "P"\nca_file = "ca.pem"\n'
                            'cert_file = "box.pem"\n')
    assert lines == [
        "/etc/vg.toml: cloud.password_env: a password needs a user name (allowed: username or username_env)",
        "/etc/vg.toml: cloud.cert_file: mutual TLS needs both cert_file and key_file",
        "/etc/vg.toml: cloud.password_env: the password would cross the network in clear to broker (allowed: an "
        "mqtts:// broker, or a plain one on loopback)",
        "/etc/vg.toml: cloud.ca_file: is for TLS, but the broker mqtt://broker is plain (allowed: an mqtts:// broker)",
        "/etc/vg.toml: cloud.cert_file: is for TLS, but the broker mqtt://broker is plain (allowed: an mqtts:// "
        "broker)"]
    assert problems(BASE + '\n[store]\nmax_mb = 100\n[cloud]\nbroker = "mqtts://broker"\n') == [
        "/etc/vg.toml: cloud.outbox_max_mb: 128 is more than half of store.max_mb (100); the outbox lives in the "
        "store (allowed: up to 50, or raise store.max_mb)"]
    cfg = config.parse(Path("/etc/vg.toml"), BASE + '\n[cloud]\nbroker = "mqtts://broker.example.net"\n')
    assert cfg.cloud is not None and cfg.cloud.batch_readings == 1000


def test_the_broker_user_name_is_the_venue_and_the_gateway_id() -> None:
    """config/mosquitto.acl lets a gateway write only under its own venue and id as user name: any other name would
    have every message refused, so it is refused here first."""
    assert problems(BASE + '\n[cloud]\nbroker = "mqtts://broker"\nusername = "box-1"\n') == [
        "/etc/vg.toml: cloud.username: 'box-1' is not this box's identity 'hall/box-1' (venue/gateway id): the "
        "broker's ACL (config/mosquitto.acl) lets a gateway write only its own venue's and id's topics, under that "
        "user name, and refuses the rest (allowed: 'hall/box-1')"]
    cfg = config.parse(Path("/etc/vg.toml"), BASE + '\n[cloud]\nbroker = "mqtts://broker"\nusername = "hall/box-1"\n')
    assert cfg.cloud is not None and cfg.cloud.username == "hall/box-1"


def test_compliance_settings_are_checked() -> None:
    lines = problems(BASE + '\n[compliance]\nprofile = "loud"\nshow_end = "25:00"\n'
                            'limits = [{ window_min = 5 }]\n')
    for fragment in ["compliance.profile: 'loud' is not allowed (allowed: who, ch_vnissg, custom)",
                     "compliance.show_end: '25:00' is not a time of day (allowed: HH:MM, 24-hour)",
                     "compliance.limits[0].window_min: 5 is not a kept window (allowed: 1, 15, 60)"]:
        assert any(fragment in line for line in lines), (fragment, lines)
    lines = problems(BASE + '\n[compliance]\nprofile = "custom"\n')
    assert any("compliance.limits: the custom profile needs at least one limit" in line for line in lines), lines
    cfg = config.parse(Path("/etc/vg.toml"), BASE + '\n[compliance]\nprofile = "ch_vnissg"\n')
    assert cfg.compliance is not None
    assert [lim.label for lim in cfg.compliance.all_limits()] == ["LAeq,60min", "LAFmax"]


def test_start_order_names_other_drivers_without_a_loop() -> None:
    lines = problems(BASE + '[drivers.a]\ntype = "sim"\nafter = ["b"]\n[drivers.b]\ntype = "sim"\nafter = ["a"]\n'
                     '[drivers.c]\ntype = "sim"\nafter = ["nowhere"]\n[drivers.d]\ntype = "sim"\nafter = "a"\n')
    assert lines == [
        "/etc/vg.toml: drivers.d.after: 'a' (allowed: a list of other drivers' names)",
        "/etc/vg.toml: drivers.c.after: 'nowhere' is not a driver of this file (allowed: a, b, d)",
        "/etc/vg.toml: drivers.a.after: waits for itself through the drivers it names (allowed: an order without "
        "a loop)",
        "/etc/vg.toml: drivers.b.after: waits for itself through the drivers it names (allowed: an order without "
        "a loop)",
    ]
    cfg = config.parse(Path("/etc/vg.toml"), BASE + '[drivers.a]\ntype = "sim"\n[drivers.b]\ntype = "sim"\n'
                                                    'after = ["a"]\n')
    assert [(d.name, d.after) for d in cfg.drivers] == [("a", ()), ("b", ("a",))]


def test_a_dmx_output_names_universes_of_the_dmx_section() -> None:
    lines = problems(BASE + '[dmx]\nuniverses = [1]\n[drivers.out]\ntype = "sacn"\nuniverses = [1, 2]\n'
                     '[drivers.widget]\ntype = "enttec"\nport = "/dev/ttyUSB0"\nuniverse = 3\n')
    assert lines == [
        "/etc/vg.toml: drivers.out.universes: universe 2 is not in dmx.universes (allowed: 1; or add it there)",
        "/etc/vg.toml: drivers.widget.universe: universe 3 is not in dmx.universes (allowed: 1; or add it there)",
    ]


def test_names_and_ids_are_matched_whole_so_a_trailing_newline_is_refused() -> None:
    """Ids go into MQTT topics, file names and a Content-Disposition header: `$` would accept "foh-01\n"."""
    lines = problems('[gateway]\nid = "foh-01\\n"\nvenue = "hall\\n"\n'
                     '[show]\nzones = [{ name = "floor\\n", index = 0 }]\n[drivers."sim\\n"]\ntype = "sim"\n')
    assert [line.split(": ")[1] for line in lines] == ["gateway.id", "gateway.venue", "show.zones[0].name",
                                                       "drivers.sim\\n"]  # shown escaped: one line
    assert all("is not a valid name" in line for line in lines), lines


def test_the_other_patterns_are_matched_whole_too() -> None:
    from drivers.serial.registers import Register
    from gateway.schema import check_all

    lines = problems(BASE + '[cloud]\nbroker = "mqtts://broker"\nclient_id = "foh\\n"\n'
                            '[compliance]\nshow_end = "23:00\\n"\n')
    assert [line.split(": ")[1] for line in lines] == ["cloud.client_id", "compliance.show_end"], lines
    _, found = check_all(Register, {"metric": "temp_c\n", "address": 1})
    assert [p.path for p in found] == ["metric"]


@pytest.mark.parametrize("text", [
    "x = " + "[" * 40 + "]" * 40,                    # deeper than the limit, shallow enough for tomllib
    "x = " + "[" * 5000 + "]" * 5000,                # deeper than tomllib's recursion
    "x = " + "{a = " * 3000 + "1" + "}" * 3000,     # inline tables
    "[" + ".".join(["a"] * 40) + "]\n",              # dotted table headers
], ids=["arrays", "past-tomllib", "inline-tables", "headers"])
def test_deeply_nested_documents_are_one_problem_not_a_recursion_error(text: str) -> None:
    assert problems(BASE + text) == [
        "/etc/vg.toml: (syntax): arrays and tables are nested too deeply (allowed: at most 32 levels)"]


@pytest.mark.parametrize("listen", ["[::1:80", "::1:80", "[::1]]:80", "[not-v6]:80", "a b:80", "host\n:80", "-x:80",
                                    "h:²", "h:+80", "h:65536", "[]:80"])
def test_a_malformed_listen_address_is_refused(listen: str) -> None:
    (line,) = problems(BASE + f"[api]\nlisten = {listen!r}\n".replace("'", '"').replace("\n\"", '\\n"'))
    assert "api.listen:" in line and "is not host:port" in line, line


def test_well_formed_listen_addresses_keep_their_host() -> None:
    from gateway.addresses import parse_listen

    assert [parse_listen(v) for v in ("127.0.0.1:8080", "[::1]:8080", ":8080", "box.local:80", "[fe80::1%eth0]:9")] \
        == [("127.0.0.1", 8080), ("::1", 8080), ("0.0.0.0", 8080), ("box.local", 80), ("fe80::1%eth0", 9)]


@pytest.mark.parametrize(("kind", "message"), [
    ("..:x", "'..:x' is not module.path:ClassName"),
    (":x", "':x' is not module.path:ClassName"),
    ("os:", "'os:' is not module.path:ClassName"),
    ("tests.no_such_module:X", "cannot load driver 'tests.no_such_module:X': No module named"),
    ("os.path:join", "'os.path:join' is not a Driver subclass"),
])
def test_a_driver_type_that_cannot_be_a_driver_is_a_problem(kind: str, message: str) -> None:
    (line,) = problems(BASE + f'[drivers.x]\ntype = "{kind}"\n')
    assert line.startswith(f"/etc/vg.toml: drivers.x.type: {message}"), line


@pytest.mark.parametrize("extra", [
    '[[api.tokens]]\nrole = "admin"\nfile = "a\\u0000b"\n',
    '[inference]\nequipment_model = "m\\u0000.onnx"\n',
    '[cloud]\nbroker = "mqtts://broker"\nca_file = "ca\\u0000"\n',
    '[drivers.w]\ntype = "wristband"\nport = "/dev/ttyACM0"\nkey_file = "/show\\u0000.key"\n',
], ids=["token-file", "model", "ca-file", "driver-option"])
def test_a_nul_character_is_refused_in_every_string_before_it_reaches_a_path(extra: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse(Path("/etc/vg.toml"), BASE + extra, box=True)
    (line,) = err.value.lines()
    assert "holds a NUL character (allowed: text without NUL)" in line, line


def test_a_user_name_from_the_environment_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """check-config (and the API's check of a file, which a request writes) names the variable a wrong broker user
    name is in, never what it holds: a file could name any variable of the box, its secrets among them."""
    monkeypatch.setenv("VG_TEST_SOME_SECRET", "s3cr3t-value-0123456789")
    with pytest.raises(config.ConfigError) as err:
        config.parse(Path("/etc/vg.toml"), BASE + '[cloud]\nbroker = "mqtts://broker.example:8883"\n'
                     'username_env = "VG_TEST_SOME_SECRET"\n', box=True)
    text = "\n".join(err.value.lines())
    assert "cloud.username_env: the user name it holds is not this box's identity 'hall/box-1'" in text, text
    assert "s3cr3t" not in text


def test_a_file_too_large_to_be_a_configuration_is_not_read_whole() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load("/dev/zero")
    assert err.value.lines() == ["/dev/zero: (file): is larger than 4 MB (allowed: a configuration file)"]


def test_check_config_answers_any_file_with_exit_0_or_2_and_one_line_per_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file an operator may hand it gives one line per problem, never a traceback: each loaded here, and the
    ones that once crashed the command run as the CLI too (in parallel)."""
    (tmp_path / "broken_driver.py").write_text("raise TypeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    files = {
        "utf8.toml": (BASE.encode() + b'[api]\nlisten = "127.0.0.1:80\xff"\n',
                      "utf8.toml: (file): is not UTF-8 text: byte 0xff on line 6 (allowed: TOML in UTF-8)"),
        "type.toml": ((BASE + '[drivers.x]\ntype = "..:x"\n').encode(),
                      "drivers.x.type: '..:x' is not module.path:ClassName"),
        "deep.toml": ((BASE + "x = " + "[" * 100_000 + "]" * 100_000).encode(),
                      "(syntax): arrays and tables are nested too deeply"),
        "listen.toml": ((BASE + '[api]\nlisten = "[::1:80"\n').encode(), "api.listen: '[::1:80' is not host:port"),
        "broken.toml": ((BASE + '[drivers.x]\ntype = "broken_driver:X"\n').encode(),
                        "drivers.x.type: cannot load driver 'broken_driver:X': broken at import"),
        "binary.toml": (bytes(range(256)) * 4, "binary.toml: (file): is not UTF-8 text: byte 0x80 on line 2"),
        "empty.toml": (b"", "gateway: is required (a table)"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    for name, (_, expected) in files.items():
        with pytest.raises(config.ConfigError) as err:
            config.load(tmp_path / name)
        (line,) = err.value.lines()
        assert expected in line, (name, line)
    runs = {name: subprocess.Popen([sys.executable, "-m", "gateway", "check-config", "--offline", name], cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("utf8.toml", "type.toml", "deep.toml")}
    for name, run in runs.items():
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 2 and "Traceback" not in stderr, (name, run.returncode, stderr)
        (line,) = stderr.splitlines()
        assert files[name][1] in line, (name, line)


def test_the_shared_shows_secrets_and_files_are_checked_on_the_box(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`[show.shared]`'s secrets and files, as `[cloud]`'s: each missing one named by its key (without them the box
    never joins the show's bus), and a user name from the environment checked, never printed."""
    for name in ("VG_TEST_SHOW_USER", "VG_TEST_SHOW_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    text = BASE + ('[show.shared]\nbrokers = ["mqtts://venue-broker:8883"]\nboxes = ["box-1", "box-2"]\n'
                   'username_env = "VG_TEST_SHOW_USER"\npassword_env = "VG_TEST_SHOW_PASSWORD"\n'
                   'ca_file = "ca.pem"\ncert_file = "box.pem"\nkey_file = "box.key"\n')
    path = tmp_path / "vg.toml"
    with pytest.raises(config.ConfigError) as err:
        config.parse(path, text, box=True)
    assert [line.split(": ", 2)[1] for line in err.value.lines()] == [
        "show.shared.username_env", "show.shared.password_env", "show.shared.ca_file", "show.shared.cert_file",
        "show.shared.key_file"]
    text_of = "\n".join(err.value.lines())
    assert "environment variable VG_TEST_SHOW_PASSWORD (the venue broker's password) is not set or empty" in text_of
    assert f"the venue broker's CA certificate {tmp_path / 'ca.pem'} does not exist" in text_of
    assert config.parse(path, text).show.shared is not None  # the file alone is fine: what the box lacks is not

    monkeypatch.setenv("VG_TEST_SHOW_USER", "hall/show/box-2")  # another box's identity
    monkeypatch.setenv("VG_TEST_SHOW_PASSWORD", "pw")
    for name in ("ca.pem", "box.pem", "box.key"):
        (tmp_path / name).write_text("PEM\n")
    (tmp_path / "box.key").chmod(0o644)  # other users may read the key
    with pytest.raises(config.ConfigError) as err:
        config.parse(path, text, box=True)
    lines = err.value.lines()
    assert len(lines) == 2 and "box-2" not in lines[0], lines
    assert lines[0].endswith("show.shared.username_env: environment variable VG_TEST_SHOW_USER is not this box's "
                             "identity on the venue's broker (allowed: 'hall/show/box-1', venue/show/gateway id: the "
                             "ACL lets a box write only its own topics of the show)")
    assert "show.shared.key_file: the box's private key" in lines[1] and "has mode 0644" in lines[1]
    monkeypatch.setenv("VG_TEST_SHOW_USER", "hall/show/box-1")
    (tmp_path / "box.key").chmod(0o600)
    assert config.parse(path, text, box=True).show.shared is not None
