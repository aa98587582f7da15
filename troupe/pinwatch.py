"""Which of the fleet's pins may be left behind, from the pin events a bot saw.

app-per-bot claims are pins, released by their holder at ts + linger. The sweep that
releases the pins of a holder that died lists every channel's pins (pins.list, Tier 2)
each linger_s; at 16 bots that sweep alone cost a tenth of a call per command. Every pin
and unpin reaches every bot as an event, so a bot knows which fleet pins are still up:
the sweep lists pins only when one of them outlived its release, or when the bot may have
missed events (at start, after a reconnect), and at least every FULL_SWEEP_EVERY rounds
for an event lost without a reconnect. Pure bookkeeping: no I/O, no clock of its own.
"""

from __future__ import annotations

FULL_SWEEP_EVERY = 10
"""Sweep rounds after which the sweep lists pins even though no pin seems left behind."""


class PinWatch:
    """The fleet's lock pins a bot saw go up and not yet come down."""

    def __init__(self) -> None:
        self._up: dict[tuple[str, str], float] = {}
        self._blind = True
        """Whether events may have been missed since the last full sweep."""
        self._rounds = 0

    def added(self, channel: str, ts: str) -> None:
        """A fleet bot pinned a message (not a schedule record: those stay)."""
        self._up[(channel, ts)] = float(ts)

    def removed(self, channel: str, ts: str) -> None:
        """Someone unpinned a message."""
        self._up.pop((channel, ts), None)

    def reconnected(self) -> None:
        """The bot's connection dropped: pins may have come and gone unseen."""
        self._blind = True

    def needs_sweep(self, horizon: float) -> bool:
        """Whether this round's sweep should list pins: a pin of a message older than
        `horizon` is still up, events may have been missed, or it is time for a full one."""
        self._rounds += 1
        if self._blind or self._rounds >= FULL_SWEEP_EVERY:
            return True
        return any(ts <= horizon for ts in self._up.values())

    def swept(self, horizon: float) -> None:
        """Every channel's pins were listed and those older than `horizon` released (or
        kept as records): what this bot knows is complete again."""
        self._blind = False
        self._rounds = 0
        self._up = {key: ts for key, ts in self._up.items() if ts > horizon}
