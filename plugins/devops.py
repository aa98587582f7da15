"""Fleet commands for admins (version, bot count, target, canary, update, restart, logs) and
the rolling update they start, coordinated in the update command's Slack thread.

A rollout lives in Slack, not in any bot's memory, because every bot restarts during it.
Each step is a *baton* message in the thread; bots that still run the old version claim
it with SlackMQ (a pin: exactly one wins), post that they are updating, and ask the
privileged updater (troupe.update) to install and restart them. The restarted bot checks
its health, reports, and posts the next baton. The canary's report is gated: the rest
follow after an admin's approval reaction on it, or after the soak time. A bot that was
offline reads the thread when it starts and takes the open baton.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slack_sdk.errors import SlackApiError

from troupe import __version__
from troupe.federation import rank
from troupe.plugin import Context, PluginError, command
from troupe.roster import FleetUsers
from troupe.services import service
from troupe.slackmq import SlackMQ
from troupe.tasks import spawn
from troupe.update import (
    RESULT_FILE,
    UpdateError,
    UpdateSettings,
    check_version,
    read_json,
    request,
    wheel_version,
    write_health,
)

log = logging.getLogger(__name__)

V = r"[A-Za-z0-9](?:[A-Za-z0-9._+-]*[A-Za-z0-9])?"
NAME = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
EMOJI = r":[a-z0-9_+'-]+:"
# What the fleet's bots post in a rollout thread, whole messages only (fullmatch): a
# bot's answer that merely quotes one (an unknown device named "Rollout stopped") is no
# step of the rollout.
START = re.compile(
    rf"Rolling update to troupe (?P<v>{V}), step (?P<k>1): the canary (?P<canary>{NAME}) "
    rf"takes this\. One bot at a time; the others follow after an admin's {EMOJI} "
    r"on the canary's report, or \S+ s after it\."
)
UPDATING = re.compile(
    rf"(?P<bot>{NAME}) is updating from troupe {V} to (?P<v>{V}) \(step (?P<k>\d+)\)\."
)
REPORT = re.compile(
    rf"(?P<bot>{NAME}) is on troupe (?P<v>{V}) and healthy \(connected, \d+ plugins, "
    r"\d+ devices answering\)\.(?:"
    r" (?P<done>Rolling update to troupe (?P=v) done: all \d+ bots are on it\.)"
    r"| Rolling update to troupe (?P=v), step (?P<k>\d+): the next bot takes this"
    rf"(?P<gate>, after an admin's {EMOJI} on this message or in \S+ s)?\.)?"
)
STOPPED = re.compile(
    rf"(?P<bot>{NAME}) could not (?:ask the updater for troupe (?P<v>{V}): .+"
    rf"|update to troupe (?P<v2>{V}): .*; rolled back to troupe {V})\. Rollout stopped\.",
    re.DOTALL,
)
HALTS = r"(?:stop|halt)(?: the)?(?: rollout| update)?|rollout stopped"
HALT = re.compile(HALTS, re.IGNORECASE)
"""What an admin writes in the thread to stop a rollout."""
UPDATE_COMMAND = re.compile(
    rf"(?P<verb>update|downgrade)(?: (?:to )?(?P<version>{V}))?", re.IGNORECASE
)
RESUME_WINDOW_S = 24 * 3600


# --- recent log lines, redacted --------------------------------------------------------------


class _Ring(logging.Handler):
    """The last lines this process logged, for `logs BOT`; secrets blanked on the way in."""

    def __init__(self, size: int = 500) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        try:
            from troupe.redact import Redactor
        except ImportError:  # the redaction module ships with troupe; an old build may lack it
            self.redactor = None
        else:
            self.redactor = Redactor()
            self.addFilter(self.redactor)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


RING = _Ring()


def _keep_logs() -> None:
    """Attach the ring to the root logger (after logging is configured: basicConfig does
    nothing once the root has a handler)."""
    root = logging.getLogger()
    if RING not in root.handlers:
        root.addHandler(RING)


if logging.getLogger().handlers:  # `troupe run` configures logging before loading plugins
    _keep_logs()


# --- what a rollout thread says ---------------------------------------------------------------


@dataclass(frozen=True)
class Baton:
    ts: str
    version: str
    step: int
    canary: str | None
    gated: bool
    approvers: frozenset[str]


@dataclass
class Rollout:
    """A rollout as its thread tells it: the admin's root message names the version; only
    the fleet's own bot users move it on, and only an admin or a fleet bot stops it."""

    channel: str
    root: str
    version: str | None = None
    trusted: bool = False
    """The root is an admin's `update` command: a rollout at all."""
    batons: list[Baton] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)
    updating: dict[str, str] = field(default_factory=dict)
    """Bot -> ts of its 'is updating' message."""
    stopped: bool = False
    done: bool = False
    downgrade: bool = False
    """The admin's root message said `downgrade`: the updater may install an older version."""
    strangers: set[str] = field(default_factory=set)
    """Bot users not (yet) known as the fleet's whose messages read like a step."""

    @property
    def latest(self) -> Baton | None:
        return self.batons[-1] if self.batons else None

    def taken(self, baton: Baton) -> bool:
        return any(float(ts) > float(baton.ts) for ts in self.updating.values())

    @property
    def active(self) -> bool:
        return bool(self.batons) and not (self.stopped or self.done)


