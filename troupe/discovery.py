"""Home Assistant MQTT discovery: each bot announces the GPIO relays it owns as HA entities
and carries out Home Assistant's commands on them through the bot, exactly once.

It speaks through the bot's one MQTT connection (troupe.mqttclient), shared with the mqtt
driver and the bus. Only the owner of a relay announces it and subscribes to its
command topic, so one command from Home Assistant is one action however many bots share
the broker. See docs/home-assistant.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from troupe import __version__
from troupe.errors import TroupeError
from troupe.federation import Action
from troupe.mqttclient import Message, MqttClient, MqttClientError, Subscription
from troupe.mqttsettings import MqttSettings
from troupe.plugin import DeviceState, DriverError
from troupe.tasks import spawn

if TYPE_CHECKING:
    from troupe.bot import Bot, DeviceSpec
    from troupe.config import Federation
    from troupe.devents import DeviceEvent

log = logging.getLogger(__name__)

DRIVER = "gpio_relay"
"""The driver whose relays are announced (motion sensors are not relays)."""
CONNECT_WAIT_S = 5.0
"""How long start() waits for the broker before the bot goes on without it (paho retries)."""
STOP_WAIT_S = 3.0
"""How long stop() waits for a command in hand and for "offline" to reach the broker."""
ONLINE, OFFLINE = "online", "offline"
PAYLOAD_ON, PAYLOAD_OFF = "ON", "OFF"
OPS = {PAYLOAD_ON: "on", PAYLOAD_OFF: "off"}
ORIGIN = "ha"
"""The journal's channel for actions Home Assistant asked for."""


PRESS = "press"
"""The one event type of a wall switch's event entity."""
MOTION_HOLD_S = 60.0
"""How long HA shows motion after a motion event (the sensor's interval_s, if set)."""


class DiscoveryError(TroupeError, ValueError):
    """The mqtt section cannot be used for Home Assistant discovery (one sentence)."""


def slug(text: str) -> str:
    """An id from a name: lowercase letters, digits and '_' (what HA's entity ids allow)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


@dataclass(frozen=True)
class Entity:
    """One relay as Home Assistant sees it, with the topics that carry it."""

    device: str
    kind: str
    component: str
    """HA's platform: `light` for kind light, `switch` for every other kind."""
    object_id: str
    config_topic: str
    command_topic: str
    """Empty for an input (a motion sensor, a wall switch): HA cannot command it."""
    state_topic: str
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def plan_entities(
    federation: str, bot: str, devices: Iterable[DeviceSpec], prefix: str
) -> list[Entity]:
    """The entities `bot` announces: the gpio_relay relays it owns, by name.

    Two names with the same slug ("a-b", "a b") get a short hash each, so every entity
    keeps topics and an id of its own."""
    mine = sorted(
        (d for d in devices if d.owner == bot and d.driver == DRIVER),
        key=lambda d: d.name,
    )
    slugs = [slug(d.name) for d in mine]
    found = []
    for device, base in zip(mine, slugs, strict=True):
        part = base
        if slugs.count(base) > 1:
            part += "_" + hashlib.sha1(device.name.encode()).hexdigest()[:6]
        object_id = slug(f"troupe_{federation}_{bot}_{part}")
        topic = f"troupe/{federation}/{bot}/{part}"
        if "motion" in device.options:  # a PIR sensor: HA's binary_sensor, device class motion
            found.append(_input(device, "binary_sensor", object_id, topic, prefix))
            continue
        if device.options.get("button") is not None:  # its wall switch: HA's event entity
            found.append(_input(device, "event", object_id + "_wall_switch", topic, prefix))
        component = "light" if device.kind == "light" else "switch"
        found.append(
            Entity(
                device=device.name,
                kind=device.kind,
                component=component,
                object_id=object_id,
                config_topic=f"{prefix}/{component}/{object_id}/config",
                command_topic=f"{topic}/set",
                state_topic=f"{topic}/state",
            )
        )
    return found


