"""aiomqtt's client, told what the broker said of each publish. Under MQTT 5 a PUBACK carries a reason code, and
any code of 0x80 or above (not authorised, quota exceeded, topic name invalid, ...) means the message was not
delivered. aiomqtt 2.x drops that code in its `on_publish` callback and returns as if the message had arrived, so
an ACL that denies the box's topics would empty the outbox into nothing. Here a refused publish raises
`PublishRefused` instead. (MQTT 3.1.1 has no such code: a broker that drops a denied publish still acknowledges
it, and nothing on the wire can tell the box; docs/cloud-protocol.md says what that means.)

A publish the broker leaves unacknowledged past its timeout raises `AckTimeout`, which names the topic: a broker
that has lost the message (a cluster node whose store timed out answers nothing) would otherwise hold the link.

`publish` is aiomqtt 2.5's own, step for step, with the reason code kept for the message id it waited on; it uses
aiomqtt's private attributes (`_client`, `_pending_call`, `_pending_publishes`, `_wait_for`), so aiomqtt is held
below 3 and the cloud tests run it against a real Mosquitto that refuses publishes.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttCodeError
from aiomqtt.types import PayloadType
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


class PublishRefused(aiomqtt.MqttError):
    """The broker answered a publish with a failure reason code: the message was not delivered."""

    def __init__(self, topic: str, reason: ReasonCode) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"the broker refused to take {topic}: {reason} (reason code 0x{reason.value:02X})")


class AckTimeout(aiomqtt.MqttError):
    """The broker did not acknowledge a publish in time: it may never have taken it."""

    def __init__(self, topic: str, timeout: float) -> None:
        self.topic = topic
        super().__init__(f"the broker did not acknowledge a message to {topic} within {timeout:g} s")


class Client(aiomqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refusals: dict[int, ReasonCode] = {}

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        if reason_code.is_failure and mid in self._pending_publishes:  # a publish still waiting for its answer
            self._refusals[mid] = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish(  # type: ignore[override]  # aiomqtt's, less the arguments handed on to paho unread
            self, topic: str, payload: PayloadType = None, qos: int = 0, retain: bool = False,
            properties: Properties | None = None, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """As aiomqtt's, and PublishRefused when the broker's acknowledgement says it did not take the message,
        AckTimeout when no acknowledgement came within `timeout` (None: the client's; math.inf: none)."""
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttCodeError(info.rc, "Could not publish message")
        if info.is_published():  # QoS 0, written already
            return
        confirmation = asyncio.Event()
        limit = self.timeout if timeout is None else timeout
        try:
            with self._pending_call(info.mid, confirmation, self._pending_publishes):
                await asyncio.wait_for(confirmation.wait(), None if math.isinf(limit) else limit)
        except TimeoutError:
            raise AckTimeout(topic, limit) from None
        finally:
            reason = self._refusals.pop(info.mid, None)
        if reason is not None:
            raise PublishRefused(topic, reason)
