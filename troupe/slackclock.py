"""Slack's clock as one bot can know it: the local clock plus an offset learned from Slack.

A Pi without a real-time clock boots with a wrong time, so nothing in the protocol reads
the local clock as the truth. Each Web API answer brackets Slack's time: its `Date` header
(to the second) and the `ts` of a message the bot posted were stamped by Slack between the
moment the request left and the moment the answer came back; a message received was
stamped before it arrived. Each such fact bounds the offset (Slack time minus local time);
the newest facts that agree are intersected and the middle of what remains is the offset.
A fact that disagrees with every newer one means the local clock jumped (NTP, a manual
set): older facts are forgotten. Pure: the web client and the bot feed it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from troupe.errors import TroupeError

DATE_RESOLUTION_S = 1.0
"""HTTP dates are whole seconds: Slack's time was somewhere in [date, date + 1)."""


class ClockUnknown(TroupeError):
    """Nothing from Slack has told this bot its time yet."""

    def __init__(self) -> None:
        super().__init__(
            "this bot has not heard Slack's time yet, so it cannot tell how old a command is;"
            " it will once it reaches Slack"
        )


class SlackClock:
    """Slack's time on this bot: `now()`; `offset` is None until Slack has answered once."""

    def __init__(self, local: Callable[[], float] = time.time, keep: int = 64) -> None:
        self.local = local
        """The Pi's own clock (injected so tests can set it wrong)."""
        self._facts: deque[tuple[float, float]] = deque(maxlen=keep)
        self._offset: float | None = None
        self._width = math.inf

    # facts -----------------------------------------------------------------------------

    def saw_stamp(self, slack_ts: float, sent: float, received: float) -> None:
        """Slack stamped `slack_ts` while a request was out (local `sent` to `received`)."""
        self._learn(slack_ts - received, slack_ts - sent)

    def saw_date(self, header: str | None, sent: float, received: float) -> None:
        """An HTTP `Date` header of an answer to a request sent and received locally."""
        if not header:
            return
        try:
            date = parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        self._learn(date - received, date + DATE_RESOLUTION_S - sent)

    def saw_event(self, slack_ts: float, received: float) -> None:
        """A message stamped `slack_ts` arrived at local time `received`: Slack's clock
        read at least `slack_ts` then (a lower bound only: delivery takes time)."""
        self._learn(slack_ts - received, math.inf)

    def _learn(self, low: float, high: float) -> None:
        if not (math.isfinite(low) and high >= low):
            return
        self._facts.append((low, high))
        lo, hi = -math.inf, math.inf
        kept = 0
        for f_lo, f_hi in reversed(self._facts):
            n_lo, n_hi = max(lo, f_lo), min(hi, f_hi)
            if n_lo > n_hi:
                break  # an older fact disagrees with the newer ones: the local clock jumped
            lo, hi = n_lo, n_hi
            kept += 1
        while len(self._facts) > kept:
            self._facts.popleft()
        if math.isfinite(hi):
            self._offset = (lo + hi) / 2
            self._width = hi - lo
        elif self._offset is not None and self._offset < lo:
            self._offset = lo  # only lower bounds since the jump: the tightest one

    # readings --------------------------------------------------------------------------

    @property
    def known(self) -> bool:
        return self._offset is not None

    @property
    def offset(self) -> float | None:
        """Slack's time minus the local clock, in seconds (None until known)."""
        return self._offset

    @property
    def uncertainty(self) -> float:
        """Half the width of the interval the offset is known to lie in."""
        return self._width / 2

    def now(self) -> float:
        """Slack's time now. Raises ClockUnknown before Slack has answered once."""
        if self._offset is None:
            raise ClockUnknown()
        return self.local() + self._offset

    def describe(self) -> str:
        """For roll call: how far this Pi's clock is from Slack's."""
        if self._offset is None:
            return "clock: not yet compared with Slack"
        ahead = -self._offset
        where = "ahead of" if ahead > 0 else "behind"
        return f"clock {abs(ahead):.1f} s {where} Slack's (±{self.uncertainty:.1f} s)"
