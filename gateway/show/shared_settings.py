"""The `[show.shared]` section: several boxes carry one show (gateway/show/shared.py, docs/multi-box.md). Where the
venue's broker is (not the cloud's, though it may be the same), which boxes the show has (their order gives each its
block of serials), how this box proves who it is there, and how far its clock may be from the show's."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.addresses import is_loopback
from gateway.cloud.settings import Broker, parse_broker
from gateway.schema import Problem, check_slug, setting

MAX_BOXES = 16  # each box counts its serials in its own block of the 256: 16 each at most


def user_name(venue: str, gateway_id: str) -> str:
    """The user name a box connects to the venue's broker with: config/multibox/mosquitto.acl keys on it
    (`venues/%u/...`), so a box writes only its own topics of the show."""
    return f"{venue}/show/{gateway_id}"


@dataclass(frozen=True)
class SharedSection:
    brokers: list[str] = field(default_factory=list)  # the venue's broker, mqtt:// or mqtts://; more: tried in turn
    boxes: list[str] = field(default_factory=list)  # every box's gateway id, this one included: the order gives serials
    # How far this box's clock may be from the show's (the median of its boxes' clocks) before it refuses to transmit.
    clock_bound_ms: float = setting(2.0, min=0.1, max=1000)
    client_id: str | None = None  # default: "vg-show-" and the gateway id
    keepalive_s: int = setting(5, min=1, max=3600)  # the broker says a box is lost 1.5 keepalives after its silence
    silence_s: float = setting(3.0, min=0.5, max=3600)  # a box heard nothing from for this long is lost
    clock_interval_s: float = setting(1.0, min=0.1, max=60)  # how often this box asks the others' clocks
    username: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    # TLS (mqtts://): as [cloud]. Relative paths are taken from the configuration file's directory.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    backoff_initial_s: float = setting(0.5, min=0.05, max=60)
    backoff_max_s: float = setting(5.0, min=0.1, max=3600)

    def parsed_brokers(self) -> list[Broker]:
        return [parse_broker(url) for url in self.brokers]

    def problems(self) -> list[Problem]:
        out = []
        if not self.brokers:
            out.append(Problem("brokers", "is required: the venue's MQTT broker (allowed: a list of mqtt://HOST[:PORT] "
                                          "or mqtts://HOST[:PORT])"))
        brokers = []
        for i, url in enumerate(self.brokers):
            try:
                brokers.append(parse_broker(url))
            except ValueError as exc:
                out.append(Problem(f"brokers[{i}]", str(exc)))
        if not 1 <= len(self.boxes) <= MAX_BOXES:
            out.append(Problem("boxes", f"{len(self.boxes)} boxes (allowed: 1 to {MAX_BOXES}, this one included: each "
                                        "counts its serials in its own block of the 256)"))
        for i, box in enumerate(self.boxes):
            if (message := check_slug(box)) is not None:
                out.append(Problem(f"boxes[{i}]", message))
        if len(set(self.boxes)) != len(self.boxes):
            out.append(Problem("boxes", "gateway ids must be unique (each box's place gives its serials)"))
        if self.username is not None and self.username_env is not None:
            out.append(Problem("username", "give username or username_env, not both"))
        if self.password_env is not None and self.username is None and self.username_env is None:
            out.append(Problem("password_env", "a password needs a user name (allowed: username or username_env)"))
        if (self.cert_file is None) != (self.key_file is None):
            out.append(Problem("cert_file", "mutual TLS needs both cert_file and key_file"))
        for broker in brokers:
            if self.password_env is not None and not broker.tls and not is_loopback(broker.host):
                out.append(Problem("password_env", f"the password would cross the network in clear to {broker.host} "
                                                   "(allowed: mqtts:// brokers, or plain ones on loopback)"))
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key) is not None and not broker.tls:
                    out.append(Problem(key, f"is for TLS, but the broker {broker} is plain (allowed: mqtts://)"))
        if self.backoff_max_s < self.backoff_initial_s:
            out.append(Problem("backoff_max_s", "must not be below show.shared.backoff_initial_s"))
        return out


def box_problems(section: SharedSection, venue: str, gateway_id: str) -> list[Problem]:
    """What the section must say of this box (paths within `show.shared`): its id among the boxes, and its user
    name the one the ACL expects."""
    out = []
    if gateway_id not in section.boxes:
        out.append(Problem("boxes", f"this box's id {gateway_id!r} is not among them (allowed: every box of the show, "
                                    "this one included)"))
    expected = user_name(venue, gateway_id)
    if section.username is not None and section.username != expected:
        out.append(Problem("username", f"{section.username!r} is not this box's identity on the venue's broker "
                                       f"{expected!r} (venue/show/gateway id): the ACL (config/multibox/mosquitto.acl) "
                                       f"lets a box write only its own topics of the show (allowed: {expected!r})"))
    return out
