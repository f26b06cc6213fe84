"""The `[cloud]` section: where the broker is, how to prove who the box is, and how hard to push a backlog."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from gateway.addresses import is_loopback
from gateway.schema import Problem, setting

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,23}")


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        """The URL again: an IPv6 host in brackets, so that the string parses back to the same broker."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_broker(url: str) -> Broker:
    """`mqtt://host[:port]` or `mqtts://host[:port]` (TLS); ValueError says what is allowed."""
    parts = urlsplit(url)
    allowed = "allowed: mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not a broker address ({allowed})")
    if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        raise ValueError(f"{url!r} has a path, query or credentials ({allowed}; credentials come from the "
                         "environment)")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"{url!r} has a bad port ({allowed})") from None
    return Broker(parts.hostname, port, parts.scheme == "mqtts")


def parse_brokers(urls: Iterable[str]) -> list[Broker]:
    """Several broker addresses, in the order given, each as `parse_broker` takes it; ValueError names the first
    that is wrong (its place in the list too), or says the list is empty or names one broker twice."""
    brokers: list[Broker] = []
    for i, url in enumerate(urls):
        try:
            broker = parse_broker(url)
        except ValueError as exc:
            raise ValueError(f"broker {i + 1}: {exc}") from None
        if broker in brokers:
            raise ValueError(f"broker {i + 1}: {url!r} is broker {brokers.index(broker) + 1} again (allowed: each "
                             "broker once)")
        brokers.append(broker)
    if not brokers:
        raise ValueError("no broker address (allowed: one or more of mqtt://HOST[:PORT] or mqtts://HOST[:PORT])")
    return brokers


def topic_root(venue: str, gateway_id: str) -> str:
    """Where a gateway's topics are: under its venue, then its id."""
    return f"venues/{venue}/{gateway_id}"


def user_name(venue: str, gateway_id: str) -> str:
    """The one user name a gateway connects to the broker with: its venue, a slash, its id. config/mosquitto.acl
    keys on it (`venues/%u/...`), so gateways of one id in two venues are two users, each held to its own topics."""
    return f"{venue}/{gateway_id}"


def identity_problems(venue: str, gateway_id: str, username: str | None, key: str, *,
                      shown: bool = True) -> list[Problem]:
    """The rule for the broker's user name: none given (TLS client certificates), or `user_name(venue, id)`. A name
    read from the environment is not `shown`: the problem names where it is, never what it holds (the variable might
    hold any secret of the box)."""
    expected = user_name(venue, gateway_id)
    if username is None or username == expected:
        return []
    given = repr(username) if shown else "the user name it holds"
    return [Problem(key, f"{given} is not this box's identity {expected!r} (venue/gateway id): the broker's "
                         f"ACL (config/mosquitto.acl) lets a gateway write only its own venue's and id's topics, under "
                         f"that user name, and refuses the rest (allowed: {expected!r})")]


def _broker(value: str) -> str | None:
    try:
        parse_broker(value)
    except ValueError as exc:
        return str(exc)
    return None


def _client_id(value: str) -> str | None:
    if _CLIENT_ID.fullmatch(value):
        return None
    return f"{value!r} is not a portable client id (allowed: 1-23 of A-Z a-z 0-9 _ . -)"


