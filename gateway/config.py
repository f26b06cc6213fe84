"""The gateway's configuration: TOML loaded once into typed, frozen objects, every problem reported.

This module loads and checks; the sections' types live beside their features: the core's in `gateway.settings`,
the show's in `gateway.show.settings`, the dashboard's in `gateway.ui.settings`, the cloud's, compliance's and
inference's in their packages' `settings`.
"""

from __future__ import annotations

import importlib
import os
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import preflight, registry
from gateway import settings as core
from gateway.cloud.settings import CloudSection, identity_problems
from gateway.compliance.settings import ComplianceSection
from gateway.discovery.settings import DiscoverySection
from gateway.inference.settings import InferenceSection
from gateway.schema import Problem, check_all, check_slug
from gateway.show import cue_settings, shared_settings
from gateway.show import settings as show_settings
from gateway.ui.settings import DashboardSection, floor_plan_problems

# Names this module held in 0.1, where a site's own driver may import them: they keep working, with a
# DeprecationWarning, for one more release.
_MOVED = {
    **dict.fromkeys(("GatewaySection", "TokenSection", "ApiSection", "StoreSection", "TwinSection",
                     "SupervisorSection", "DmxSection", "LoopSection", "Role", "ROLES"), "gateway.settings"),
    **dict.fromkeys(("ShowZone", "PresetSection", "ShowSection"), "gateway.show.settings"),
    **dict.fromkeys(("parse_listen", "is_loopback"), "gateway.addresses"),
}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"gateway.config.{name} has moved to {home}.{name} (a driver imports it from gateway.driver)",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(home), name)


@dataclass(frozen=True)
class DriverConfig:
    name: str
    type: str
    enabled: bool
    options: Any
    after: tuple[str, ...] = ()  # drivers this one starts after (once each has run or failed once)


@dataclass(frozen=True)
class Config:
    path: Path
    gateway: core.GatewaySection
    api: core.ApiSection
    store: core.StoreSection
    twin: core.TwinSection
    supervisor: core.SupervisorSection
    loop: core.LoopSection
    dmx: core.DmxSection
    show: show_settings.ShowSection
    drivers: list[DriverConfig]
    cloud: CloudSection | None = None  # no section: the box keeps everything local
    compliance: ComplianceSection | None = None  # no section: sound levels are logged, not judged
    inference: InferenceSection | None = None  # no section: no models run
    dashboard: DashboardSection = field(default_factory=DashboardSection)
    discovery: DiscoverySection = field(default_factory=DiscoverySection)

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
SERVICE_NAMES = ("api", "cloud", "inference", "discovery", "shared", "clock")