def _plain(text: str) -> str:
    """A message's text without a leading @mention and trailing punctuation."""
    return re.sub(r"^\s*<@\w+>:?\s*", "", text).strip().rstrip("!?.").strip()


def read_thread(
    channel: str,
    root: str,
    messages: list[dict[str, Any]],
    approval: str,
    *,
    fleet: frozenset[str],
    admin: Callable[[str | None], bool],
    default_version: str | None = None,
) -> Rollout:
    """Parse a rollout thread (pure, so it is tested without Slack).

    `fleet` holds the Slack user ids of the roster's bots, `admin` tells an admin's user
    id, `default_version` is the version a bare `update` means (the configured wheel's).
    A message counts only as a whole template, posted by a fleet bot user; webhooks and
    other apps (no user, or a user outside `fleet`) and people never move a rollout on.
    """
    rollout = Rollout(channel, root)
    first = next((m for m in messages if m.get("ts") == root), None)
    if first is None or first.get("bot_id") or first.get("subtype") or not admin(first.get("user")):
        return rollout
    command = UPDATE_COMMAND.fullmatch(_plain(first.get("text") or ""))
    if command is None:
        return rollout
    rollout.trusted = True
    rollout.version = command["version"] or default_version
    rollout.downgrade = command["verb"].lower() == "downgrade"
    if rollout.version is None:
        return rollout
    for message in sorted(messages, key=lambda m: float(m["ts"])):
        if message.get("ts") == root:
            continue
        text = (message.get("text") or "").strip()
        user = message.get("user")
        if not (message.get("bot_id") or message.get("subtype") == "bot_message"):
            if admin(user) and HALT.fullmatch(_plain(text)):
                rollout.stopped = True
            continue
        if user not in fleet or message.get("subtype") not in (None, "thread_broadcast"):
            if user and any(t.fullmatch(text) for t in (START, UPDATING, REPORT, STOPPED)):
                rollout.strangers.add(user)
            continue
        _read_bot_message(rollout, message, text, approval)
    return rollout


def _read_bot_message(rollout: Rollout, message: dict[str, Any], text: str, approval: str) -> None:
    """One fleet bot's message: a step of the rollout if it is one of the templates."""
    baton: re.Match[str] | None = None
    if found := START.fullmatch(text):
        baton = found if found["v"] == rollout.version else None
    elif found := UPDATING.fullmatch(text):
        if found["v"] == rollout.version:
            rollout.updating[found["bot"]] = message["ts"]
    elif found := REPORT.fullmatch(text):
        if found["v"] != rollout.version:
            return
        rollout.reported.add(found["bot"])
        rollout.done = rollout.done or bool(found["done"])
        baton = found if found["k"] else None
    elif found := STOPPED.fullmatch(text):
        rollout.stopped = rollout.stopped or (found["v"] or found["v2"]) == rollout.version
    if baton is None:
        return
    approvers = frozenset(
        user
        for reaction in message.get("reactions") or []
        if reaction.get("name") == approval
        for user in reaction.get("users") or []
    )
    canary = baton.groupdict().get("canary")
    rollout.batons.append(
        Baton(
            message["ts"],
            baton["v"],
            int(baton["k"]),
            canary,
            bool(baton.groupdict().get("gate")),
            approvers,
        )
    )


# --- the service: health at start, and the rollout loop ------------------------------------


