"""Test support for MQTT: a real broker per test, simulated devices, a watching client.

Use in a test module with `pytest_plugins = ("mqttkit",)`. The broker is mosquitto; when
it is missing the tests skip on a laptop and FAIL on CI (CI=true), so a CI image that lost
mosquitto cannot pass silently. PYTEST_DONT_REWRITE: test modules import this module
before pytest loads it as a plugin (it raises its own AssertionErrors).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from troupe.hardware.broker import Broker, TlsFiles, find_mosquitto, start_broker
from troupe.plugins.mqtt import MqttDriver


def require_mosquitto() -> None:
    """Skip (fail on CI) unless mosquitto is installed: the MQTT tests and the bench's
    troupe trials (which run one) need it."""
    if find_mosquitto() is None:
        message = "mosquitto is not installed (apt-get install mosquitto)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; .ci/run must install it", pytrace=False)
        pytest.skip(message)


def mosquitto_broker(**kwargs: object) -> Broker:
    """A mosquitto broker, or skip (fail on CI) if mosquitto is not installed."""
    require_mosquitto()
    return start_broker(embedded=False, **kwargs)  # type: ignore[arg-type]


def require_amqtt() -> None:
    """Skip (fail on CI) unless amqtt, the fallback broker of `make demo`, is installed."""
    try:
        import amqtt  # noqa: F401
    except ImportError:
        message = "amqtt is not installed (pip install -e '.[demo]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; make test installs the demo extra", pytrace=False)
        pytest.skip(message)


@pytest.fixture
def broker() -> Iterator[Broker]:
    """mosquitto on 127.0.0.1 and a free port, anonymous access, stopped after the test."""
    running = mosquitto_broker()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost (openssl)."""
    return make_tls_files(tmp_path)


def make_tls_files(directory: Path) -> TlsFiles:
    """Make a CA and a server certificate with the openssl command; returns the server's
    certfile/keyfile and the CA as `cafile` (for the clients to trust, not to require
    client certificates: pass TlsFiles(certfile, keyfile) to the broker)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=troupe test CA", "-keyout", str(ca_key), "-out", str(ca_crt))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt))  # fmt: skip
    return TlsFiles(certfile=crt, keyfile=key, cafile=ca_crt)


@dataclass(frozen=True)
class Seen:
    """One message the watcher received."""

    topic: str
    payload: bytes
    retain: bool

    @property
    def text(self) -> str:
        return self.payload.decode(errors="replace")


class Watcher:
    """A plain paho client that records what it sees and publishes what a test needs
    (malformed device payloads, a forged LWT)."""

    def __init__(self, broker: Broker, *topics: str) -> None:
        self.seen: list[Seen] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._topics = topics or ("#",)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise AssertionError(f"the watcher could not subscribe on {broker.address}")

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.seen.append(Seen(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def on(self, topic: str) -> list[Seen]:
        with self._cond:
            return [s for s in self.seen if s.topic == topic]

    def wait_for(self, predicate: Callable[[list[Seen]], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self.seen)):
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = sorted({s.topic for s in self.seen})
                    raise AssertionError(f"the watcher did not see it; topics seen: {topics}")
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watcher(broker: Broker) -> Iterator[Watcher]:
    """A client subscribed to everything on the test's broker."""
    w = Watcher(broker)
    try:
        yield w
    finally:
        w.close()


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "it") -> None:
    """Wait (bounded) until a condition that paho's thread makes true holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def mqtt_driver(
    broker: Broker,
    devices: Mapping[str, Mapping[str, Any]],
    *,
    bot: str = "kitchen-pi",
    ready: bool = True,
    **settings: Any,
) -> AsyncIterator[MqttDriver]:
    """The mqtt driver of one bot, started on the broker with these devices; with
    `ready`, wait until every device has reported a state."""
    driver = MqttDriver(bot, {"host": broker.host, "port": broker.port, **settings})
    await driver.start(devices)
    try:
        if ready:
            await until(
                lambda: all(d.on is not None for d in driver.devices.values()),
                what="every device to report its state",
            )
        yield driver
    finally:
        await driver.stop()


@contextlib.contextmanager
def powered(*devices: Any) -> Iterator[Any]:
    """Start simulated devices; stop them (cleanly, if still connected) afterwards."""
    started = []
    try:
        for device in devices:
            started.append(device.start())
        yield started[0] if len(started) == 1 else started
    finally:
        for device in started:
            device.stop()