def _driver(name: str, raw: dict[str, Any], problems: list[Problem]) -> DriverConfig | None:
    path = f"drivers.{name}"
    if (message := check_slug(name)) is not None:
        problems.append(Problem(path, message))
    if name in SERVICE_NAMES:
        problems.append(Problem(path, f"{name!r} is the name of a gateway service (allowed: any other name)"))
    options = dict(raw)
    kind = options.pop("type", None)
    enabled = options.pop("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(Problem(f"{path}.enabled", f"must be true or false (got {enabled!r})"))
    after = options.pop("after", [])
    if not (isinstance(after, list) and all(isinstance(a, str) for a in after)):
        problems.append(Problem(f"{path}.after", f"{after!r} (allowed: a list of other drivers' names)"))
        after = []
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
    return DriverConfig(name, kind, bool(enabled), opts, tuple(after)) if opts is not None else None


def _start_order(drivers: list[DriverConfig]) -> list[Problem]:
    """Each `after` names another driver of the file, and no driver waits, however indirectly, for itself."""
    names = {d.name: d for d in drivers}
    problems = [Problem(f"drivers.{d.name}.after", f"{first!r} is not a driver of this file (allowed: "
                                                   f"{', '.join(n for n in names if n != d.name) or 'none'})")
                for d in drivers for first in d.after if first not in names]
    for d in drivers:
        seen, todo = set(), list(d.after)
        while todo:
            first = todo.pop()
            if first == d.name:
                problems.append(Problem(f"drivers.{d.name}.after", "waits for itself through the drivers it "
                                                                   "names (allowed: an order without a loop)"))
                break
            if first in names and first not in seen:
                seen.add(first)
                todo.extend(names[first].after)
    return problems


@dataclass(frozen=True)
class _Sections:
    gateway: core.GatewaySection
    api: core.ApiSection = field(default_factory=core.ApiSection)
    store: core.StoreSection = field(default_factory=core.StoreSection)
    twin: core.TwinSection = field(default_factory=core.TwinSection)
    supervisor: core.SupervisorSection = field(default_factory=core.SupervisorSection)
    loop: core.LoopSection = field(default_factory=core.LoopSection)
    dmx: core.DmxSection = field(default_factory=core.DmxSection)
    show: show_settings.ShowSection = field(default_factory=show_settings.ShowSection)
    cloud: CloudSection | None = None
    compliance: ComplianceSection | None = None
    inference: InferenceSection | None = None
    dashboard: DashboardSection = field(default_factory=DashboardSection)
    discovery: DiscoverySection = field(default_factory=DiscoverySection)
    drivers: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse(path: Path, text: str, *, box: bool = False) -> Config:
    """Parse and validate configuration text; raise ConfigError with every problem found. With `box`, what the file
    needs from this box too (`check_box`), for every section valid by itself, so that one run says everything."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [Problem("(syntax)", f"{exc} (allowed: TOML, https://toml.io)")]) from None
    except RecursionError:  # tomllib recurses once per level of nesting
        raise ConfigError(path, [_too_deep()]) from None
    if _depth(raw) > MAX_DEPTH:
        raise ConfigError(path, [_too_deep()])
    sections, problems = check_all(_Sections, raw)
    tables = raw.get("drivers")
    drivers = [_driver(name, table, problems) for name, table in tables.items() if isinstance(table, dict)] \
        if isinstance(tables, dict) else []
    problems.extend(_start_order([d for d in drivers if d is not None]))
    problems.extend(_artnet_port([d for d in drivers if d is not None]))
    if sections is not None and sections.cloud is not None and sections.cloud.outbox_max_mb > sections.store.max_mb / 2:
        problems.append(Problem("cloud.outbox_max_mb", f"{sections.cloud.outbox_max_mb:g} is more than half of "
                                f"store.max_mb ({sections.store.max_mb:g}); the outbox lives in the store (allowed: up"
                                f" to {sections.store.max_mb / 2:g}, or raise store.max_mb)"))
    if sections is not None:
        problems.extend(_dmx_outputs(sections.dmx, [d for d in drivers if d is not None]))
        problems.extend(sections.dashboard.zone_problems([z.name for z in sections.show.zones]))
        if (feedback := sections.show.feedback.universe) and feedback not in sections.dmx.universes:
            problems.append(Problem("show.feedback.universe", f"universe {feedback} is not in dmx.universes (allowed: "
                                    f"{', '.join(map(str, sections.dmx.universes)) or 'none configured'}; or add it)"))
    if sections is not None and sections.show.shared is not None:
        problems.extend(Problem(f"show.shared.{p.path}", p.message) for p in
                        shared_settings.box_problems(sections.show.shared, sections.gateway.venue, sections.gateway.id))
    if sections is not None and sections.cloud is not None:
        problems.extend(identity_problems(sections.gateway.venue, sections.gateway.id, sections.cloud.username,
                                          "cloud.username"))
    if box:
        def valid(cls: type[Any], key: str) -> Any:
            if sections is not None:
                return getattr(sections, key)
            table = raw.get(key, {} if key == "api" else None)
            return check_all(cls, table, key)[0] if isinstance(table, dict) else None  # wrong: listed above

        problems.extend(_box(path.parent, valid(core.GatewaySection, "gateway"), valid(core.ApiSection, "api"),
                             valid(CloudSection, "cloud"), valid(InferenceSection, "inference"),
                             [d for d in drivers if d is not None], valid(DashboardSection, "dashboard"),
                             valid(show_settings.ShowSection, "show")))
    if sections is None or problems:
        raise ConfigError(path, problems)
    return Config(path, sections.gateway, sections.api, sections.store, sections.twin, sections.supervisor,
                  sections.loop, sections.dmx, sections.show, [d for d in drivers if d is not None], sections.cloud,
                  sections.compliance, sections.inference, sections.dashboard, sections.discovery)


# Arrays and tables within each other, the document itself counted: the demo's deepest is 8 (a Modbus map's
# register, drivers.rs485.maps[0].registers[0]); past this, the file is refused whole rather than recursed into by
# the checks and by whatever encodes a value of it later.
MAX_DEPTH = 32


def _too_deep() -> Problem:
    return Problem("(syntax)", f"arrays and tables are nested too deeply (allowed: at most {MAX_DEPTH} levels)")


def _depth(value: Any) -> int:
    """How many arrays and tables deep `value` goes (without recursion: the document may be deeper than the stack)."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level + 1)
            if deepest > MAX_DEPTH:
                return deepest
            todo.extend((child, level + 1) for child in children)
    return deepest


def _dmx_outputs(dmx: core.DmxSection, drivers: list[DriverConfig]) -> list[Problem]:
    """A driver's `universes` (or `universe`) option names universes of `[dmx]`: what a DMX output carries."""
    problems = []
    for d in drivers:
        for key in ("universes", "universe"):
            given = getattr(d.options, key, None) if key in getattr(d.options, "__dataclass_fields__", {}) else None
            for number in given if isinstance(given, list) else [given] if isinstance(given, int) else []:
                if number not in dmx.universes:
                    allowed = ", ".join(map(str, dmx.universes)) or "none configured"
                    problems.append(Problem(f"drivers.{d.name}.{key}", f"universe {number} is not in dmx.universes "
                                                                       f"(allowed: {allowed}; or add it there)"))
    return problems


def _artnet_port(drivers: list[DriverConfig]) -> list[Problem]:
    """Art-Net in and the `artnet` output's discovery both listen on UDP 6454: on Linux, of two sockets bound there,
    broadcasts reach both but unicast only the one bound last, so one of them would miss what is sent to it."""
    inputs = [d for d in drivers if d.enabled and d.type == "artnet-in" and getattr(d.options, "port", 0) == 6454]
    discovering = [d for d in drivers if d.enabled and d.type == "artnet" and getattr(d.options, "discover", None)]
    return [Problem(f"drivers.{d.name}.type", f"artnet-in cannot share UDP 6454 with the discovery of "
                                              f"drivers.{other.name} (unicast would reach only one of them; allowed: "
                                              f"artnet-in with an artnet output that has targets or broadcast, not "
                                              f"discover)")
            for d in inputs for other in discovering]


# The demo's file is 14 KB: one this large is not a configuration (nor is /dev/zero), and is not read whole.
MAX_FILE_BYTES = 4 * 2**20


def load(path: str | os.PathLike[str], *, box: bool = False) -> Config:
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problem = Problem("(file)", f"cannot be read: {exc.strerror} (allowed: a readable TOML file)")
        raise ConfigError(p, [problem]) from None
    if len(data) > MAX_FILE_BYTES:
        problem = Problem("(file)", f"is larger than {MAX_FILE_BYTES // 2**20} MB (allowed: a configuration file)")
        raise ConfigError(p, [problem])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = Problem("(file)", f"is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} (allowed: "
                                    "TOML in UTF-8)")
        raise ConfigError(p, [problem]) from None
    return parse(p.resolve(), text, box=box)


def check_box(config: Config) -> list[Problem]:
    """What the configuration needs from this box and would not find at start: every secret, file, directory and
    optional library, each named by its key (what `parse` checks is the file alone)."""
    return _box(config.path.parent, config.gateway, config.api, config.cloud, config.inference, config.drivers,
                config.dashboard, config.show)


def _box(base: Path, gateway: core.GatewaySection | None, api: core.ApiSection | None, cloud: CloudSection | None,
         inference: InferenceSection | None, drivers: list[DriverConfig],
         dashboard: DashboardSection | None = None, show: show_settings.ShowSection | None = None) -> list[Problem]:
    problems = [] if gateway is None else preflight.writable_dir((base / gateway.data_dir).resolve(),
                                                                  "gateway.data_dir")
    for i, token in enumerate(api.tokens if api is not None else []):
        key = f"api.tokens[{i}]"
        found: list[Problem] = []
        if token.env is not None:
            found = preflight.environment_variable(token.env, f"{key}.env", f"the {token.role} token")
        elif token.file is not None:
            found = preflight.secret_file(base / token.file, f"{key}.file", f"the {token.role} token file")
        if not found and token.demo_token is None:  # a secret that resolves: long enough to be one
            secret = os.environ[token.env] if token.env else (base / str(token.file)).read_text(encoding="utf-8")
            if why := core.token_problem(secret.strip()):
                found = [Problem(f"{key}.{'env' if token.env else 'file'}", why)]
        problems += found
    if api is not None and api.cert_file is not None and api.key_file is not None:
        problems += preflight.readable_file(base / api.cert_file, "api.cert_file", "the API's certificate")
        problems += preflight.secret_file(base / api.key_file, "api.key_file", "the API's private key")
    if cloud is not None:
        if cloud.username_env is not None:
            problems += preflight.environment_variable(cloud.username_env, "cloud.username_env", "the broker user name")
            if gateway is not None and os.environ.get(cloud.username_env):
                problems += identity_problems(gateway.venue, gateway.id, os.environ[cloud.username_env],
                                              "cloud.username_env", shown=False)
        if cloud.password_env is not None:
            problems += preflight.environment_variable(cloud.password_env, "cloud.password_env", "the broker password")
        for key, what in (("ca_file", "the broker's CA certificate"), ("cert_file", "the box's certificate")):
            if (name := getattr(cloud, key)) is not None:
                problems += preflight.readable_file(base / name, f"cloud.{key}", what)
        if cloud.key_file is not None:
            problems += preflight.secret_file(base / cloud.key_file, "cloud.key_file", "the box's private key")
    if inference is not None:
        for key in ("equipment_model", "mood_model"):
            if name := getattr(inference, key):
                problems += preflight.readable_file((base / name).resolve(), f"inference.{key}", "model file")
    for driver in drivers:
        if driver.enabled:
            found = registry.find(driver.type).preflight(driver.options)
            problems += [Problem(f"drivers.{driver.name}" + (f".{p.path}" if p.path else ""), p.message) for p in found]
    if show is not None:
        problems += cue_settings.load(base, show)[1]  # the cue list's file, checked against the show
        if show.shared is not None:
            problems += _shared_box(base, gateway, show.shared)
    return problems + floor_plan_problems(base, dashboard)


def _shared_box(base: Path, gateway: core.GatewaySection | None,
                shared: shared_settings.SharedSection) -> list[Problem]:
    """`[show.shared]`'s secrets and files, as `[cloud]`'s: without them the box never joins the show's bus."""
    problems = []
    if shared.username_env is not None:
        problems += preflight.environment_variable(shared.username_env, "show.shared.username_env",
                                                   "the venue broker's user name")
        name = os.environ.get(shared.username_env, "")
        if gateway is not None and name and name != (expected := shared_settings.user_name(gateway.venue,
                                                                                           gateway.id)):
            problems.append(Problem("show.shared.username_env", f"environment variable {shared.username_env} is not "
                                    f"this box's identity on the venue's broker (allowed: {expected!r}, venue/show/"
                                    "gateway id: the ACL lets a box write only its own topics of the show)"))
    if shared.password_env is not None:
        problems += preflight.environment_variable(shared.password_env, "show.shared.password_env",
                                                   "the venue broker's password")
    for key, what in (("ca_file", "the venue broker's CA certificate"), ("cert_file", "the box's certificate")):
        if (name := getattr(shared, key)) is not None:
            problems += preflight.readable_file(base / name, f"show.shared.{key}", what)
    if shared.key_file is not None:
        problems += preflight.secret_file(base / shared.key_file, "show.shared.key_file", "the box's private key")
    return problems


def resolve_secret(config: Config, token: core.TokenSection) -> str:
    """The token's secret, from its environment variable or file (one other users cannot read: `read_secret`);
    ValueError says what is missing or unsafe."""
    if token.demo_token is not None:
        return token.demo_token
    if token.env is not None:
        value = os.environ.get(token.env, "")
        if not value:
            raise ValueError(f"environment variable {token.env} is not set or empty")
        return value
    assert token.file is not None
    return preflight.read_secret(config.path.parent / token.file, f"the {token.role} token file")