@service(section="update")
class FleetService:
    """Runs beside the bot: writes its health once ready, resumes a rollout under way."""

    def __init__(self, settings: UpdateSettings | None = None) -> None:
        self.settings = settings or UpdateSettings()
        self.bot: Any = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.following: set[tuple[str, str]] = set()
        self._ignored: set[str] = set()
        """Bot users outside the fleet whose rollout-like messages were logged once."""

    @property
    def state_dir(self) -> Path:
        env = os.environ.get("TROUPE_STATE_DIR")
        return Path(env) if env else Path(self.bot.journal.path).expanduser().parent

    # targeting, kept over restarts
    def _fleet_state(self) -> dict[str, Any]:
        return read_json(self.state_dir / "fleet.json") or {}

    def remember(self, **changes: Any) -> None:
        state = self._fleet_state() | changes
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / f".fleet.json.{os.getpid()}"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_dir / "fleet.json")

    def targeted(self) -> bool:
        target = self._fleet_state().get("target", "all")
        return target == "all" or self.bot.name in target

    def canary(self) -> str:
        chosen = self._fleet_state().get("canary") or self.settings.canary
        return chosen if chosen in self.bot.roster else self.bot.roster[0]

    @property
    def fleet(self) -> FleetUsers:
        """The bot's own view of the fleet's users (one look-up budget for the bot)."""
        return self.bot.fleet

    async def start(self, bot: Any) -> None:
        self.bot = bot
        _keep_logs()
        if RING.redactor is not None:
            RING.redactor.add(getattr(bot.web, "token", None))
        self.spawn(self._after_ready())

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def spawn(self, coro: Any) -> None:
        spawn(coro, "fleet", self.tasks, logger=log)

    async def health(self) -> dict[str, Any]:
        bot = self.bot
        devices = {}
        for name, device in bot.devices.items():
            if device.owner in (None, bot.name):
                devices[name] = (await bot.device_state(name)).online
        return {
            "bot": bot.name,
            "version": __version__,
            "pid": os.getpid(),
            "connected": bool(getattr(bot.transport, "connected", True)),
            "plugins": len(bot.plugins.modules),
            "devices": devices,
            "at": time.time(),
        }

    async def _after_ready(self) -> None:
        await asyncio.wait_for(self.bot.ready.wait(), self.settings.health_timeout_s)
        record = await self.health()
        if record["connected"] and all(record["devices"].values()):
            write_health(self.state_dir, record)
        else:
            log.error("fleet: not healthy: %s", record)
        found = await self._find_rollout()
        if found is not None:
            log.info("fleet: a rollout is under way in %s/%s; following it", *found)
            self.follow(*found)

    async def _find_rollout(self) -> tuple[str, str] | None:
        """The latest update command by an admin in the last day whose thread is open."""
        oldest = str(time.time() - RESUME_WINDOW_S)
        for channel in self.bot.channel_areas:
            try:
                resp = await self.bot.web.conversations_history(
                    channel=channel, oldest=oldest, limit=200
                )
            except SlackApiError as err:
                log.warning("fleet: cannot read %s: %s", channel, err.response.get("error"))
                continue
            for message in resp.get("messages", []):
                text = re.sub(r"^\s*<@\w+>:?\s*", "", message.get("text") or "").strip()
                if not is_admin(self.bot, message.get("user")) or not message.get("reply_count"):
                    continue
                if not UPDATE_COMMAND.fullmatch(text.rstrip("!?.").strip()):
                    continue
                rollout = await self.read(channel, message["ts"])
                if rollout is not None and rollout.active:
                    return channel, message["ts"]
                return None
        return None

    async def read(self, channel: str, root: str) -> Rollout | None:
        messages: list[dict[str, Any]] = []
        cursor = None
        while True:
            try:
                resp = await self.bot.web.conversations_replies(
                    channel=channel, ts=root, limit=200, cursor=cursor
                )
            except SlackApiError as err:
                log.warning("fleet: cannot read the rollout: %s", err.response.get("error"))
                return None
            messages += resp.get("messages", [])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        rollout = self._read(channel, root, messages)
        if not rollout.strangers:
            return rollout
        unknown = rollout.strangers - await self.fleet.recheck(rollout.strangers)
        if unknown - self._ignored:
            log.warning(
                "fleet: ignoring rollout messages from %s, no bot user of this fleet",
                ", ".join(sorted(unknown - self._ignored)),
            )
            self._ignored |= unknown
        if unknown != rollout.strangers:
            rollout = self._read(channel, root, messages)  # a bot that joined the fleet late
        return rollout

    def _read(self, channel: str, root: str, messages: list[dict[str, Any]]) -> Rollout:
        return read_thread(
            channel,
            root,
            messages,
            self.settings.approval,
            fleet=self.fleet.ids,
            admin=lambda user: is_admin(self.bot, user),
            default_version=wheel_version(self.settings.source),
        )

    def follow(self, channel: str, root: str) -> None:
        if (channel, root) not in self.following:
            self.following.add((channel, root))
            self.spawn(self._follow(channel, root))

    async def _post(self, channel: str, root: str, text: str) -> str | None:
        try:
            resp = await self.bot.web.chat_postMessage(channel=channel, text=text, thread_ts=root)
        except SlackApiError as err:
            log.error("fleet: could not post: %s", err.response.get("error"))
            return None
        return resp.get("ts")

    async def _follow(self, channel: str, root: str) -> None:
        """Take part in one rollout until it is done, stopped, or this bot is through."""
        me = self.bot.name
        lock: SlackMQ = self.bot.slackmq  # only the fleet's pins count
        while True:
            rollout = await self.read(channel, root)
            if rollout is not None and not (rollout.trusted and rollout.version):
                log.warning(
                    "fleet: %s/%s is no admin's update command; not following", channel, root
                )
                return
            if rollout is not None and (rollout.stopped or rollout.done):
                return
            if rollout is None or rollout.version is None or me in rollout.reported:
                await asyncio.sleep(self.settings.poll_s)
                continue
            if me in rollout.updating:
                if await self._after_update(rollout):
                    return
            elif (
                (baton := rollout.latest) is not None
                and not rollout.taken(baton)
                and self._may_take(baton, rollout)
                and await self._take(lock, rollout, baton)
            ):
                return
            await asyncio.sleep(self.settings.poll_s)

    def _may_take(self, baton: Baton, rollout: Rollout) -> bool:
        if baton.canary is not None:
            return baton.canary == self.bot.name
        if baton.gated:
            approved = any(is_admin(self.bot, user) for user in baton.approvers)
            return approved or time.time() >= float(baton.ts) + self.settings.soak_s
        return True

    async def _take(self, lock: SlackMQ, rollout: Rollout, baton: Baton) -> bool:
        """Claim the baton (one bot wins); update, or report at once if already there."""
        remaining = [b for b in self.bot.roster if b not in rollout.reported]
        order = rank(baton.ts, remaining)
        if self.bot.name in order:
            await asyncio.sleep(order.index(self.bot.name) * self.bot.settings.stagger_s)
        if not await lock.claim(rollout.channel, baton.ts):
            return False
        log.info("fleet: took step %d of the rollout to %s", baton.step, baton.version)
        version = baton.version
        if version == __version__:
            await self._report(rollout, baton)
            return True
        said = (
            f"{self.bot.name} is updating from troupe {__version__} to {version} "
            f"(step {baton.step})."
        )
        await self._post(rollout.channel, rollout.root, said)
        try:
            await request(
                self.settings, self.bot.name, "update", version, downgrade=rollout.downgrade
            )
        except (UpdateError, ValueError, OSError, TimeoutError) as err:
            await self._post(
                rollout.channel,
                rollout.root,
                f"{self.bot.name} could not ask the updater for troupe {version}: {err}. "
                "Rollout stopped.",
            )
            return True
        return False  # the updater restarts this bot; the new process carries on

    async def _after_update(self, rollout: Rollout) -> bool:
        """This bot posted 'updating': as the new version, report; rolled back, say why."""
        version = rollout.version or ""
        if version == __version__:
            baton = next(
                (
                    b
                    for b in reversed(rollout.batons)
                    if float(b.ts) < float(rollout.updating[self.bot.name])
                ),
                rollout.latest,
            )
            assert baton is not None
            await self._report(rollout, baton, after_update=True)
            return True
        result = read_json(self.state_dir / RESULT_FILE) or {}
        if result.get("version") != version or result.get("ok") is not False:
            return False  # the updater has not finished with this bot yet
        if float(result.get("at", 0)) < float(rollout.updating[self.bot.name]):
            return False
        back = result.get("rolled_back_to")
        where = f"rolled back to troupe {back}" if back else f"still on troupe {__version__}"
        await self._post(
            rollout.channel,
            rollout.root,
            f"{self.bot.name} could not update to troupe {version}: {result.get('reason')}; "
            f"{where}. Rollout stopped.",
        )
        return True

    async def _report(self, rollout: Rollout, baton: Baton, *, after_update: bool = False) -> None:
        """Healthy: say so and hand over. Unhealthy: say nothing (the updater rolls back).
        After an update the baton is handed over only once the updater has finished with
        this bot, so two bots never update at once."""
        record = await self.health()
        if not (record["connected"] and all(record["devices"].values())):
            log.error("fleet: not healthy, so not handing over: %s", record)
            return
        write_health(self.state_dir, record)
        version = baton.version
        if after_update and not await self._updater_done(version):
            log.error("fleet: the updater did not finish with troupe %s; not handing over", version)
            return
        done = rollout.reported | {self.bot.name}
        left = [b for b in self.bot.roster if b not in done]
        text = (
            f"{self.bot.name} is on troupe {version} and healthy (connected, "
            f"{record['plugins']} plugins, {len(record['devices'])} devices answering)."
        )
        if not left:
            text += f" Rolling update to troupe {version} done: all {len(done)} bots are on it."
        elif baton.canary is not None:
            text += (
                f" Rolling update to troupe {version}, step {baton.step + 1}: the next bot takes "
                f"this, after an admin's :{self.settings.approval}: on this message or in "
                f"{self.settings.soak_s:g} s."
            )
        else:
            text += (
                f" Rolling update to troupe {version}, step {baton.step + 1}: the next bot "
                "takes this."
            )
        await self._post(rollout.channel, rollout.root, text)
        try:
            await self.bot.web.pins_remove(channel=rollout.channel, timestamp=baton.ts)
        except SlackApiError as err:
            if err.response.get("error") not in ("no_pin", "message_not_found"):
                log.warning("fleet: could not unpin the baton: %s", err.response.get("error"))

    async def _updater_done(self, version: str) -> bool:
        """Wait (health_timeout_s at most) for the updater's result for this version,
        written since this process started (both times from this Pi's own clock)."""
        path = self.state_dir / RESULT_FILE
        deadline = time.monotonic() + self.settings.health_timeout_s
        while time.monotonic() < deadline:
            result = read_json(path) or {}
            if result.get("version") == version and path.stat().st_mtime >= self.bot.info.started:
                return bool(result.get("ok"))
            await asyncio.sleep(self.settings.poll_s)
        return False


