"""The seed's plugin pattern, unchanged: `if post.ack(): act; post.unack()` (slackmq 0.1.2).

"Act" appends one JSON line per device action to $TROUPE_COUNTER_FILE, in the same shape
as troupe's counter driver, so both systems are counted by the same code. The answer goes
out over RTM (message.send), as the seed's hello plugin did. $LEGACY_FAULTS=die-after-ack
makes the process SIGKILL itself right after winning an ack (the failover trial).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

from slackbot import settings
from slackbot.bot import listen_to
from slackmq import slackmq


@listen_to(r"^turn (on|off) (?:the )?(.+?)\.?$", re.IGNORECASE)
def turn(message, op, device):
    post = slackmq(settings.API_TOKEN, message.body["channel"], message.body["ts"])
    if post.ack():
        if "die-after-ack" in os.environ.get("LEGACY_FAULTS", "").split(","):
            os.kill(os.getpid(), signal.SIGKILL)
        _record(device.lower(), op.lower(), message.body["channel"], message.body["ts"])
        message.send(f"Turned {op} the {device} ({os.environ.get('LEGACY_BOT_NAME', '?')}).")
        post.unack()


def _record(device: str, op: str, channel: str, ts: str) -> None:
    path = os.environ.get("TROUPE_COUNTER_FILE")
    if not path:
        return
    line = {
        "device": device,
        "op": op,
        "args": {},
        "bot": os.environ.get("LEGACY_BOT_NAME", "?"),
        "channel": channel,
        "ts": ts,
        "at": time.time(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)
