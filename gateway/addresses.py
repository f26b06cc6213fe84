"""Network addresses as the configuration gives them: `host:port` listeners, loopback hosts and web origins."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


# A host name or an IPv4 address: dot-separated labels of letters, digits and inner hyphens.
_HOST = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*", re.ASCII)


def parse_listen(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:port`, an empty host: every address); raise ValueError with what is
    allowed."""
    bad = ValueError(f"{value!r} is not host:port (allowed: e.g. 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080)")
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise bad
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad from None
    elif host and not _HOST.fullmatch(host):  # an unbracketed IPv6 address, a stray bracket, a space, a newline
        raise bad
    return host or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_origin(value: str) -> tuple[str, str, int]:
    """A web origin (RFC 6454) as a browser sends it in `Origin`: `scheme://host[:port]`, http or https, nothing
    after it. Returned as (scheme, host, port) with the scheme's default port filled in, so that two spellings of one
    origin compare equal; raise ValueError with what is allowed."""
    bad = ValueError(f"{value!r} is not an origin (allowed: http:// or https://, a host and an optional port, "
                     "nothing after it, e.g. https://dashboard.example:8443)")
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        raise bad from None
    if (url.scheme not in _DEFAULT_PORTS or not url.hostname or "@" in url.netloc or url.netloc.endswith(":")
            or url.path or any(c in value for c in "?# \t\r\n")):
        raise bad
    return url.scheme, url.hostname, _DEFAULT_PORTS[url.scheme] if port is None else port
