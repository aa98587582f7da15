"""How events arrive: Socket Mode (slack_sdk) or RTM (slackbot), one Event type out of each."""

from troupe.transports.base import Ack, Event, EventHandler, Transport

__all__ = ["Ack", "Event", "EventHandler", "Transport"]
