"""The core's configuration sections: the gateway itself, the API and its tokens, the store, the twin, the
supervisor, the event loop and the DMX universes. Each feature with sections of its own keeps them beside it
(`gateway/show/settings.py`, `gateway/cloud/settings.py`, ...); `gateway.config` loads and checks them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.addresses import is_loopback, parse_listen, parse_origin
from gateway.schema import Problem, check_listen, check_slug, setting

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class GatewaySection:
    id: str = setting(check=check_slug)
    venue: str = setting(check=check_slug)
    # Relative paths are taken from the directory of the configuration file.
    data_dir: str = "/var/lib/venue-gateway"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The event loop's thread and the frame clock's as SCHED_FIFO at this priority (1-99), so frames and OSC keep
    # their timing while a drain, the store or a broker on the same box keep the cores busy; 0: ordinary. Needs
    # CAP_SYS_NICE or an RLIMIT_RTPRIO this high (the systemd unit's LimitRTPRIO), and a cgroup with a real-time
    # budget; refused, it is logged and the box runs at ordinary priority.
    realtime_priority: int = setting(0, min=0, max=99)


# A token from the environment or a file is at least this long (`openssl rand -hex 32` makes 64): a short one can
# be guessed over the network. A demo token (loopback only) needs 8.
MIN_TOKEN_CHARS = 16


def token_problem(secret: str) -> str | None:
    """Why a token from the environment or a file is refused, or None."""
    if len(secret) < MIN_TOKEN_CHARS:
        return (f"the token is {len(secret)} characters long (allowed: {MIN_TOKEN_CHARS} or more; make one with "
                "openssl rand -hex 32)")
    return None


@dataclass(frozen=True)
class TokenSection:
    """One API token. Its secret comes from `env` or `file` (at least MIN_TOKEN_CHARS long, a file that other users
    cannot read); `demo_token` is a literal for loopback demos."""

    role: Role
    name: str = ""
    env: str | None = None
    file: str | None = None
    demo_token: str | None = setting(None, check=lambda v: None if len(v) >= 8 else "must be 8 characters or more")

    def problems(self) -> list[Problem]:
        sources = [s for s in ("env", "file", "demo_token") if getattr(self, s) is not None]
        if len(sources) != 1:
            return [Problem("", "needs exactly one secret source (allowed: env, file, demo_token)")]
        return []


@dataclass(frozen=True)
class ApiSection:
    listen: str = setting("127.0.0.1:8080", check=check_listen)
    # HTTPS: "auto" serves it on every listener but loopback (and on loopback too when cert_file is given), "on"
    # always, "off" never. Plain HTTP on a listener other than loopback sends the tokens in clear over the venue
    # network: it is refused unless insecure_http = true says it is meant.
    tls: Literal["auto", "on", "off"] = "auto"
    # The certificate (with its chain) and its private key, PEM; relative paths are taken from the directory of the
    # configuration file. Without them a self-signed certificate is made once in the data directory
    # (tls/api.pem, tls/api.key), and its SHA-256 fingerprint is logged at start for clients to pin.
    cert_file: str | None = None
    key_file: str | None = None
    insecure_http: bool = False
    tokens: list[TokenSection] = field(default_factory=list)
    max_body_kb: int = setting(256, min=1, max=65536)
    # Connections open at once (each one a file descriptor, which serial ports, SQLite and OSC need too): past it a
    # new connection closes the one idle longest, or is refused with 503 when none is idle.
    max_connections: int = setting(256, min=8, max=10_000)
    # A connection that sends no complete request (idle keep-alive, or headers arriving slowly) for this long is
    # closed.
    idle_timeout_s: float = setting(15.0, min=1, max=3600)
    # WebSocket streams open at once; past it a new one is refused with 503 (and past a quarter of it waiting for
    # their token as the first message, a new one without a token in its request).
    max_streams: int = setting(64, min=1, max=10_000)
    # The WebSocket stream sends a ping this often and drops a client that does not answer.
    heartbeat_s: float = setting(20.0, min=1, max=600)
    # Web pages that may open the WebSocket stream besides the gateway's own origin, as `scheme://host[:port]`
    # (a dashboard served elsewhere). A browser says which page opens a WebSocket (`Origin`) and any page may try:
    # one from an origin not listed is refused. Clients that send no Origin (the CLI, scripts) are not affected.
    stream_origins: list[str] = setting(factory=list)

    def https(self) -> bool:
        """Whether the API is served over TLS."""
        if self.tls != "auto":
            return self.tls == "on"
        return self.cert_file is not None or not is_loopback(parse_listen(self.listen)[0])

    def problems(self) -> list[Problem]:
        host, _ = parse_listen(self.listen)
        problems = [
            Problem(f"tokens[{i}].demo_token", f"a demo token is refused on the non-loopback listener "
                                               f"{self.listen} (allowed: env or file, or listen on 127.0.0.1)")
            for i, token in enumerate(self.tokens) if token.demo_token is not None and not is_loopback(host)
        ]
        if (self.cert_file is None) != (self.key_file is None):
            problems.append(Problem("cert_file" if self.cert_file is None else "key_file",
                                    "cert_file and key_file go together (allowed: both, or neither for a "
                                    "self-signed certificate)"))
        if self.tls == "off" and self.cert_file is not None:
            problems.append(Problem("tls", 'is "off" but cert_file is given (allowed: "auto" or "on" to use it)'))
        if not self.https() and not is_loopback(host) and not self.insecure_http:
            problems.append(Problem("tls", f"plain HTTP on the non-loopback listener {self.listen} sends every token "
                                           'in clear over the network (allowed: tls = "auto" or "on"; or '
                                           "api.insecure_http = true to accept it, on a network of your own)"))
        for i, origin in enumerate(self.stream_origins):
            try:
                parse_origin(str(origin))  # (one not a string has its own problem already)
            except ValueError as exc:
                problems.append(Problem(f"stream_origins[{i}]", str(exc)))
        return problems


@dataclass(frozen=True)
class StoreSection:
    # The bound on the database's size; the oldest telemetry is evicted (and counted) to stay under it.
    max_mb: float = setting(1024.0, min=8)
    telemetry_retention_hours: float = setting(168.0, min=0.01)
    flush_interval_ms: int = setting(100, min=5, max=5000)
    # How often the twin's changed assets are written; desired-state changes are written at once.
    twin_flush_interval_ms: int = setting(1000, min=10, max=60_000)
    # "full" makes every acknowledged batch survive a power cut; "normal" survives a crash of the process.
    synchronous: Literal["full", "normal"] = "full"
    # Readings waiting for the writer; past this the oldest are dropped and counted (a stuck disk).
    max_pending_rows: int = setting(1_000_000, min=1000)


@dataclass(frozen=True)
class TwinSection:
    # Changes kept for `changes?since=V` (about 300 bytes each); an older V gets 410 and takes a snapshot.
    change_log: int = setting(50_000, min=100, max=10_000_000)


@dataclass(frozen=True)
class SupervisorSection:
    backoff_initial_s: float = setting(0.5, min=0.01, max=60)
    backoff_max_s: float = setting(60.0, min=0.1, max=3600)
    # A unit that ran this long before failing starts again from the initial backoff.
    stable_after_s: float = setting(60.0, min=1)

    def problems(self) -> list[Problem]:
        if self.backoff_max_s < self.backoff_initial_s:
            return [Problem("backoff_max_s", "must not be below supervisor.backoff_initial_s")]
        return []


def _universes(numbers: list[int]) -> str | None:
    bad = [n for n in numbers if not 0 <= n <= 32767]
    if bad:
        return f"universe {bad[0]} is out of range (allowed: 0 to 32767)"
    return "universes must not repeat" if len(set(numbers)) != len(numbers) else None


@dataclass(frozen=True)
class DmxSection:
    # The DMX universes of the box: their levels are twin assets `universe:N`, sent by the DMX outputs.
    universes: list[int] = setting(factory=list, check=_universes)
    frame_rate_hz: float = setting(40.0, min=1, max=44)  # 44 Hz is a full universe's limit on the DMX wire


@dataclass(frozen=True)
class LoopSection:
    lag_interval_ms: int = setting(50, min=5, max=10_000)
