"""Being a good systemd citizen: journald's priority prefixes, and READY/WATCHDOG notices.

No dependency: sd_notify is one datagram on $NOTIFY_SOCKET, and journald reads a `<N>`
prefix on each line of a service's output as that line's priority (sd-daemon(3)).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Mapping
from typing import TextIO

log = logging.getLogger(__name__)

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"
"""journald stamps each line itself: no second timestamp, and the level is the prefix."""
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING}
LEVELS |= {"ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


def priority(levelno: int) -> int:
    """syslog's priority for a logging level: 7 debug, 6 info, 4 warning, 3 error, 2 crit."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


class JournalFormatter(logging.Formatter):
    """Each line of a record (a traceback's too) starts with its `<priority>`, so journald
    files the whole record at the record's level."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def under_journald(stream: TextIO, env: Mapping[str, str] = os.environ) -> bool:
    """Whether `stream` is the journal stream systemd connected ($JOURNAL_STREAM names
    its device and inode; a child whose output was redirected inherits the variable, so
    the stream is compared, not only the variable's presence)."""
    wanted = env.get("JOURNAL_STREAM", "")
    if not wanted:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return wanted == f"{info.st_dev}:{info.st_ino}"


def log_level(verbose: bool, env: Mapping[str, str] = os.environ) -> int:
    """-v means DEBUG; else $TROUPE_LOG_LEVEL (a name like WARNING); else INFO."""
    if verbose:
        return logging.DEBUG
    name = env.get("TROUPE_LOG_LEVEL", "").strip().upper()
    if not name:
        return logging.INFO
    if name not in LEVELS:
        raise ValueError(
            f"TROUPE_LOG_LEVEL={name} is not a log level; use one of {', '.join(LEVELS)}"
        )
    return LEVELS[name]


def configure_logging(
    verbose: bool = False, env: Mapping[str, str] = os.environ, stream: TextIO | None = None
) -> logging.Handler:
    """The root logger's one handler on stderr: prefixed lines under journald, plain
    timestamped lines elsewhere. Raises ValueError for a bad $TROUPE_LOG_LEVEL."""
    level = log_level(verbose, env)
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    journal = under_journald(stream, env)
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(PLAIN_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    return handler


def error_line(text: str, stream: TextIO | None = None) -> str:
    """A start error as printed: `<3>` first under journald, so it is filed as an error."""
    return ("<3>" if under_journald(stream or sys.stderr) else "") + text


def notify(message: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send one sd_notify message (`READY=1`, `WATCHDOG=1`, ...); False when systemd did
    not ask for any ($NOTIFY_SOCKET unset) or the socket is gone."""
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as err:
        log.debug("systemd notify %s failed: %s", message, err)
        return False
    return True


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float | None:
    """Half of $WATCHDOG_USEC in seconds when systemd watches this process, else None."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


async def watchdog(interval: float, env: Mapping[str, str] = os.environ) -> None:
    """Ping systemd from the event loop until cancelled: a wedged loop stops the pings
    and systemd restarts the bot (WatchdogSec= in the unit)."""
    while True:
        notify("WATCHDOG=1", env)
        await asyncio.sleep(interval)
