"""The cloud broker: reachable (over TLS where the configuration says mqtts), taking this box's credentials, and
letting it publish its own topics. The check connects as the box's user under a client id of its own (the running
gateway's session is left alone) and publishes one event of kind `doctor` to the box's `events` topic with QoS 1:
under MQTT 5 the broker's acknowledgement says whether its ACL took it.

In a shared show, the venue's brokers (`[show.shared] brokers`, subject `show`) too: each reachable (over TLS where
the URL says mqtts), taking the show's credentials (the box's user `VENUE/show/ID`), and letting it read the show's
topics: the check connects under a client id of its own and subscribes to `venues/VENUE/show/+/+` (QoS 1), the
running gateway's subscription; a broker that checks a subscription against its ACL refuses it in the MQTT 5 SUBACK
(Mosquitto grants it and filters what its ACL hides at delivery: there the check proves the address, TLS and the
credentials, not the ACL). It publishes nothing there (every box of the show would take a message to its topics),
so the ACL's write side is not tried."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import uuid

import aiomqtt
import orjson
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError

from gateway import config as configuration
from gateway.box.check import Box, Finding, ok, problem, skipped, warn
from gateway.cloud.client import Client, PublishRefused
from gateway.cloud.link import UNSUPPORTED_PROTOCOL, tls_context
from gateway.cloud.settings import Broker, credentials, topic_root
from gateway.show import shared_messages, shared_settings

PROBE_KIND = "doctor"


def check(box: Box) -> list[Finding]:
    assert box.config is not None
    return [*_cloud(box), *_show(box)]


def _cloud(box: Box) -> list[Finding]:
    assert box.config is not None
    cfg = box.config
    section = cfg.cloud
    if section is None:
        return [skipped("no [cloud] section: nothing leaves the box")]
    try:
        creds = credentials(section, cfg.path.parent)
        context = tls_context(creds) if section.tls else None
    except ValueError as exc:
        return [problem(f"cannot connect to {', '.join(map(str, section.addresses()))}: {exc}",
                        f"set what the [cloud] section names (the service's environment is "
                        f"{cfg.path.parent / 'environment'}), then venue-gateway check-config {cfg.path}")]
    return [finding for broker in section.addresses()  # every address the link may fail over to
            for finding in asyncio.run(_probe(cfg, broker, creds.username, creds.password, context, box.timeout_s))]


async def _probe(cfg: configuration.Config, broker: Broker, username: str | None, password: str | None,
                 context: ssl.SSLContext | None, timeout_s: float) -> list[Finding]:
    assert cfg.cloud is not None
    topic = f"{topic_root(cfg.gateway.venue, cfg.gateway.id)}/events"
    client_id = (cfg.cloud.client_id or f"vg-{cfg.gateway.id}")[:16] + "-doctor"
    probe = orjson.dumps({"event_id": f"doctor:{uuid.uuid4().hex}", "gateway_id": cfg.gateway.id,
                          "venue": cfg.gateway.venue, "kind": PROBE_KIND,
                          "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")})
    v5 = cfg.cloud.protocol != "3.1.1"
    who = f"as {username!r}" if username else "with its certificate"
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                async with Client(broker.host, broker.port, username=username, password=password,
                                  identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5 if v5 else
                                  aiomqtt.ProtocolVersion.V311, clean_session=None if v5 else True,
                                  clean_start=True if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY, timeout=timeout_s,
                                  tls_context=context if broker.tls else None) as client:
                    await client.publish(topic, probe, qos=1, timeout=timeout_s)
        except MqttConnectError as exc:
            code = getattr(exc.rc, "value", exc.rc)
            if code == UNSUPPORTED_PROTOCOL and v5 and cfg.cloud.protocol == "auto":
                v5 = False
                continue
            reason = str(exc.rc).strip() if exc.rc is not None and not isinstance(exc.rc, int) else str(exc)
            return [problem(f"{broker} refused the connection {who}: {reason}",
                            "check cloud.username (or username_env) and password_env against the broker's "
                            "password file, or the box's certificate against the broker's CA")]
        except PublishRefused as exc:
            return [problem(f"{broker} took the connection {who} but refused a message to {topic}: {exc.reason} "
                            f"(reason code 0x{exc.reason.value:02X})",
                            "the broker's ACL must let the box write its own topics: config/mosquitto.acl's "
                            "`pattern write venues/%u/...` lines, with the box connecting as its venue/id")]
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            text = str(exc) or type(exc).__name__
            if any(word in text for word in ("SSL", "certificate", "TLS", "tlsv1")):
                return [problem(f"TLS with {broker} failed: {text}",
                                "check cloud.ca_file (the CA of the broker's certificate), cert_file and key_file")]
            if isinstance(exc, TimeoutError) or not text.strip():
                text = f"no answer within {timeout_s:g} s"
            return [problem(f"{broker} cannot be reached: {text}",
                            "is the broker up, and reachable from the venue network (its name, a firewall)?")]
        break
    if not v5:
        return [warn(f"{broker} took the connection {who} and a message to {topic}, under MQTT 3.1.1, whose "
                     "acknowledgement cannot say whether the broker's ACL let it through",
                     "use a broker that speaks MQTT 5 (protocol = \"auto\"), or check its ACL by hand")]
    return [ok(f"{broker}{' over TLS' if broker.tls else ''} {who}: a message to {topic} was taken (MQTT 5 PUBACK)")]


SHOW = "show"  # the subject of the show's brokers' findings


def _show(box: Box) -> list[Finding]:
    assert box.config is not None
    cfg = box.config
    section = cfg.show.shared
    if section is None:
        return []
    try:
        creds = credentials(section, cfg.path.parent, "show.shared")
        context = tls_context(creds, "show.shared") if any(b.tls for b in section.parsed_brokers()) else None
    except ValueError as exc:
        return [problem(f"cannot connect to the show's broker {', '.join(section.brokers)}: {exc}",
                        f"set what the [show.shared] section names (the service's environment is "
                        f"{cfg.path.parent / 'environment'}), then venue-gateway check-config {cfg.path}", SHOW)]
    return [asyncio.run(_probe_show(cfg, broker, creds.username, creds.password, context, box.timeout_s))
            for broker in section.parsed_brokers()]


async def _probe_show(cfg: configuration.Config, broker: Broker, username: str | None, password: str | None,
                      context: ssl.SSLContext | None, timeout_s: float) -> Finding:
    assert cfg.show.shared is not None
    topics = shared_messages.subscription(cfg.gateway.venue)
    client_id = (cfg.show.shared.client_id or f"vg-show-{cfg.gateway.id}")[:16] + "-doctor"
    who = f"as {username!r}" if username else "with no user name"
    try:
        async with asyncio.timeout(timeout_s):
            async with aiomqtt.Client(broker.host, broker.port, username=username, password=password,
                                      identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5, clean_start=True,
                                      timeout=timeout_s, tls_context=context if broker.tls else None) as client:
                granted = await client.subscribe(topics, qos=1, timeout=timeout_s)
    except MqttConnectError as exc:
        reason = str(exc.rc).strip() if exc.rc is not None and not isinstance(exc.rc, int) else str(exc)
        return problem(f"the show's broker {broker} refused the connection {who}: {reason}",
                       "check show.shared.username (or username_env; this box's is "
                       f"{shared_settings.user_name(cfg.gateway.venue, cfg.gateway.id)!r}) and password_env against "
                       "the venue broker's password file, or the box's certificate against its CA", SHOW)
    except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
        text = str(exc) or type(exc).__name__
        if any(word in text for word in ("SSL", "certificate", "TLS", "tlsv1")):
            return problem(f"TLS with the show's broker {broker} failed: {text}",
                           "check show.shared.ca_file (the CA of the venue broker's certificate), cert_file and "
                           "key_file", SHOW)
        if isinstance(exc, TimeoutError) or not text.strip():
            text = f"no answer within {timeout_s:g} s"
        return problem(f"the show's broker {broker} cannot be reached: {text}",
                       "is the venue's broker up, and reachable from this box (its address, a firewall)? Until it "
                       "is, this box plays the show alone", SHOW)
    refused = [code for code in granted if getattr(code, "value", code) >= 0x80]
    if refused:
        code = refused[0]
        return problem(f"the show's broker {broker} took the connection {who} but refused its subscription to "
                       f"{topics}: {code} (reason code 0x{getattr(code, 'value', code):02X})",
                       "the venue broker's ACL must let each box read the show's topics: "
                       "config/multibox/mosquitto.acl's `topic read venues/VENUE/show/+/...` lines for its user",
                       SHOW)
    return ok(f"the show's broker {broker}{' over TLS' if broker.tls else ''} {who}: a subscription to {topics} was "
              "granted (MQTT 5 SUBACK); nothing is published there", SHOW)