def _input(device: DeviceSpec, component: str, object_id: str, topic: str, prefix: str) -> Entity:
    """A GPIO input as HA sees it: a motion sensor or a wall switch; no command topic."""
    leaf = "motion" if component == "binary_sensor" else "wall_switch"
    return Entity(
        device=device.name,
        kind=device.kind,
        component=component,
        object_id=object_id,
        config_topic=f"{prefix}/{component}/{object_id}/config",
        command_topic="",
        state_topic=f"{topic}/{leaf}",
        options=device.options,
    )


def config_payload(entity: Entity, federation: str, bot: str) -> dict[str, Any]:
    """The discovery config of one entity, as Home Assistant's MQTT light (default
    schema) and switch platforms read it. `object_id` serves HA before 2025.10,
    `default_entity_id` the later ones; each ignores the other's key."""
    payload: dict[str, Any] = {
        "name": entity.device,
        "unique_id": entity.object_id,
        "object_id": entity.object_id,
        "default_entity_id": f"{entity.component}.{entity.object_id}",
        "command_topic": entity.command_topic,
        "state_topic": entity.state_topic,
        "availability_topic": status_topic(federation, bot),
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "payload_on": PAYLOAD_ON,
        "payload_off": PAYLOAD_OFF,
        "qos": 1,
        "optimistic": False,
        "device": {
            "identifiers": [device_id(federation, bot)],
            "name": bot,
            "manufacturer": "troupe",
            "model": "troupe bot (GPIO relays)",
            "sw_version": __version__,
        },
        "origin": {"name": "troupe", "sw_version": __version__},
    }
    if entity.kind == "outlet":
        payload["device_class"] = "outlet"
    if entity.component == "binary_sensor":
        for key in ("command_topic", "payload_on", "payload_off", "optimistic"):
            payload.pop(key)
        payload.update(
            device_class="motion",
            payload_on=PAYLOAD_ON,
            payload_off=PAYLOAD_OFF,
            off_delay=max(1, round(float(entity.options.get("interval_s", MOTION_HOLD_S)))),
        )
    elif entity.component == "event":
        for key in ("command_topic", "payload_on", "payload_off", "optimistic"):
            payload.pop(key)
        payload.update(
            name=f"{entity.device} wall switch", event_types=[PRESS], device_class="button"
        )
    return payload


def status_topic(federation: str, bot: str) -> str:
    """The bot's availability: "online" (retained) while connected, "offline" after."""
    return f"troupe/{federation}/{bot}/status"


def device_id(federation: str, bot: str) -> str:
    """The bot as one device of Home Assistant's device registry."""
    return slug(f"troupe_{federation}_{bot}")


def _prefix(value: object) -> str:
    text = str(value if value is not None else "homeassistant").strip().rstrip("/")
    if not text or "+" in text or "#" in text:
        raise DiscoveryError(
            f"the mqtt discovery_prefix {value!r} is not a topic prefix; "
            "use Home Assistant's, by default homeassistant"
        )
    return text


