"""HTTPS for the API, on real sockets: a certificate from the configuration (trustme's CA) or one the gateway makes
for itself once; the CLI, run as a subprocess, trusts a CA file or a pinned fingerprint and refuses any other
certificate; the change stream over wss; check-config refuses plain HTTP off loopback unless it is meant, and
`run` refuses short tokens."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import stat
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme

from gateway import config
from gateway.api import tls
from gateway.api.app import ApiService
from gateway.api.auth import Tokens
from gateway.cli import main
from gateway.daemon import Gateway
from gateway.schema import check_all
from gateway.settings import ApiSection
from gateway.supervisor import NotReady
from tests.conftest import ROOT, free_port

VIEWER, ADMIN = "viewer-token-0123456789", "admin-token-0123456789"


def gateway_at(directory: Path, port: int, api: str) -> Gateway:
    text = (f'[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n'
            f'[api]\nlisten = "127.0.0.1:{port}"\n{api}')
    return Gateway(config.parse(directory / "gw.toml", text), Tokens([(VIEWER, "viewer"), (ADMIN, "admin")]))


async def cli(*args: str, token: str | None = VIEWER) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENUE_GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    if token:
        env["VENUE_GATEWAY_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", *args, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def served(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[tuple[Gateway, str, str]]:
    """A gateway whose API serves trustme's certificate for 127.0.0.1: it, its URL and the certificate's
    fingerprint."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "api.key"))
    os.chmod(tmp_path / "api.key", 0o600)
    (tmp_path / "api.pem").write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    gw = gateway_at(tmp_path, port, 'cert_file = "api.pem"\nkey_file = "api.key"\n')
    await gw.store.open(gw.twin)
    gw.twin.declare("amp:1", "amplifier", "stage", "sim")
    api = ApiService(gw, Tokens([(VIEWER, "viewer"), (ADMIN, "admin")]))
    await api.start()
    yield gw, f"https://127.0.0.1:{port}", tls.file_fingerprint(tmp_path / "api.pem")
    await api.stop()
    await gw.store.close(gw.twin)