def is_admin(bot: Any, user: str | None) -> bool:
    """The bot's access rules decide (older bots keep a plain set of admins)."""
    access = getattr(bot, "access", None)
    if access is not None:
        return bool(access.is_admin(user))
    return user in getattr(bot, "admins", ())


def service_of(ctx: Context) -> FleetService:
    """The bot's fleet service (the runner starts one wherever this plugin is loaded)."""
    service = ctx.service(FleetService)
    if service is None:
        raise PluginError(
            "fleet commands need the fleet service, which this bot did not start: "
            "load troupe.plugins.devops through the federation file's plugins list"
        )
    return service


def _named(ctx: Context, group: str = "bot") -> str | None:
    name = (ctx.match.group(group) or "").strip().lower()
    return name if name in ctx.me.roster else None


async def _named_or_answer(ctx: Context) -> str | None:
    """The bot the command names; a name that is no bot gets one answer, and None."""
    wanted = _named(ctx)
    if wanted is None:
        roster = ", ".join(ctx.me.roster)
        await ctx.answer_once(f"There is no bot called {ctx.match.group('bot')}: {roster}.")
    return wanted


# --- the commands -------------------------------------------------------------------------------


@command(r"version", each=True, admin=True, needs=("services",))
async def version(ctx: Context) -> None:
    """Each targeted bot says which troupe it runs."""
    if service_of(ctx).targeted():
        await ctx.say(f"{ctx.me.name}: troupe {__version__} (Python {platform.python_version()})")