class HomeAssistantDiscovery:
    """A bot Service: announce the bot's relays to Home Assistant, drive them on its
    commands and report their state after every action, from chat or from HA.

    Command delivery: subscriptions at QoS 1 in a clean session, so a command is never
    replayed from the broker after a reconnect or a restart (turning a relay on hours
    after it was asked would surprise more than a lost command, which HA shows at
    once). Each delivery gets a journal id; a message the broker delivers again with
    the DUP flag reuses the id of its first delivery, so the journal acts on it once.
    Retained command messages are stale by definition and are ignored."""

    def __init__(
        self,
        settings: MqttSettings | Mapping[str, Any],
        federation: str,
        *,
        client: MqttClient | None = None,
        connect_timeout: float = CONNECT_WAIT_S,
    ) -> None:
        """`settings` is the federation file's mqtt section (troupe.mqttsettings); `client`
        the bot's shared MQTT connection (without one, discovery opens its own at start);
        `federation` the federation's name."""
        raw = dict(settings)
        try:
            self.settings = MqttSettings.model_validate(raw)
        except ValidationError as err:
            error = err.errors(include_url=False)[0]
            key = ".".join(str(p) for p in error["loc"]) or "section"
            message = str(error["msg"]).removeprefix("Value error, ")
            raise DiscoveryError(f"the mqtt {key} cannot be used: {message}") from None
        self.prefix = _prefix(raw.get("discovery_prefix"))
        self.federation = federation
        self.connect_timeout = connect_timeout
        self.entities: dict[str, Entity] = {}
        self.connected = False
        self._bot: Bot | None = None
        self.bot_name = ""
        self.status = ""
        self.device_id = ""
        self._config_topics: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = client
        self._subscription: Subscription | None = None
        self._by_command: dict[str, Entity] = {}
        self._queue: asyncio.Queue[tuple[Entity, str, str]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready = asyncio.Event()
        self._closing = False
        self._refused: str | None = None
        self._session = ""
        self._count = itertools.count(1)
        self._deliveries: dict[int, str] = {}

    # lifecycle --------------------------------------------------------------------------

    async def start(self, bot: Bot) -> None:
        """Connect (bounded wait; paho keeps trying if the broker is away) and announce."""
        self._bot = bot
        self.bot_name = bot.name
        self._loop = asyncio.get_running_loop()
        self.status = status_topic(self.federation, bot.name)
        self.device_id = device_id(self.federation, bot.name)
        found = plan_entities(self.federation, bot.name, bot.devices.values(), self.prefix)
        self.entities = {e.device: e for e in found if e.command_topic}
        self.inputs = {(e.device, e.component): e for e in found if not e.command_topic}
        self._by_command = {e.command_topic: e for e in found if e.command_topic}
        self._config_topics = {e.config_topic for e in found}
        if self._client is None:
            self._client = self.own_client(bot.name)
        topics = [(topic, 1) for topic in sorted(self._by_command)]
        topics += [(self.status, 1), (f"{self.prefix}/status", 1)]
        topics += [(f"{self.prefix}/+/+/config", 0)]
        self._subscription = Subscription(
            topics,
            on_message=self._on_message,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            on_refused=self._on_refused,
            on_denied=self._on_subscriptions_refused,
        )
        bot.state_listeners.append(self._on_state)
        bot.event_listeners.append(self._on_event)
        self._worker = spawn(self._work(), "Home Assistant's command queue", self._tasks)
        self._client.subscribe(self._subscription)
        await self._client.start()
        try:
            await asyncio.wait_for(self._ready.wait(), self.connect_timeout)
        except TimeoutError:
            log.warning(
                "Home Assistant discovery: the MQTT broker at %s is not reachable yet; "
                "%s's relays appear in Home Assistant once it is",
                self.settings.address,
                bot.name,
            )
        else:
            log.info(
                "Home Assistant discovery: %d relays of %s announced on %s",
                len(found),
                bot.name,
                self.settings.address,
            )

    async def stop(self) -> None:
        """Finish the command in hand, say "offline" (retained), disconnect."""
        self._closing = True
        bot = self._bot
        if bot is not None and self._on_state in bot.state_listeners:
            bot.state_listeners.remove(self._on_state)
        if bot is not None and self._on_event in bot.event_listeners:
            bot.event_listeners.remove(self._on_event)
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), STOP_WAIT_S)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._tasks):  # an announce in flight must not say "online" later
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        client = self._client
        if client is None or self._subscription is None:
            return
        client.unsubscribe(self._subscription)  # our own "offline" must not come back to us
        if self.connected:
            info = client.publish(self.status, OFFLINE, qos=1, retain=True)
            await asyncio.to_thread(_wait_published, [info], STOP_WAIT_S)
        await client.stop()
        self.connected = False

    def own_client(self, bot: str) -> MqttClient:
        """A connection of discovery's own (when the bot shares none), with a fixed client
        id: after a crash or a power cut the new connection takes over the old one at once,
        so the old one's late "offline" will cannot follow our "online"."""
        try:
            client = MqttClient(self.settings, f"troupe-{self.federation}-{bot}-ha", bot)
        except MqttClientError as err:
            raise DiscoveryError(str(err)) from None
        self.will_on(client, bot)
        return client

    def will_on(self, client: MqttClient, bot: str) -> None:
        """ "offline" (retained) when the bot vanishes: set before the client connects."""
        client.will(status_topic(self.federation, bot), OFFLINE, qos=1, retain=True)

    # the event loop -------------------------------------------------------------------------

    def _on_connected(self, session_kept: bool) -> None:
        self.connected, self._refused = True, None
        if not session_kept:  # a kept session may redeliver its packets (DUP, same ids)
            self._session = secrets.token_hex(4)
            self._deliveries.clear()
        self._spawn(self._announce(), "announcing the relays to Home Assistant")

    def _on_refused(self, reason: str) -> None:
        if self._refused != reason:
            log.error(
                "Home Assistant discovery: the MQTT broker at %s refused the connection: %s",
                self.settings.address,
                reason,
            )
        self._refused = reason

    def _on_subscriptions_refused(self, refused: list[str]) -> None:
        log.error(
            "Home Assistant discovery: the MQTT broker at %s refused %d subscriptions (%s); "
            "check its ACL: Home Assistant cannot drive %s's relays",
            self.settings.address,
            len(refused),
            refused[0],
            self._bot.name if self._bot else "this bot",
        )

    def _on_disconnected(self, reason: str) -> None:
        if self.connected:
            log.warning(
                "Home Assistant discovery: lost the MQTT broker at %s (%s); reconnecting",
                self.settings.address,
                reason,
            )
        self.connected = False

    def _on_message(self, message: Message) -> None:
        topic, payload = message.topic, message.payload
        entity = self._by_command.get(topic)
        if entity is not None:
            self._on_command(entity, payload, message.retain, message.dup, message.mid)
        elif topic == self.status:
            if payload != ONLINE.encode() and self.connected and not self._closing:
                self._publish(self.status, ONLINE)  # a late will of an old connection
        elif topic == f"{self.prefix}/status":
            if payload.strip() == ONLINE.encode():
                self._spawn(self._announce(), "announcing the relays again to Home Assistant")
        elif topic.endswith("/config"):
            self._forget_ghost(topic, payload)

    def _on_command(
        self, entity: Entity, payload: bytes, retain: bool, dup: bool, mid: int
    ) -> None:
        if retain:
            log.warning(
                "ignored a retained command for the %s on %s (%r): a command is carried out "
                "when it is sent, never replayed from the broker; clear it with an empty "
                "retained message",
                entity.device,
                entity.command_topic,
                payload[:40],
            )
            return
        word = payload.decode(errors="replace").strip()
        op = OPS.get(word.upper())
        if op is None:
            log.warning(
                "ignored a command for the %s on %s: %r is neither %s nor %s",
                entity.device,
                entity.command_topic,
                word[:40],
                PAYLOAD_ON,
                PAYLOAD_OFF,
            )
            return
        if self._closing:
            log.warning("ignored %s for the %s: the bot is stopping", word, entity.device)
            return
        self._queue.put_nowait((entity, op, self._delivery(mid, dup)))

    def _delivery(self, mid: int, dup: bool) -> str:
        """The journal id of one delivery: a DUP redelivery of a packet id keeps the id of
        its first delivery; anything else (QoS 0 has no packet id) gets a new one."""
        if mid and dup and mid in self._deliveries:
            return self._deliveries[mid]
        key = f"{self._session}.{next(self._count)}"
        if mid:
            self._deliveries[mid] = key
        return key

    def _forget_ghost(self, topic: str, payload: bytes) -> None:
        """A retained config of this bot for a relay it no longer announces (renamed,
        removed, another kind): an empty retained config removes it from HA."""
        if topic in self._config_topics or self.device_id.encode() not in payload:
            return
        try:
            config = json.loads(payload)
        except ValueError:
            return
        device = config.get("device") if isinstance(config, dict) else None
        identifiers = device.get("identifiers") if isinstance(device, dict) else None
        if isinstance(identifiers, str):
            identifiers = [identifiers]
        if isinstance(identifiers, list) and self.device_id in identifiers:
            log.info("Home Assistant discovery: removing %s, no longer a relay of this bot", topic)
            self._publish(topic, "")

    async def _announce(self) -> None:
        """Every relay's config and current state, then "online" (all retained); ready
        once the broker has them all (bounded)."""
        sent = []
        for entity in self.entities.values():
            payload = config_payload(entity, self.federation, self.bot_name)
            sent.append(self._publish(entity.config_topic, json.dumps(payload, sort_keys=True)))
        for entity in self.inputs.values():
            payload = config_payload(entity, self.federation, self.bot_name)
            sent.append(self._publish(entity.config_topic, json.dumps(payload, sort_keys=True)))
            if entity.component == "binary_sensor":
                sent.append(self._publish(entity.state_topic, PAYLOAD_OFF))
        for entity in self.entities.values():
            sent.append(await self._publish_state(entity))
        sent.append(self._publish(self.status, ONLINE))
        await asyncio.to_thread(_wait_published, [i for i in sent if i is not None], STOP_WAIT_S)
        self._ready.set()

    async def _work(self) -> None:
        """Carry out Home Assistant's commands one at a time, in the order they came."""
        while True:
            entity, op, key = await self._queue.get()
            try:
                await self._carry_out(entity, op, key)
            except Exception:
                log.exception("Home Assistant's %s for the %s failed", op, entity.device)
            finally:
                self._queue.task_done()

    async def _carry_out(self, entity: Entity, op: str, key: str) -> None:
        assert self._bot is not None
        try:
            text = await self._bot.drive(Action(entity.device, op), origin=(ORIGIN, key))
        except DriverError as err:
            log.error("Home Assistant asked to turn %s the %s, but %s", op, entity.device, err)
            await self._publish_state(entity)  # HA shows what the relay really is
            return
        if text == "already done":
            await self._publish_state(entity)
        else:
            log.info("Home Assistant: %s", text)

    async def _on_state(self, device: str, state: DeviceState) -> None:
        """A bot state listener: after every action on a relay, its state for HA."""
        entity = self.entities.get(device)
        if entity is not None:
            self._publish_value(entity, state)

    async def _on_event(self, event: DeviceEvent) -> None:
        """A bot event listener: motion turns the binary_sensor on (HA's off_delay turns it
        off); a wall switch's press is an event entity's `press` (never retained)."""
        if event.kind == "motion" and (entity := self.inputs.get((event.device, "binary_sensor"))):
            self._publish(entity.state_topic, PAYLOAD_ON)
        elif event.kind == "pressed" and (entity := self.inputs.get((event.device, "event"))):
            body = json.dumps({"event_type": PRESS, "state": event.detail})
            if self._client is not None:
                self._client.publish(entity.state_topic, body, qos=1, retain=False)

    async def _publish_state(self, entity: Entity) -> mqtt.MQTTMessageInfo | None:
        assert self._bot is not None
        return self._publish_value(entity, await self._bot.device_state(entity.device))

    def _publish_value(self, entity: Entity, state: DeviceState) -> mqtt.MQTTMessageInfo | None:
        if not state.online or state.on is None:
            return None
        return self._publish(entity.state_topic, PAYLOAD_ON if state.on else PAYLOAD_OFF)

    def _publish(self, topic: str, payload: str) -> mqtt.MQTTMessageInfo | None:
        """Retained, QoS 1; while the broker is away paho keeps it for the reconnect."""
        if self._client is None:
            return None
        return self._client.publish(topic, payload, qos=1, retain=True)

    def _spawn(self, coro: Any, what: str) -> None:
        if self._closing:  # stopping: no announce may start after stop() cancelled them
            coro.close()
            return
        spawn(coro, what, self._tasks, logger=log)


def _wait_published(sent: list[mqtt.MQTTMessageInfo], timeout: float) -> None:
    """Bounded wait until the broker has acknowledged QoS 1 publishes (paho's thread sends
    them); one that is not sent now is sent after the reconnect, so it is not waited for."""
    deadline = time.monotonic() + timeout
    for info in sent:
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            continue
        try:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError) as err:
            log.warning("Home Assistant discovery: a message was not sent: %s", err)
            return


def attach(
    bot: Bot, federation: Federation, client: MqttClient | None = None
) -> HomeAssistantDiscovery | None:
    """Add discovery to the bot's services when the federation file asks for it
    (`mqtt: {discovery: true}`); once only, whoever calls it again."""
    settings = federation.mqtt
    if settings is None or not settings.discovery:
        return None
    for service in bot.services:
        if isinstance(service, HomeAssistantDiscovery):
            return service
    service = HomeAssistantDiscovery(settings, federation.federation, client=client)
    if client is not None:
        service.will_on(client, bot.name)
    bot.services.append(service)
    return service
