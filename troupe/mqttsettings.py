"""The federation file's `mqtt:` section: the broker the mqtt driver, Home Assistant
discovery and the bus share (one declaration, read by all three and by `troupe check`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from troupe.secrets import Secret

_VERSIONS = {"5": "5", "5.0": "5", "3.1.1": "3.1.1", "311": "3.1.1", "4": "3.1.1"}


def _protocol_version(value: object) -> object:
    text = str(value).strip().lower().removeprefix("mqtt").strip()
    return _VERSIONS.get(text, str(value))


class MqttSettings(BaseModel):
    """The MQTT broker: devices that speak MQTT, discovery, and the bus between bots."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    """The login; `{bot}` stands for the bot's name (one broker user per bot, for the ACL)."""
    password: Secret | None = None
    tls: bool = False
    ca_file: Path | None = None
    """The CA that signed the broker's certificate (default: the system's CAs)."""
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol_version)] = "5"
    """MQTT protocol version: 5, or 3.1.1 for older brokers."""
    bus: bool = False
    bus_key: Secret | None = None
    """The federation's secret that seals bus relays (env:/file:, the same on every bot)."""
    discovery: bool = False
    """Publish each bot's GPIO relays to Home Assistant (MQTT discovery)."""
    discovery_prefix: str = "homeassistant"

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if self.password is not None and not self.username:
            raise ValueError("password needs a username")
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is only used with tls: true")
        if self.bus and self.bus_key is None:
            raise ValueError(
                "bus: true needs bus_key, the secret that seals relays between the bots; "
                "add bus_key: env:TROUPE_BUS_KEY (or file:PATH), the same on every bot"
            )
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
