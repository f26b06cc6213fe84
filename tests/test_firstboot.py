"""`venue-gateway first-boot` in a temporary configuration and state directory, with the host name written to a
file of the test's (this machine's own is never changed): what a new box makes once, what a second run leaves,
and a run cut short by a power cut finished by the next boot."""

from __future__ import annotations

import grp
import json
import os
import ssl
import stat
from pathlib import Path

import pytest

from gateway import cli
from gateway import config as configuration
from gateway.api import tls
from gateway.box import hostname
from tests.conftest import ROOT

SERIAL = b"10000000abcdef12\x00"  # a Raspberry Pi's /proc/device-tree/serial-number


def group() -> grp.struct_group:
    """A group other than root's, to see the files given to it (the box's is venue-gateway)."""
    for name in ("nogroup", "daemon", "users"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    pytest.skip("no group to give the files to")


def box(tmp_path: Path, config: str | None = None) -> dict[str, Path]:
    paths = {"etc": tmp_path / "etc", "state": tmp_path / "state", "serial": tmp_path / "serial-number",
             "hostname": tmp_path / "hostname", "console": tmp_path / "console"}
    paths["etc"].mkdir()
    paths["serial"].write_bytes(SERIAL)
    (paths["etc"] / "gateway.toml").write_text(config if config is not None else
                                               (ROOT / "config" / "venue.example.toml").read_text())
    return paths


def first_boot(paths: dict[str, Path], *, group_name: str) -> int:
    return cli.main(["first-boot", "--etc", str(paths["etc"]), "--state", str(paths["state"]), "--group",
                     group_name, "--hostname-from", str(paths["serial"]), "--hostname-file", str(paths["hostname"]),
                     "--console", str(paths["console"])])


def test_a_new_box_is_set_up_once_and_a_second_run_only_says_so(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    paths, g = box(tmp_path), group()
    assert first_boot(paths, group_name=g.gr_name) == 0
    journal = capsys.readouterr().out
    assert paths["hostname"].read_text() == "vg-cdef12\n"
    etc = paths["etc"]
    tokens = {role: (etc / "tokens" / role).read_text().strip() for role in ("admin", "operator")}
    for role, secret in tokens.items():
        st = (etc / "tokens" / role).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, g.gr_gid), role
        assert len(secret) == 64 and int(secret, 16) >= 0
        assert secret not in journal  # the journal keeps what stdout says: never a secret there
    assert tokens["admin"] != tokens["operator"]
    key = (etc / "api.key").stat()
    assert (stat.S_IMODE(key.st_mode), key.st_gid) == (0o640, g.gr_gid)
    assert stat.S_IMODE((etc / "tokens").stat().st_mode) == 0o750
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(etc / "api.pem", etc / "api.key")
    fingerprint = tls.file_fingerprint(etc / "api.pem")
    cfg = configuration.parse(etc / "gateway.toml", (etc / "gateway.toml").read_text())
    assert cfg.api.cert_file == str(etc / "api.pem") and cfg.api.key_file == str(etc / "api.key")
    assert cfg.api.https()
    screen = paths["console"].read_text()
    assert tokens["admin"] in screen and tokens["operator"] in screen and fingerprint in screen
    assert "vg-cdef12" in screen and fingerprint in journal
    record = json.loads((paths["state"] / "first-boot.json").read_text())
    assert record["hostname"] == "vg-cdef12" and record["fingerprint"] == fingerprint
    # The example's viewer token comes from the unit's environment file: made there, for root alone.
    environment = etc / "environment"
    assert (stat.S_IMODE(environment.stat().st_mode), environment.stat().st_uid) == (0o600, 0)
    (viewer,) = [line.split("=", 1)[1] for line in environment.read_text().splitlines()
                 if line.startswith("VG_TOKEN_CLOUD=")]
    assert len(viewer) == 64 and viewer in screen and viewer not in journal
    assert not [p.name for p in etc.rglob(".*")]  # no temporary file left

    paths["console"].unlink()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in etc.rglob("*") if p.is_file()}
    assert first_boot(paths, group_name=g.gr_name) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in etc.rglob("*") if p.is_file()} == before
    assert not paths["console"].exists()  # shown once


def test_a_run_cut_short_is_finished_by_the_next_boot_keeping_what_was_made(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What a power cut leaves: the admin token written, the operator's temporary half written, the new key
    without its certificate. The next boot keeps the token, makes the rest whole, and shows them then."""
    paths = box(tmp_path)
    tokens = paths["etc"] / "tokens"
    tokens.mkdir(mode=0o750)
    (tokens / "admin").write_text("kept-admin-token-0123456789abcdef\n")
    (tokens / "admin").chmod(0o600)
    (tokens / ".operator.tmp").write_text("3f2a")  # cut off mid-write, never renamed
    (paths["etc"] / "api.key").write_text("-----BEGIN PRIVATE KEY-----\n")  # a key whose certificate never came
    assert first_boot(paths, group_name="no-such-group-here") == 0
    assert "made 0600" in capsys.readouterr().out
    assert (tokens / "admin").read_text() == "kept-admin-token-0123456789abcdef\n"
    operator = (tokens / "operator").read_text().strip()
    assert len(operator) == 64 and stat.S_IMODE((tokens / "operator").stat().st_mode) == 0o600
    assert not (tokens / ".operator.tmp").exists()
    etc = paths["etc"]
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(etc / "api.pem", etc / "api.key")
    screen = paths["console"].read_text()
    assert "kept-admin-token-0123456789abcdef" in screen and operator in screen


def test_a_configuration_of_the_venues_own_is_left_as_it_is(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    own = ('[gateway]\nid = "foh-01"\nvenue = "hall"\n\n[api]\nlisten = "0.0.0.0:8080"\n'
           'cert_file = "/etc/ssl/venue/box.pem"\nkey_file = "/etc/ssl/venue/box.key"\n')
    paths = box(tmp_path, own)
    assert first_boot(paths, group_name="no-such-group-here") == 0
    assert (paths["etc"] / "gateway.toml").read_text() == own
    assert "names its own certificate (/etc/ssl/venue/box.pem), left as it is" in capsys.readouterr().out
    # The console names the certificate the API serves (the venue's, not there yet), not the one made beside it.
    screen = paths["console"].read_text()
    assert "API certificate  /etc/ssl/venue/box.pem: its fingerprint is in `sudo venue-gateway doctor`" in screen
    assert tls.file_fingerprint(paths["etc"] / "api.pem") not in screen
    assert json.loads((paths["state"] / "first-boot.json").read_text())["certificate"] == "/etc/ssl/venue/box.pem"


def test_the_host_name_comes_from_the_pi_serial_else_the_machine_id(tmp_path: Path) -> None:
    cpuinfo, zeros, machine_id = tmp_path / "cpuinfo", tmp_path / "zeros", tmp_path / "machine-id"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nSerial\t\t: 10000000c0ffee42\n")
    zeros.write_text("Serial\t\t: 0000000000000000\n")  # as under emulation: no identity
    machine_id.write_text("4f1c2a9be0d84b6c9a7d3e5f60718293\n")
    assert hostname.derive([tmp_path / "absent", cpuinfo, machine_id]) == ("vg-ffee42", cpuinfo)
    assert hostname.derive([zeros, machine_id]) == ("vg-718293", machine_id)
    (tmp_path / "uninitialized").write_text("uninitialized\n")
    with pytest.raises(OSError, match="no serial number or machine id"):
        hostname.derive([zeros, tmp_path / "uninitialized"])
    assert os.uname().nodename == hostname.current()  # (read only: the test changes nothing of this machine)
