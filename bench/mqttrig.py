"""The MQTT part of a troupe trial: mosquitto on a free 127.0.0.1 port, a simulated Tasmota
plug on it (the bench's MQTT device), and the broker-restart fault.

The bots reach the plug through bench.mqttdriver, which counts each action the plug
confirmed in the trial's counter file; the plug itself records every command it received,
so the trial can also say how many reached the device.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from troupe.hardware.broker import Broker, BrokerError, start_broker
from troupe.hardware.mqtt import TasmotaPlug

PLUG_TOPIC = "bench-porch"
"""The plug's Tasmota topic (cmnd/bench-porch/POWER)."""

RESTART_GAP_S = 1.5
"""How long the broker stays down in a restart: a mosquitto upgrade or a crash and its
systemd restart."""


@dataclass
class MqttRig:
    """mosquitto and the plug for one trial; close() stops both (also mid-restart)."""

    broker: Broker
    plug: TasmotaPlug
    restarts: list[str] = field(default_factory=list)
    """What each restart did (the chaos log notes it too)."""
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _timers: list[threading.Timer] = field(default_factory=list)
    _received_before: int = 0

    @classmethod
    def start(cls) -> MqttRig:
        """mosquitto (required: the bench measures what homes run) and the plug on it."""
        broker = start_broker(embedded=False)
        try:
            plug = TasmotaPlug(PLUG_TOPIC, broker.host, broker.port).start()
        except BaseException:
            broker.stop()
            raise
        return cls(broker, plug)

    @property
    def port(self) -> int:
        return self.broker.port

    def commands_received(self) -> int:
        """Commands that reached the plug since `forget_received` (the driver's empty state
        queries left out)."""
        return self._received() - self._received_before

    def _received(self) -> int:
        return sum(1 for c in self.plug.commands if c.payload.strip())

    def heard(self) -> list[tuple[float, str]]:
        """Each on or off that reached the plug, with when (this machine's clock, which is
        the local workspace's too): an action counted only once the plug confirmed it
        leaves no line when its bot died before the confirmation came."""
        power = {b"ON": "on", b"OFF": "off"}
        return [
            (c.at, power[c.payload.strip().upper()])
            for c in self.plug.commands
            if c.payload.strip().upper() in power
        ]

    def forget_received(self) -> None:
        """Start counting received commands afresh (after the uncounted warm-up)."""
        self._received_before = self._received()

    def crash_and_restart(self, gap_s: float = RESTART_GAP_S) -> str:
        """SIGKILL the broker now (every connection drops, commands in flight with it) and
        start it again on the same port `gap_s` later, in the background."""
        with self._lock:
            if self._closed:
                return "skipped: the trial is over"
            self.broker.kill()
            timer = threading.Timer(gap_s, self._start_again, args=(time.monotonic(),))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        return f"SIGKILL mosquitto on {self.broker.address}, started again after {gap_s:g} s"

    def _start_again(self, killed_at: float) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self.broker.start()
            except BrokerError as err:
                self.restarts.append(f"mosquitto did not start again: {err}")
                return
            self.restarts.append(f"mosquitto back after {time.monotonic() - killed_at:.1f} s")

    def wait_up(self, timeout: float = 30.0) -> bool:
        """Wait for a pending restart to have run; whether the broker runs."""
        for timer in list(self._timers):
            timer.join(timeout)
        return self.broker.running

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for timer in self._timers:
                timer.cancel()
        self.plug.crash()  # the broker is about to go: no clean goodbye needed
        self.broker.stop()
