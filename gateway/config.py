"""The gateway's configuration: TOML loaded once into typed, frozen objects, every problem reported."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway import registry
from gateway.cloud.settings import CloudSection
from gateway.compliance.settings import ComplianceSection
from gateway.inference.settings import InferenceSection
from gateway.schema import Problem, check_all, setting

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _slug(value: str) -> str | None:
    if _SLUG.match(value):
        return None
    return f"{value!r} is not a valid name (allowed: 1-64 of a-z 0-9 _ -, starting with a letter or digit)"


def parse_listen(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:port`); raise ValueError with what is allowed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (allowed: e.g. 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080)")
    return host.strip("[]") or "0.0.0.0", int(port)


def _listen(value: str) -> str | None:
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class GatewaySection:
    id: str = setting(check=_slug)
    venue: str = setting(check=_slug)
    # Relative paths are taken from the directory of the configuration file.
    data_dir: str = "/var/lib/venue-gateway"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The event loop's thread and the frame clock's as SCHED_FIFO at this priority (1-99), so frames and OSC keep
    # their timing while a drain, the store or a broker on the same box keep the cores busy; 0: ordinary. Needs
    # CAP_SYS_NICE or an RLIMIT_RTPRIO this high (the systemd unit's LimitRTPRIO), and a cgroup with a real-time
    # budget; refused, it is logged and the box runs at ordinary priority.
    realtime_priority: int = setting(0, min=0, max=99)


@dataclass(frozen=True)
class TokenSection:
    """One API token. Its secret comes from `env` or `file`; `demo_token` is a literal for loopback demos."""

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
    listen: str = setting("127.0.0.1:8080", check=_listen)
    tokens: list[TokenSection] = field(default_factory=list)
    max_body_kb: int = setting(256, min=1, max=65536)
    # The WebSocket stream sends a ping this often and drops a client that does not answer.
    heartbeat_s: float = setting(20.0, min=1, max=600)

    def problems(self) -> list[Problem]:
        host, _ = parse_listen(self.listen)
        return [
            Problem(f"tokens[{i}].demo_token", f"a demo token is refused on the non-loopback listener "
                                               f"{self.listen} (allowed: env or file, or listen on 127.0.0.1)")
            for i, token in enumerate(self.tokens) if token.demo_token is not None and not is_loopback(host)
        ]


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
class ShowZone:
    name: str = setting(check=_slug)
    index: int = setting(min=0, max=15)  # the zone's bit in the wristband packet
    distance_m: float = setting(0.0, min=0, max=2000)  # from the stage: the zone starts later by the sound's travel


@dataclass(frozen=True)
class PresetSection:
    name: str = setting(check=_slug)
    kind: Literal["solid", "strobe", "pulse", "chase", "wave", "twinkle", "rainbow", "blackout"] = "solid"
    colour: str = "#ffffff"
    intensity: float = setting(1.0, min=0, max=1)
    bpm: float | None = setting(None, min=0.1, max=3000)  # default: the show's tempo; or give period_ms
    period_ms: int | None = setting(None, min=20, max=600_000)
    duration_s: float = setting(0.0, min=0, max=6553.5)  # 0: until the next effect
    chance: float = setting(0.3, min=0, max=1)  # twinkle: how many bands are lit each beat
    width: int = setting(1, min=1, max=16)  # chase: zones lit at once
    step_ms: int = setting(100, min=0, max=2550)  # wave: delay from one zone to the next
    zones: list[str] = field(default_factory=list)  # default zones; empty: all
    # "energy": the intensity is scaled by the crowd energy the audience-mood model gives the preset's zones,
    # from `min_intensity` (a calm room) to `intensity` (energy 1).
    intensity_from: Literal["fixed", "energy"] = "fixed"
    min_intensity: float = setting(0.2, min=0, max=1)

    def effect_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "colour": self.colour, "intensity": self.intensity,
                               "duration_s": self.duration_s, "chance": self.chance, "width": self.width,
                               "step_ms": self.step_ms}
        if self.bpm is not None:
            doc["bpm"] = self.bpm
        if self.period_ms is not None:
            doc["period_ms"] = self.period_ms
        return doc


@dataclass(frozen=True)
class ShowSection:
    lead_ms: int = setting(500, min=0, max=60_000)  # how far ahead an effect is fired: time for the radio copies
    tempo_bpm: float = setting(120.0, min=1, max=999)
    delay_by_distance: bool = True
    speed_of_sound_m_s: float = setting(343.0, min=300, max=400)
    zones: list[ShowZone] = field(default_factory=list)
    presets: list[PresetSection] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        from gateway.show.effects import Effect, EffectError

        out = []
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            out.append(Problem("zones", "zone names must be unique"))
        if len({z.index for z in self.zones}) != len(self.zones):
            out.append(Problem("zones", "zone indexes must be unique (each is a bit in the wristband packet)"))
        for i, preset in enumerate(self.presets):
            if preset.bpm is not None and preset.period_ms is not None:
                out.append(Problem(f"presets[{i}]", "give bpm or period_ms, not both"))
            try:
                Effect.from_document(preset.effect_document(), self.tempo_bpm)
            except (EffectError, ValueError) as exc:
                out.append(Problem(f"presets[{i}]", str(exc)))
            unknown = [z for z in preset.zones if z not in names]
            if unknown:
                allowed = ", ".join(names) or "none"
                out.append(Problem(f"presets[{i}].zones", f"no zone {unknown[0]!r} (allowed: {allowed})"))
        if len({p.name for p in self.presets}) != len(self.presets):
            out.append(Problem("presets", "preset names must be unique"))
        return out


@dataclass(frozen=True)
class LoopSection:
    lag_interval_ms: int = setting(50, min=5, max=10_000)


@dataclass(frozen=True)
class DriverConfig:
    name: str
    type: str
    enabled: bool
    options: Any


@dataclass(frozen=True)
class Config:
    path: Path
    gateway: GatewaySection
    api: ApiSection
    store: StoreSection
    twin: TwinSection
    supervisor: SupervisorSection
    loop: LoopSection
    dmx: DmxSection
    show: ShowSection
    drivers: list[DriverConfig]
    cloud: CloudSection | None = None  # no section: the box keeps everything local
    compliance: ComplianceSection | None = None  # no section: sound levels are logged, not judged
    inference: InferenceSection | None = None  # no section: no models run

    @property
    def data_dir(self) -> Path:
        return (self.path.parent / self.gateway.data_dir).resolve()


class ConfigError(Exception):
    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}: {p}" for p in self.problems]


# Units the gateway runs itself: a driver may not take their names.
SERVICE_NAMES = ("api", "cloud", "inference")


def _driver(name: str, raw: dict[str, Any], problems: list[Problem]) -> DriverConfig | None:
    path = f"drivers.{name}"
    if (message := _slug(name)) is not None:
        problems.append(Problem(path, message))
    if name in SERVICE_NAMES:
        problems.append(Problem(path, f"{name!r} is the name of a gateway service (allowed: any other name)"))
    options = dict(raw)
    kind = options.pop("type", None)
    enabled = options.pop("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(Problem(f"{path}.enabled", f"must be true or false (got {enabled!r})"))
    if not isinstance(kind, str):
        problems.append(Problem(f"{path}.type", f"is required (allowed: {', '.join(registry.available())})"))
        return None
    try:
        cls = registry.find(kind)
    except registry.UnknownDriver as exc:
        problems.append(Problem(f"{path}.type", str(exc)))
        return None
    opts, found = check_all(cls.Options, options, path)
    problems.extend(found)
    return DriverConfig(name, kind, bool(enabled), opts) if opts is not None else None


@dataclass(frozen=True)
class _Sections:
    gateway: GatewaySection
    api: ApiSection = field(default_factory=ApiSection)
    store: StoreSection = field(default_factory=StoreSection)
    twin: TwinSection = field(default_factory=TwinSection)
    supervisor: SupervisorSection = field(default_factory=SupervisorSection)
    loop: LoopSection = field(default_factory=LoopSection)
    dmx: DmxSection = field(default_factory=DmxSection)
    show: ShowSection = field(default_factory=ShowSection)
    cloud: CloudSection | None = None
    compliance: ComplianceSection | None = None
    inference: InferenceSection | None = None
    drivers: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse(path: Path, text: str) -> Config:
    """Parse and validate configuration text; raise ConfigError with every problem found."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [Problem("(syntax)", f"{exc} (allowed: TOML, https://toml.io)")]) from None
    sections, problems = check_all(_Sections, raw)
    tables = raw.get("drivers")
    drivers = [_driver(name, table, problems) for name, table in tables.items() if isinstance(table, dict)] \
        if isinstance(tables, dict) else []
    if sections is not None and sections.cloud is not None and sections.cloud.outbox_max_mb > sections.store.max_mb / 2:
        problems.append(Problem("cloud.outbox_max_mb", f"{sections.cloud.outbox_max_mb:g} is more than half of "
                                f"store.max_mb ({sections.store.max_mb:g}); the outbox lives in the store (allowed: up"
                                f" to {sections.store.max_mb / 2:g}, or raise store.max_mb)"))
    if sections is None or problems:
        raise ConfigError(path, problems)
    return Config(path, sections.gateway, sections.api, sections.store, sections.twin, sections.supervisor,
                  sections.loop, sections.dmx, sections.show, [d for d in drivers if d is not None], sections.cloud,
                  sections.compliance, sections.inference)


def load(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        problem = Problem("(file)", f"cannot be read: {exc.strerror} (allowed: a readable TOML file)")
        raise ConfigError(p, [problem]) from None
    return parse(p.resolve(), text)


def resolve_secret(config: Config, token: TokenSection) -> str:
    """The token's secret, from its environment variable or file; ValueError says what is missing."""
    if token.demo_token is not None:
        return token.demo_token
    if token.env is not None:
        value = os.environ.get(token.env, "")
        if not value:
            raise ValueError(f"environment variable {token.env} is not set or empty")
        return value
    assert token.file is not None
    secret_path = config.path.parent / token.file
    try:
        value = secret_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"token file {secret_path} cannot be read: {exc.strerror}") from None
    if not value:
        raise ValueError(f"token file {secret_path} is empty")
    return value