@command(r"bot count|how many bots", each=True, admin=True, needs=("services", "transport"))
async def bot_count(ctx: Context) -> None:
    """Each live, targeted bot answers with its connection: count the answers."""
    if service_of(ctx).targeted():
        link = ctx.connection
        connected = "connected" if link.connected else "reconnecting"
        await ctx.say(f"{ctx.me.name}: live, 1 {link.kind} connection, {connected}")


@command(r"target (?P<bot>all|[a-z0-9-]+)", each=True, admin=True, needs=("services",))
async def target(ctx: Context) -> None:
    """Which bots take fleet commands (version, bot count): one bot, or all."""
    service = service_of(ctx)
    wanted = ctx.match.group("bot").lower()
    if wanted != "all" and wanted not in ctx.me.roster:
        await ctx.answer_once(f"There is no bot called {wanted}: {', '.join(ctx.me.roster)}.")
        return
    service.remember(target="all" if wanted == "all" else [wanted])
    if wanted == ctx.me.name:
        await ctx.say(f"{ctx.me.name} takes fleet commands; the others stay silent.")
    elif wanted == "all":
        await ctx.answer_once("Every bot takes fleet commands again.")


@command(r"canary (?P<bot>[a-z0-9-]+)", each=True, admin=True, needs=("services",))
async def canary(ctx: Context) -> None:
    """Which bot updates first in the next rolling update."""
    wanted = await _named_or_answer(ctx)
    if wanted is None:
        return
    service_of(ctx).remember(canary=wanted)
    if wanted == ctx.me.name:
        await ctx.say(f"{wanted} is the canary of the next update.")


