"""The API answering on its configured listener and scheme, with the certificate it is configured with
(gateway.box.health)."""

from __future__ import annotations

from gateway.box.check import Box, Finding, ok, problem, warn
from gateway.box.health import certificate, health

FIX_DOWN = ("start it (systemctl start venue-gateway); why it stopped: systemctl status venue-gateway, "
            "journalctl -u venue-gateway -e")


def check(box: Box) -> list[Finding]:
    assert box.config is not None
    h = health(box)
    pinned = f", certificate SHA-256 {h.served}" if h.served else ""
    if h.doc is None:
        if h.other_certificate:
            return [problem(f"{h.url} serves the certificate SHA-256 {h.served}, not the one configured "
                            f"({certificate(box.config)}, SHA-256 {h.expected})",
                            "restart the gateway after a new certificate (systemctl restart venue-gateway); if it "
                            "still differs, something else listens on the port")]
        return [problem(f"the gateway does not answer at {h.url}/api/v1/health ({h.error})", FIX_DOWN)]
    status = h.doc.get("status")
    if status == "ok":
        return [ok(f"{h.url}: ok{pinned}", url=h.url, fingerprint=h.served)]
    why = "; ".join(h.doc.get("problems", []))
    failing = [f"{kind[:-1]} {name}: {unit.get('state')} ({unit.get('last_error')})"
               for kind in ("drivers", "services") for name, unit in h.doc.get(kind, {}).items()
               if unit.get("state") not in ("running", "disabled")]
    said = "; ".join(p for p in (why, *failing) if p)
    return [warn(f"{h.url}: {status}{pinned}" + (f": {said}" if said else ""),
                 "venue-gateway status (with a token) names what each unit says; journalctl -u venue-gateway -e",
                 url=h.url, fingerprint=h.served)]
