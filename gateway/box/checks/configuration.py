"""The configuration, as `venue-gateway check-config` finds it: the file, and what it needs from this box."""

from __future__ import annotations

from gateway.box.check import Box, Finding, ok, problem


def check(box: Box) -> list[Finding]:
    path = box.config_path
    fix = f"edit {path} (venue-gateway check-config {path} lists what is left)" if path.exists() else \
        "name the gateway's configuration with --config (the service's is /etc/venue-gateway/gateway.toml)"
    if box.problems:
        return [problem(line.removeprefix(f"{path}: "), fix) for line in box.problems]
    assert box.config is not None
    cfg = box.config
    enabled = [d.name for d in cfg.drivers if d.enabled]
    return [ok(f"{path}: gateway {cfg.gateway.id}, venue {cfg.gateway.venue}, drivers: {', '.join(enabled) or 'none'}")]
