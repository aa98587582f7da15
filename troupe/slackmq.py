"""SlackMQ v2: claim, mark done, elect a taker and release one Slack message.

Where each bot is its own Slack user (app-per-bot) a pin is the lock: `pins.add`
succeeding means this bot won; Slack's `already_pinned` means a peer won (a normal False);
every other answer is an error, never "not mine". The pin is released late (at the
message's ts + linger, past the stale limit), so a late bot always meets `already_pinned`
or finds the command stale.

Where the whole fleet is one Slack user the lock is no pin (pins.add is Tier 2: 20 a
minute for the whole fleet). In rtm mode it is that user's 👀 reaction: `reactions.add` is
Tier 3 (50 a minute), and one user adds one emoji to a message once, so a second add meets
`already_reacted` (a peer won); the 👀 is never removed (no release, no pin list to fill),
so a late bot always meets it. In shared-app mode Slack itself hands each event to one
connection: the receiver of the first delivery holds the command at no call, and anyone
else (a redelivery) waits out a lease before the ballot.

Only the fleet's marks count: a pin, ✅ or 🔄 from anyone else (a person, another app)
is not a claim, a done mark or a ballot. An `already_pinned` that follows a retry (the
first attempt may have been carried out, its answer lost) is checked against who pinned
before this bot concludes that a peer holds the command.

Also the seed's API, `slackmq(token, channel, ts).ack() / .unack()`, made safe: no blocking
sleep, no early unpin, and inside a command troupe already holds, ack() is simply True.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple, Protocol

from slack_sdk.errors import SlackApiError

from troupe.errors import ClaimError
from troupe.slackapi import ClockedWebClient, doubtful, sent_at, sync_client

log = logging.getLogger(__name__)

DONE = "white_check_mark"
"""The done mark: the reaction a bot adds once every action of a command is carried out."""

TAKEOVER = "arrows_counterclockwise"
"""The takeover ballot: the first bot to react with it finishes a dead holder's command."""

CLAIM = "eyes"
"""The claim where the whole fleet is one Slack user (shared-app, rtm): 👀, "on it"."""

REDELIVERY_S = 3.0
"""Slack hands an unacknowledged Socket Mode event to another connection 3 s after it
sent it (never sooner): until then a shared-app receiver is the only bot with it."""

WORKING = "hourglass_flowing_sand"
"""The holder's lease renewal: added, then removed, then added again while it still acts,
each change an event that restarts the peers' lease count."""

DEFAULT_STALE_S = 30.0
DEFAULT_LINGER_S = 45.0


def message_age(ts: str, now: float | None = None) -> float:
    """Seconds since Slack stamped the message (its ts is the Unix time it was posted)."""
    return (time.time() if now is None else now) - float(ts)


class Lock(Protocol):
    """What the federation needs from Slack to coordinate one message (an I/O port).

    The Slack implementation is SlackMQ below; tests and the model checker use an
    in-memory one, so the federation logic runs without sockets.
    """

    async def claim(self, channel: str, ts: str) -> bool:
        """Take the message (a pin, or the shared user's 👀): True if this bot now holds
        it, False if a peer does."""

    async def mark_done(self, channel: str, ts: str) -> None:
        """Add the done mark."""

    async def is_done(self, channel: str, ts: str) -> bool:
        """Whether any bot has put the done mark on the message."""

    async def taken_up(self, channel: str, ts: str) -> bool:
        """Whether a peer finished the message or voted to take it over (its done mark or
        a takeover ballot): a holder that waited long checks before it acts, and a bot
        back from a stop before it reports what the stop cut short."""

    async def elect(self, channel: str, ts: str) -> bool | None:
        """Cast the takeover ballot: True if this bot is the first and no done mark exists,
        False if not, None when Slack's answers cannot tell (one user for the fleet, and
        this bot's own vote may be the one there): the holder's signs decide then."""

    async def marks(self, channel: str, ts: str) -> frozenset[str]:
        """The fleet's marks on the message now, read from Slack (one call): how a peer
        that may not hear the holder's events sees its ⏳ (shared-app)."""

    async def release(self, channel: str, ts: str) -> None:
        """Unpin (no error if already unpinned; nothing to do for a 👀 claim)."""

    def won_by_ballot(self, channel: str, ts: str) -> bool:
        """Whether this bot's claim was won by the 🔄 ballot (someone outside the fleet had
        pinned the message): its peers' 🔄 are then the votes it won, not a takeover."""

    async def renew(self, channel: str, ts: str) -> None:
        """Show the peers that the holder is still acting (a visible change they see)."""

    def claim_sent(self, channel: str, ts: str) -> float | None:
        """When (time.monotonic) the attempt of a claim this bot won was sent, if known.
        Slack carries out no call it answers 429, so a claim held up by rate limits counts
        from its last attempt, not from the first: its peers count the lease from the
        mark they saw, and that mark is as old as the attempt that made it."""