@command(
    rf"(?:update|downgrade)(?: (?:to )?(?P<version>{V}))?",
    each=True,
    admin=True,
    needs=("services",),
)
async def update(ctx: Context) -> None:
    """Rolling update, one bot at a time, canary first: `update 0.2.0`; an older
    version only by name: `downgrade to 0.1.0`."""
    service = service_of(ctx)
    settings = service.settings
    wanted = ctx.match.group("version") or wheel_version(settings.source)
    message = ctx.message
    if settings.source is None:
        await ctx.answer_once("No update source is set: add `update: source:` to the file.")
        return
    if wanted is None:
        await ctx.answer_once("Which version? Say `update 0.2.0`.")
        return
    try:
        check_version(wanted)
    except ValueError as err:
        await ctx.answer_once(f"{str(err)[0].upper()}{str(err)[1:]}.")
        return
    first = service.canary()

    async def start() -> None:
        await service._post(
            message.channel,
            message.ts,
            f"Rolling update to troupe {wanted}, step 1: the canary {first} takes this. "
            f"One bot at a time; the others follow after an admin's :{settings.approval}: "
            f"on the canary's report, or {settings.soak_s:g} s after it.",
        )

    await ctx.once(start)
    service.follow(message.channel, message.ts)


@command(HALTS, admin=True)
async def halt(ctx: Context) -> None:
    """Stop a rolling update: `stop` in its thread (the bots read it there)."""
    message = ctx.message
    if not message.thread_ts or message.thread_ts == message.ts:
        await ctx.say("Say `stop` in the rolling update's thread to stop it.")
        return
    await ctx.say("Stopping here: no bot takes a further step of this rolling update.")


@command(r"restart (?P<bot>[a-z0-9-]+)", each=True, admin=True, needs=("services",))
async def restart(ctx: Context) -> None:
    """Restart one bot through systemd (or the test supervisor)."""
    wanted = await _named_or_answer(ctx)
    if wanted is None:
        return
    if wanted != ctx.me.name:
        return
    await ctx.say(f"{wanted} restarting.")
    try:
        await request(service_of(ctx).settings, wanted, "restart")
    except UpdateError as err:
        await ctx.say(f"{wanted} could not restart: {err}")


@command(r"logs (?P<bot>[a-z0-9-]+)(?: (?P<n>\d{1,4}))?", each=True, admin=True, needs=("slack",))
async def logs(ctx: Context) -> None:
    """One bot's recent log lines, secrets redacted: `logs kitchen-pi 20`."""
    wanted = await _named_or_answer(ctx)
    if wanted is None:
        return
    if wanted != ctx.me.name:
        return
    n = min(int(ctx.match.group("n") or 20), 200)
    lines = list(RING.lines)[-n:]
    body = "\n".join(lines) if lines else "(nothing logged yet)"
    if RING.redactor is not None:
        body = RING.redactor.redact(body)
    text = f"{wanted}, last {len(lines)} log lines:\n```\n{body[-3500:]}\n```"
    # Logs name people, devices and times: only the admin who asked reads them, never
    # everyone in the channel.
    try:
        await ctx.slack.direct_message(ctx.user or "", text)
    except SlackApiError as err:
        log.error("fleet: could not send logs by direct message: %s", err.response.get("error"))
        await ctx.say(
            f"{wanted} could not send you its logs by direct message "
            f"({err.response.get('error')}); check that the app has the im:write scope."
        )
        return
    await ctx.say(f"{wanted} sent you its last {len(lines)} log lines by direct message.")
