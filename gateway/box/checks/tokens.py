"""The API's tokens: each one's secret shown to root (the first boot's, for a tech who missed the console), else
where it is; and what the first boot recorded."""

from __future__ import annotations

import os

from gateway.box import firstboot
from gateway.box.check import Box, Finding, ok, skipped, warn
from gateway.preflight import read_secret


def check(box: Box) -> list[Finding]:
    assert box.config is not None
    cfg = box.config
    root = os.geteuid() == 0
    findings = []
    for i, token in enumerate(cfg.api.tokens):
        subject = f"api.tokens[{i}] {token.role}" + (f" ({token.name})" if token.name else "")
        if token.demo_token is not None:
            findings.append(ok(f"demo token {token.demo_token} (loopback only)", subject, token=token.demo_token))
        elif token.env is not None:
            value = os.environ.get(token.env)
            shown = (f": {value}" if root else ": set") if value else \
                f": not set here (the service's environment is {cfg.path.parent / 'environment'})"
            findings.append(ok(f"from the environment variable {token.env}{shown}", subject,
                               **({"token": value} if root and value else {})))
        else:
            path = cfg.path.parent / str(token.file)
            if not root:
                findings.append(ok(f"in {path} (run doctor as root to see it)", subject, file=str(path)))
                continue
            try:
                secret = read_secret(path, f"the {token.role} token file")
            except ValueError as exc:
                findings.append(skipped(f"{exc} (the configuration check says what to do)", subject))
                continue
            findings.append(ok(f"{secret} (in {path})", subject, token=secret, file=str(path)))
    if not cfg.api.tokens:
        findings.append(warn("no API token: only /api/v1/health answers", "add [[api.tokens]] (venue-gateway "
                             "first-boot makes an admin and an operator token in tokens/ beside the configuration)"))
    done = firstboot.record(cfg.data_dir)
    if done is None:
        findings.append(skipped(f"no record of a first boot in {cfg.data_dir} (a box set up by hand)", "first boot"))
    else:
        shown = f", API certificate SHA-256 {done['fingerprint']}" if done.get("fingerprint") else ""
        findings.append(ok(f"done at {done.get('done_at')}: host name {done.get('hostname')}{shown}", "first boot",
                           **done))
    return findings