class _Answer(NamedTuple):
    code: str
    """"ok" or an expected error code."""
    unsure: bool
    """A retry may hide an earlier success."""
    sent: float | None
    """When (time.monotonic) the attempt Slack may have carried out was sent."""


class SlackMQ:
    """The Lock on Slack's Web API (pins and reactions), for one bot user.

    `trusted(user_id)` says whether a user is one of the fleet's bot users; `shared_user`
    is True where every bot of the fleet posts as the same user (shared-app, rtm), so a
    pin or reaction by that user cannot tell this bot from a peer: there the claim is
    the 👀 reaction (rtm) or, where Slack hands each event to one connection
    (`sole_receiver`, shared-app), Slack's first delivery itself (see `delivered`).
    """

    def __init__(
        self,
        client: ClockedWebClient,
        user_id: str,
        *,
        trusted: Callable[[str | None], bool],
        shared_user: bool = False,
        sole_receiver: bool = False,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.user_id = user_id
        self.trusted = trusted
        self.started = now() if now is not None else 0.0
        """Slack's time when this process began: an own pin older than that is a pin the
        bot made before a restart, not the lost answer of a claim it just sent."""
        self.shared_user = shared_user
        self.sole_receiver = sole_receiver
        """shared-app: Slack hands each event to one connection, so the receiver of a
        first delivery holds the command by Slack's own hand-out, at no call."""
        self._not_ours: set[tuple[str, str]] = set()
        """Messages pinned by someone outside the fleet: never unpinned by this bot."""
        self._by_ballot: set[tuple[str, str]] = set()
        """Claims this bot won by the 🔄 ballot, where a person's pin was in the way."""
        self._voted: set[tuple[str, str]] = set()
        """Messages this bot cast the 🔄 ballot on (one user for the fleet: a later
        `already_reacted` may be its own vote); `elect` drops those two minutes older
        than the message it votes on, and `release` its own."""
        self._renewals: dict[tuple[str, str], bool] = {}
        self._now = now
        self._sent: dict[tuple[str, str], float | None] = {}
        """Claims just won: when the attempt Slack carried out was sent (claim_sent reads
        each once)."""
        self._delivered: dict[tuple[str, str], tuple[float, bool]] = {}
        """shared-app: people's messages Slack handed this bot: (ts, first delivery)."""

    def delivered(self, channel: str, ts: str, retry_attempt: int) -> None:
        """shared-app: Slack handed this bot a person's message, first (retry_attempt 0)
        or again (a redelivery: its first receiver may live and hold it unseen)."""
        horizon = float(ts) - 120.0
        for key in [k for k, (at, _) in self._delivered.items() if at < horizon]:
            del self._delivered[key]
        first = retry_attempt == 0 and self._delivered.get((channel, ts), (0, True))[1]
        self._delivered[(channel, ts)] = (float(ts), first)

    def _alone(self, channel: str, ts: str) -> bool:
        """Whether this bot got the message's first delivery and Slack cannot have handed
        it to another connection yet (REDELIVERY_S after the post, by Slack's clock, less
        half a second for the clock's uncertainty)."""
        if not self._delivered.get((channel, ts), (0, False))[1] or self._now is None:
            return False
        return self._now() < float(ts) + REDELIVERY_S - 0.5

    async def _call(
        self, method: str, ok_codes: frozenset[str] = frozenset(), **kw: Any
    ) -> _Answer:
        """Call a method; return "ok" or an expected error code, with whether the answer
        is doubtful and when its attempt was sent; raise ClaimError for any other error."""
        try:
            resp = await getattr(self.client, method.replace(".", "_"))(**kw)
        except SlackApiError as err:
            code = str(err.response.get("error", "unknown_error"))
            if code in ok_codes:
                return _Answer(code, doubtful(err.response), sent_at(err.response))
            raise ClaimError(method, code) from err
        except (TimeoutError, OSError) as err:  # no answer, after the client's own retries
            raise ClaimError(method, "timeout") from err
        return _Answer("ok", doubtful(resp), sent_at(resp))

    async def _read(self, method: str, **kw: Any) -> Any:
        """A read's answer (pins.list, reactions.get); ClaimError for any error, or for no
        answer after the client's own retries."""
        try:
            return await getattr(self.client, method.replace(".", "_"))(**kw)
        except SlackApiError as err:
            raise ClaimError(method, str(err.response.get("error", "unknown_error"))) from err
        except (TimeoutError, OSError) as err:
            raise ClaimError(method, "timeout") from err

    async def claim(self, channel: str, ts: str) -> bool:
        if self.sole_receiver and (channel, ts) in self._delivered:
            # The first receiver holds it while no other bot can have it; a redelivery
            # cannot see whether that receiver lives: it waits out a lease, then the
            # ballot decides (docs/protocol.md, step 9). Anything else claims with 👀.
            if self._alone(channel, ts):
                return True
            if not self._delivered[(channel, ts)][1]:
                return False
        if self.shared_user:
            return await self._react_claim(channel, ts)
        code, unsure, sent = await self._call(
            "pins.add", frozenset({"already_pinned"}), channel=channel, timestamp=ts
        )
        if code == "ok":
            self._sent[(channel, ts)] = sent
            return True
        pinner, pinned_at = await self._pinned_by(channel, ts)
        if pinner is not None and not self.trusted(pinner):
            # Someone outside the fleet pinned it: their pin is no claim. The ballot
            # (first fleet reaction) decides instead, and their pin is left alone.
            self._not_ours.add((channel, ts))
            won = await self.elect(channel, ts)
            if won:
                self._by_ballot.add((channel, ts))
            return won
        mine_now = pinner == self.user_id and pinned_at >= int(self.started)
        if unsure and mine_now:
            log.info("pins.add on %s/%s was carried out before its answer was lost", channel, ts)
            return True
        return False

    async def _react_claim(self, channel: str, ts: str) -> bool:
        """The shared user's 👀: `ok` holds it; `already_reacted` is a peer's. After a
        lost answer the 👀 may be this bot's own, but one user for the whole fleet cannot
        say whose: it is taken for a peer's (the lease, then the ballot, decide)."""
        code, _, sent = await self._call(
            "reactions.add",
            frozenset({"already_reacted"}),
            channel=channel,
            timestamp=ts,
            name=CLAIM,
        )
        if code == "ok":
            self._sent[(channel, ts)] = sent
        return code == "ok"

    def claim_sent(self, channel: str, ts: str) -> float | None:
        return self._sent.pop((channel, ts), None)  # read once, right after the claim

    async def _pinned_by(self, channel: str, ts: str) -> tuple[str | None, float]:
        """Who pinned the message and when, by Slack's clock ((None, 0) if it is not pinned
        any more)."""
        resp = await self._read("pins.list", channel=channel)
        for item in resp.get("items", []):
            if (item.get("message") or {}).get("ts") == ts:
                return str(item.get("created_by") or ""), float(item.get("created") or 0)
        return None, 0.0

    async def mark_done(self, channel: str, ts: str) -> None:
        await self._call(
            "reactions.add",
            frozenset({"already_reacted"}),
            channel=channel,
            timestamp=ts,
            name=DONE,
        )

    async def renew(self, channel: str, ts: str) -> None:
        """Show peers the holder is still at work: each call adds or removes ⏳."""
        key = (channel, ts)
        shown = self._renewals.get(key, False)
        flips = (
            ("reactions.remove", "reactions.add")
            if shown
            else ("reactions.add", "reactions.remove")
        )
        for method in flips:
            code, _, _ = await self._call(
                method,
                frozenset({"already_reacted", "no_reaction"}),
                channel=channel,
                timestamp=ts,
                name=WORKING,
            )
            shown = not shown
            if code == "ok":
                break
            # The ⏳ was already so (this bot restarted and forgot it, or a lost answer
            # of the last renewal): flip it back, or the peers see no change at all.
        self._renewals[key] = shown

    async def _reactions(self, channel: str, ts: str) -> dict[str, list[str]]:
        """The fleet's reactions on a message, by name, users in Slack's order."""
        resp = await self._read("reactions.get", channel=channel, timestamp=ts, full=True)
        message = resp.get("message") or {}
        marks: dict[str, list[str]] = {}
        for reaction in message.get("reactions", []):
            users = [u for u in reaction.get("users", []) if self.trusted(u)]
            if users:
                marks[reaction["name"]] = users
        return marks

    async def marks(self, channel: str, ts: str) -> frozenset[str]:
        return frozenset(await self._reactions(channel, ts))

    async def is_done(self, channel: str, ts: str) -> bool:
        return DONE in await self.marks(channel, ts)

    async def taken_up(self, channel: str, ts: str) -> bool:
        reactions = await self._reactions(channel, ts)
        # Where each bot has its own user, this bot's own ballot (a past life's, a
        # takeover it began) is not a peer's; under one shared user nobody can tell.
        ballots = [u for u in reactions.get(TAKEOVER, []) if self.shared_user or u != self.user_id]
        return DONE in reactions or bool(ballots)

    async def elect(self, channel: str, ts: str) -> bool | None:
        key = (channel, ts)
        earlier = key in self._voted
        horizon = float(ts) - 120.0  # no ballot is cast on a message this much older
        self._voted = {k for k in self._voted if float(k[1]) >= horizon}
        self._voted.add(key)
        code, unsure, _ = await self._call(
            "reactions.add",
            frozenset({"already_reacted"}),
            channel=channel,
            timestamp=ts,
            name=TAKEOVER,
        )
        reactions = await self._reactions(channel, ts)
        if DONE in reactions:
            return False
        ballots = reactions.get(TAKEOVER, [])
        if not ballots or ballots[0] != self.user_id:
            return False
        if not self.shared_user:
            return True  # Slack keeps reaction order: the first fleet ballot is this bot's
        # One user for the whole fleet: `ok` is this bot's vote, the first. `already_reacted`
        # is a peer's, unless a lost answer (a doubtful retry, or an earlier ballot of
        # this bot's) hides this bot's own: then nobody can tell from Slack.
        if code == "ok":
            return True
        return None if unsure or earlier else False

    def won_by_ballot(self, channel: str, ts: str) -> bool:
        return (channel, ts) in self._by_ballot

    async def release(self, channel: str, ts: str) -> None:
        self._renewals.pop((channel, ts), None)
        self._sent.pop((channel, ts), None)
        self._by_ballot.discard((channel, ts))
        self._voted.discard((channel, ts))
        if self.shared_user:
            return  # the 👀 stays: it keeps late bots out and fills no pin list
        if (channel, ts) in self._not_ours:
            self._not_ours.discard((channel, ts))
            return
        await self._call(
            "pins.remove",
            frozenset({"no_pin", "message_not_found"}),
            channel=channel,
            timestamp=ts,
        )


# --- the seed's API ----------------------------------------------------------------

_held: ContextVar[frozenset[tuple[str, str]]] = ContextVar("troupe_held", default=frozenset())


@contextmanager
def holding(channel: str, ts: str) -> Iterator[None]:
    """Mark (channel, ts) as held by troupe while a plugin runs, so its ack() is True."""
    token = _held.set(_held.get() | {(channel, ts)})
    try:
        yield
    finally:
        _held.reset(token)


def _default_base_url() -> str | None:
    return os.environ.get("TROUPE_SLACK_BASE_URL") or None


class slackmq:
    """The seed's `slackmq(token, channel, ts)` with ack()/unack(), made safe.

    - Inside a command troupe holds, ack() is True at once and unack() does nothing:
      troupe claimed the message and will release it.
    - Standalone: ack() pins (True), meets already_pinned (False), refuses a stale message
      (False); any other error raises ClaimError instead of reading as "not mine".
      unack() puts the done mark and releases the pin at ts + linger in the background,
      so a late duplicate still meets the pin — and nothing sleeps.
    """

    base_url: str | None = None
    stale_s: float = DEFAULT_STALE_S
    linger_s: float = DEFAULT_LINGER_S

    def __init__(self, api_token: str, channel: str, timestamp: str) -> None:
        self.api_token = api_token
        self.channel = channel
        self.timestamp = timestamp

    def _inside_troupe(self) -> bool:
        return (self.channel, self.timestamp) in _held.get()

    def _client(self) -> Any:
        return sync_client(self.api_token, self.base_url or _default_base_url())

    def ack(self, emoji: str | None = None, stars: bool | None = None) -> bool:
        if self._inside_troupe():
            return True
        if message_age(self.timestamp) > self.stale_s:
            log.info(
                "not acking %s/%s: older than %.0f s", self.channel, self.timestamp, self.stale_s
            )
            return False
        client = self._client()
        try:
            client.pins_add(channel=self.channel, timestamp=self.timestamp)
        except SlackApiError as err:
            code = str(err.response.get("error"))
            if code == "already_pinned":
                return False
            raise ClaimError("pins.add", code) from err
        if emoji:
            client.reactions_add(channel=self.channel, timestamp=self.timestamp, name=emoji)
        if stars:
            log.warning("slackmq: stars are gone from Slack's API; ignoring stars=%r", stars)
        return True

    def unack(self, emoji: str | None = None, stars: bool | None = None) -> bool:
        if self._inside_troupe():
            return True
        client = self._client()
        try:
            client.reactions_add(channel=self.channel, timestamp=self.timestamp, name=DONE)
        except SlackApiError as err:
            if err.response.get("error") != "already_reacted":
                raise ClaimError("reactions.add", str(err.response.get("error"))) from err
        delay = max(0.0, float(self.timestamp) + self.linger_s - time.time())
        timer = threading.Timer(delay, self._release, args=(client, emoji))
        timer.daemon = True
        timer.start()
        return True

    def _release(self, client: Any, emoji: str | None) -> None:
        try:
            client.pins_remove(channel=self.channel, timestamp=self.timestamp)
            if emoji:
                client.reactions_remove(channel=self.channel, timestamp=self.timestamp, name=emoji)
        except SlackApiError as err:
            log.warning(
                "slackmq: could not release %s/%s: %s",
                self.channel,
                self.timestamp,
                err.response.get("error"),
            )