async def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """A CLI command in this process (in a thread: the gateway answers from this loop)."""
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_the_cli_trusts_the_ca_or_the_pinned_fingerprint_and_nothing_else(
        served: tuple[Gateway, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, url, fingerprint = served
    code, out, err = await cli("get", "amp:1", "--url", url, "--fingerprint", fingerprint)
    assert code == 0 and out.startswith("amp:1"), err
    wrong = "00:" * 31 + "00"
    code, out, err = await cli("get", "amp:1", "--url", url, "--fingerprint", wrong)
    assert code == 1 and out == "" and f"fingerprint is {fingerprint}, not the one given" in err, err
    monkeypatch.setenv("VENUE_GATEWAY_TOKEN", VIEWER)
    code, out, err = await in_process(capsys, "get", "amp:1", "--url", url, "--ca-file", str(tmp_path / "ca.pem"))
    assert code == 0 and out.startswith("amp:1"), err
    for pin in (fingerprint.replace(":", "").lower(), f"sha256:{fingerprint}"):
        code, out, err = await in_process(capsys, "get", "amp:1", "--url", url, "--fingerprint", pin)
        assert code == 0 and out.startswith("amp:1"), err
    code, out, err = await in_process(capsys, "get", "amp:1", "--url", url)  # the system's CAs do not know trustme's
    assert code == 1 and "is not trusted" in err and f"--fingerprint {fingerprint}" in err, err
    code, out, err = await in_process(capsys, "get", "amp:1", "--url", url.replace("https:", "http:"))
    assert code == 1 and f"off loopback the API is HTTPS: try {url}" in err, err
    code, out, err = await in_process(capsys, "get", "amp:1", "--url", url, "--fingerprint", "abc")
    assert code == 1 and "is not a SHA-256 fingerprint" in err, err
    monkeypatch.delenv("VENUE_GATEWAY_TOKEN")
    code, out, err = await in_process(capsys, "status", "--url", url, "--fingerprint", fingerprint)
    assert f"https, certificate SHA-256 {fingerprint}" in out and "give a token for the details" in out, (out, err)


async def test_the_stream_over_wss_with_a_pinned_certificate(served: tuple[Gateway, str, str]) -> None:
    gw, url, fingerprint = served
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENUE_GATEWAY_")}
    env.update(PYTHONPATH=str(ROOT), VENUE_GATEWAY_TOKEN=VIEWER, VENUE_GATEWAY_FINGERPRINT=fingerprint)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "follow", "--url", url, "--count",
                                                "1", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 20)
    assert b"following gw" in line, line
    gw.twin.patch_desired("amp:1", {"gain_db": -3})
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0 and b"amp:1" in out and b"desired gain_db=-3" in out, (out, err)
    wrong = "AB:" * 31 + "AB"
    code, _, said = await cli("follow", "--url", url, "--count", "1", "--fingerprint", wrong)
    assert code == 1 and "not the one given with --fingerprint" in said, said


async def test_a_box_without_a_certificate_makes_one_once_and_logs_its_fingerprint(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    fingerprints = []
    for _ in range(2):  # a restart serves the same certificate: a pinned fingerprint stays good
        gw = gateway_at(tmp_path, port, 'tls = "on"\n')
        await gw.store.open(gw.twin)
        api = ApiService(gw, Tokens([(VIEWER, "viewer")]))
        with caplog.at_level(logging.INFO, "gateway.api.app"):
            await api.start()
        try:
            assert api.fingerprint is not None
            fingerprints.append(api.fingerprint)
            assert f"listening on https://127.0.0.1:{port}/api/v1, certificate SHA-256 fingerprint " \
                   f"{api.fingerprint}" in caplog.text
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            async with aiohttp.ClientSession() as session, session.get(
                    f"https://127.0.0.1:{port}/api/v1/health", ssl=context) as resp:
                assert resp.status == 200
            _, out, err = await in_process(capsys, "status", "--url", f"https://127.0.0.1:{port}",
                                           "--fingerprint", api.fingerprint, "--token", VIEWER)
            assert "gateway gw (venue hall)" in out and f"certificate SHA-256 {api.fingerprint}" in out, err
        finally:
            await api.stop()
            await gw.store.close(gw.twin)
    assert fingerprints[0] == fingerprints[1]
    key = tmp_path / "data" / "tls" / "api.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert tls.file_fingerprint(tmp_path / "data" / "tls" / "api.pem") == fingerprints[0]



def test_a_self_made_key_found_open_to_others_is_closed_again(tmp_path: Path) -> None:
    """A data directory restored from a copy that lost the modes: the box's own key is made its owner's only again
    before it is used (the same certificate, so a pinned fingerprint stays good)."""
    cert, key = tls.self_signed(tmp_path, "venue-gateway gw")
    fingerprint = tls.file_fingerprint(cert)
    key.chmod(0o644)
    (tmp_path / tls.SELF_SIGNED_DIR).chmod(0o755)
    assert tls.self_signed(tmp_path, "venue-gateway gw") == (cert, key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / tls.SELF_SIGNED_DIR).stat().st_mode) == 0o700
    assert tls.file_fingerprint(cert) == fingerprint

async def test_a_certificate_that_cannot_be_used_keeps_the_api_down_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "api.pem").write_text("not a certificate")
    (tmp_path / "api.key").write_text("not a key")
    gw = gateway_at(tmp_path, free_port(), 'cert_file = "api.pem"\nkey_file = "api.key"\n')
    with pytest.raises(NotReady, match=r"cannot serve HTTPS with api\.pem"):
        await ApiService(gw, Tokens([])).start()