@dataclass(frozen=True)
class CloudSection:
    # Where the broker is: `broker`, or `brokers`, several addresses of one cloud (independent brokers a consumer
    # follows all of, or the nodes of a cluster) tried in turn: a lost connection moves on to the next at once.
    broker: str | None = setting(None, check=_broker)
    brokers: list[str] | None = None
    # Default: "vg-" and the gateway id. One per box: the broker drops the older of two clients with one id.
    client_id: str | None = setting(None, check=_client_id)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"  # auto: MQTT 5, else 3.1.1 when the broker refuses 5
    keepalive_s: int = setting(30, min=5, max=3600)
    username: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    # TLS (mqtts://): the CA that signed the broker's certificate (default: the system's), and for mutual TLS
    # this box's certificate and key. Relative paths are taken from the configuration file's directory.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # How long a connection attempt waits for the broker's answer (CONNACK) before it counts as failed and the next
    # address is tried: a cluster node that has lost its quorum may hold a connection unanswered.
    connect_timeout_s: float = setting(10.0, min=0.5, max=120)
    # A message the broker has not acknowledged by then ends the connection: the next address is tried, and what
    # was not acknowledged goes again (a cluster node that failed to store a message may never answer it).
    ack_timeout_s: float = setting(30.0, min=0.5, max=3600)
    backoff_initial_s: float = setting(1.0, min=0.05, max=60)
    backoff_max_s: float = setting(60.0, min=0.1, max=3600)
    # Telemetry leaves in batches of up to batch_readings; online, a reading waits at most batch_delay_ms.
    batch_readings: int = setting(1000, min=1, max=20_000)
    batch_delay_ms: int = setting(100, min=0, max=60_000)
    # The backlog drains as fast as the broker acknowledges, with this many batches in flight, capped at
    # drain_rate readings per second (0: no cap).
    inflight: int = setting(8, min=1, max=100)
    drain_rate: float = setting(0.0, min=0)
    # The outbox bound: past either, the oldest telemetry is evicted (counted, and announced once back
    # online). Events and the twin are never evicted.
    outbox_max_mb: float = setting(128.0, min=0.01)  # at most half of store.max_mb: it lives in the store
    outbox_max_age_hours: float = setting(72.0, min=0.001)
    # The retained snapshot is refreshed this often, so a consumer that joins late is never far behind it.
    snapshot_interval_s: float = setting(300.0, min=1, max=86_400)
    # Small deltas: each is encoded on the loop, and a DMX universe change carries all its levels.
    delta_max_changes: int = setting(100, min=1, max=100_000)
    # Commands and desired state larger than this are refused with an error event.
    max_payload_kb: int = setting(64, min=1, max=16_384)

    def addresses(self) -> list[Broker]:
        """The broker addresses in the order the link tries them."""
        return parse_brokers([self.broker] if self.broker is not None else self.brokers or [])

    @property
    def tls(self) -> bool:
        """Whether any address is mqtts://: the link then needs a TLS context."""
        return any(b.tls for b in self.addresses())

    def problems(self) -> list[Problem]:
        out = []
        allowed = 'allowed: broker = "mqtt://HOST[:PORT]", or brokers = ["mqtt://HOST[:PORT]", ...] tried in turn'
        if self.broker is None and self.brokers is None:
            return [Problem("broker", f"is required: the broker's address, or several in brokers ({allowed})")]
        if self.broker is not None and self.brokers is not None:
            return [Problem("brokers", f"give broker or brokers, not both ({allowed})")]
        if self.brokers is not None:
            if not self.brokers:
                return [Problem("brokers", f"is empty ({allowed})")]
            seen: list[Broker] = []
            for i, url in enumerate(self.brokers):
                try:
                    broker = parse_broker(url)
                except ValueError as exc:
                    out.append(Problem(f"brokers[{i}]", str(exc)))
                    continue
                if broker in seen:
                    out.append(Problem(f"brokers[{i}]", f"{url!r} is brokers[{seen.index(broker)}] again (allowed: "
                                                        "each broker once)"))
                seen.append(broker)
            if out:
                return out
        if self.username is not None and self.username_env is not None:
            out.append(Problem("username", "give username or username_env, not both"))
        if self.password_env is not None and self.username is None and self.username_env is None:
            out.append(Problem("password_env", "a password needs a user name (allowed: username or username_env)"))
        if (self.cert_file is None) != (self.key_file is None):
            out.append(Problem("cert_file", "mutual TLS needs both cert_file and key_file"))
        brokers = self.addresses()
        if self.password_env is not None:
            for broker in brokers:
                if not broker.tls and not is_loopback(broker.host):
                    out.append(Problem("password_env", f"the password would cross the network in clear to "
                                                       f"{broker.host} (allowed: an mqtts:// broker, or a plain one on "
                                                       "loopback)"))
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(self, key) is not None and not self.tls:
                plain = f"the broker {self.broker} is" if self.broker is not None else "every broker is"
                out.append(Problem(key, f"is for TLS, but {plain} plain (allowed: an mqtts:// broker)"))
        if self.backoff_max_s < self.backoff_initial_s:
            out.append(Problem("backoff_max_s", "must not be below cloud.backoff_initial_s"))
        return out


@dataclass(frozen=True)
class Credentials:
    username: str | None
    password: str | None
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None


class Access(Protocol):
    """What a section says about reaching its broker ([cloud], [show.shared]): the names of its secrets and files."""

    @property
    def username(self) -> str | None: ...
    @property
    def username_env(self) -> str | None: ...
    @property
    def password_env(self) -> str | None: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def cert_file(self) -> str | None: ...
    @property
    def key_file(self) -> str | None: ...


def credentials(section: Access, base: Path, key: str = "cloud") -> Credentials:
    """Resolve the secrets the section (`key`: its name in the configuration) names, environment and files;
    ValueError names the one missing."""
    def env(name: str | None) -> str | None:
        if name is None:
            return None
        value = os.environ.get(name, "")
        if not value:
            raise ValueError(f"{key}: environment variable {name} is not set or empty")
        return value

    def file(name: str | None, option: str) -> Path | None:
        if name is None:
            return None
        path = (base / name).resolve()
        if not path.is_file():
            raise ValueError(f"{key}.{option} {path} does not exist or is not a file")
        return path

    return Credentials(section.username or env(section.username_env), env(section.password_env),
                       file(section.ca_file, "ca_file"), file(section.cert_file, "cert_file"),
                       file(section.key_file, "key_file"))