def check_config(directory: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = directory / "gw.toml"
    path.write_text('[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n' + text)
    code = main(["check-config", "--offline", str(path)])
    return code, capsys.readouterr().err


def test_check_config_refuses_plain_http_off_loopback_unless_it_is_meant(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check_config(tmp_path, '[api]\nlisten = "0.0.0.0:8080"\ntls = "off"\n', capsys)
    assert code == 2 and "api.tls: plain HTTP on the non-loopback listener 0.0.0.0:8080" in err \
        and "api.insecure_http = true" in err, err
    assert check_config(tmp_path, '[api]\nlisten = "0.0.0.0:8080"\ntls = "off"\ninsecure_http = true\n',
                        capsys)[0] == 0
    assert check_config(tmp_path, '[api]\nlisten = "0.0.0.0:8080"\n', capsys)[0] == 0  # tls = "auto": HTTPS
    assert check_config(tmp_path, '[api]\nlisten = "127.0.0.1:8080"\ntls = "off"\n', capsys)[0] == 0
    code, err = check_config(tmp_path, '[api]\ncert_file = "api.pem"\n', capsys)
    assert code == 2 and "api.key_file: cert_file and key_file go together" in err
    demo = tomllib.loads((ROOT / "config" / "demo.toml").read_text())["api"]
    example = tomllib.loads((ROOT / "config" / "venue.example.toml").read_text())["api"]
    for table, https in ((demo, False), (example, True)):  # the demo on loopback, plain; the example over HTTPS
        section, problems = check_all(ApiSection, table, "api")
        assert section is not None and not problems and section.https() is https


@pytest.mark.parametrize("source", ["env", "file"])
def test_run_refuses_a_short_token_and_a_token_file_others_can_read(
        tmp_path: Path, source: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text("short-token\n")
    secret.chmod(0o600)
    line = 'env = "VG_TEST_TOKEN"' if source == "env" else 'file = "token"'
    path = tmp_path / "gw.toml"
    path.write_text(f'[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n[[api.tokens]]\nrole = "admin"\n'
                    f"{line}\n")
    monkeypatch.setenv("VG_TEST_TOKEN", "short-token")
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"api.tokens[0].{source}: the token is 11 characters long (allowed: 16 or more" in err, err
    if source == "file":
        secret.write_text("a-long-enough-token-0123456789\n")
        secret.chmod(0o644)
        assert main(["run", "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert "has mode 0644, open to other users" in err, err


def test_check_config_on_the_box_names_short_tokens_and_missing_certificate_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("0123456789\n")
    (tmp_path / "token").chmod(0o600)
    monkeypatch.setenv("VG_TEST_TOKEN", "short")
    path = tmp_path / "gw.toml"
    path.write_text('[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n'
                    '[api]\ncert_file = "api.pem"\nkey_file = "api.key"\n'
                    '[[api.tokens]]\nrole = "admin"\nfile = "token"\n'
                    '[[api.tokens]]\nrole = "viewer"\nenv = "VG_TEST_TOKEN"\n')
    assert main(["check-config", str(path)]) == 2
    lines = [line.removeprefix(f"{path}: ") for line in capsys.readouterr().err.splitlines()]
    advice, missing = "(allowed: 16 or more; make one with openssl rand -hex 32)", "does not exist (allowed: the path"
    assert lines == [
        f"api.tokens[0].file: the token is 10 characters long {advice}",
        f"api.tokens[1].env: the token is 5 characters long {advice}",
        f"api.cert_file: the API's certificate {tmp_path}/api.pem {missing} of a readable file)",
        f"api.key_file: the API's private key {tmp_path}/api.key {missing} of a readable file)",
    ]


async def test_the_cli_never_sends_a_token_in_clear_off_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    """Plain http to an address off this box would put the token on the wire before the gateway could refuse it
    (192.0.2.1 is reserved for documentation: nothing answers there). Refused before connecting, unless the gateway
    is one that serves plain HTTP on purpose (api.insecure_http) and --insecure-http says so."""
    for command in (("get", "amp:1"), ("follow",)):
        code, _, err = await in_process(capsys, *command, "--url", "http://192.0.2.1:8080", "--token", VIEWER)
        assert code == 1 and "would cross the network in clear to 192.0.2.1" in err and "https://" in err, err
    code, _, err = await in_process(capsys, "get", "amp:1", "--url", "http://192.0.2.1:8080", "--token", VIEWER,
                                    "--insecure-http", "--timeout", "0.2")
    assert code == 1 and "in clear" not in err, err
