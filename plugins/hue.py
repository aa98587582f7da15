"""Philips Hue lights, rooms and zones through the bridge's API v1 (phue), and pairing.

Federation file: `hue: {bridge: HOST:PORT, username: file:PATH}`; a device says
`light: <id or name>` or `group: <id or name>` and may add `transition_s`. Get a username
with `troupe hue pair --bridge HOST:PORT --out PATH`, or an admin says "pair hue".
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import phue
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from troupe import colour
from troupe.federation import Action
from troupe.plugin import Context, DeviceState, Driver, DriverError, command
from troupe.secrets import Secret, SecretError
from troupe.tasks import spawn

log = logging.getLogger(__name__)
# phue logs the username (an API key) at INFO when it connects, and every request's
# address (which holds it) at DEBUG: keep its logger to warnings.
logging.getLogger("phue").setLevel(logging.WARNING)

T = TypeVar("T")

BRIDGE_TIMEOUT_S = 3.0
"""A bridge that has not answered within this long is taken for off or unreachable."""
PAIR_WINDOW_S = 30.0
"""The link button allows pairing for 30 s; pairing keeps trying for as long."""
DEFAULT_USERNAME_FILE = "~/.config/troupe/hue-username"


# --- brightness -------------------------------------------------------------------------------


def bri_of_percent(percent: int) -> int:
    """0-100 % -> Hue's bri 1-254 (not clamped above: the bridge refuses what is too high)."""
    return max(1, round(percent * 254 / 100)) if percent > 0 else round(percent * 254 / 100)


def percent_of_bri(bri: int) -> int:
    return max(1, round(bri * 100 / 254))


# --- phue, bounded ------------------------------------------------------------------------------


class _Bridge(phue.Bridge):
    """phue's Bridge with a short socket timeout: phue itself waits 10 s for a bridge that
    is off. `request` is phue 1.1's own, with the timeout changed and the connection closed
    on every path."""

    def __init__(
        self,
        ip: str,
        username: str | None = None,
        config_file_path: str | None = None,
        timeout_s: float = BRIDGE_TIMEOUT_S,
    ) -> None:
        self.timeout_s = timeout_s
        super().__init__(ip, username, config_file_path)

    def request(self, mode: str = "GET", address: str | None = None, data: Any = None) -> Any:
        connection = http.client.HTTPConnection(self.ip, timeout=self.timeout_s)
        try:
            if mode in ("GET", "DELETE"):
                connection.request(mode, address or "/")
            else:
                connection.request(mode, address or "/", json.dumps(data))
            response = connection.getresponse().read()
        finally:
            connection.close()
        return json.loads(response.decode("utf-8"))


class _Garbage(Exception):
    """The bridge answered something that is not the Hue API's JSON."""


_PHUE_SHAPE_ERRORS = (KeyError, IndexError, TypeError, AttributeError)
"""What phue raises when it indexes an answer of the wrong shape."""


def _no_answer(bridge: str) -> str:
    return f"the Hue bridge at {bridge} did not answer; check it is powered and on the network"


def _garbled(bridge: str) -> str:
    return (
        f"the Hue bridge at {bridge} gave an answer that is not the Hue API; "
        "check that this address is the bridge"
    )


# --- options -----------------------------------------------------------------------------------


_ADDRESS = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:]+\](:\d{1,5})?")


class HueSection(BaseModel):
    """The federation file's `hue:` section: the driver's own, validated by `troupe check`
    and at start; its username is an API key, so a secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bridge: StrictStr
    username: Secret | None = None
    poll_s: float = Field(default=30.0, ge=0)
    """How often each bot asks the bridge which lights are reachable (an unplugged light
    is an offline event, plugged back an online one); 0: never."""


class HueDevice(BaseModel):
    """One device's options: which light or group (room, zone) it is."""

    model_config = ConfigDict(extra="forbid")

    light: StrictStr | StrictInt | None = None
    group: StrictStr | StrictInt | None = None
    transition_s: float | None = Field(default=None, ge=0, le=6553.5)

    @model_validator(mode="after")
    def _one_target(self) -> HueDevice:
        if (self.light is None) == (self.group is None):
            raise ValueError("give exactly one of light: <id or name> or group: <id or name>")
        return self


@dataclass
class _Target:
    """A device as the bridge knows it; `ident` is the bridge's id once resolved."""

    kind: Literal["light", "group"]
    ref: str
    transitiontime: int | None
    ident: str | None = None


def _named(table: Mapping[str, Any], name: str) -> Any:
    """The bridge's entry of the light called `name` (spaces and case ignored)."""
    wanted = " ".join(name.split()).casefold()
    for info in table.values():
        if isinstance(info, dict) and " ".join(str(info.get("name", "")).split()).casefold() == (
            wanted
        ):
            return info
    return None


def _option_problem(device: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "light"
    if first["type"] == "extra_forbidden":
        return (
            f"the {device}: unknown option {key!r}; a hue device takes light or group "
            "(an id or a name) and transition_s"
        )
    return f"the {device}: {key}: {_message(first)}"


def _message(error: Mapping[str, Any]) -> str:
    return str(error["msg"]).removeprefix("Value error, ")


# --- the driver ---------------------------------------------------------------------------------


class HueDriver(Driver):
    """Hue lights and groups on one bridge; every call bounded by `timeout_s`."""

    name = "hue"
    options_model = HueDevice
    section_model = HueSection
    timeout_s: float = BRIDGE_TIMEOUT_S

    async def start(self, devices: Mapping[str, Mapping[str, Any]]) -> None:
        self.targets: dict[str, _Target] = {}
        self.bridge = ""
        self.username: Secret | None = None
        for device, options in devices.items():
            try:
                parsed = HueDevice.model_validate(dict(options))
            except ValidationError as err:
                raise DriverError(_option_problem(device, err)) from None
            kind: Literal["light", "group"] = "light" if parsed.light is not None else "group"
            ref = str(parsed.light if parsed.light is not None else parsed.group).strip()
            tt = None if parsed.transition_s is None else round(parsed.transition_s * 10)
            self.targets[device] = _Target(kind, ref, tt, ref if ref.isdigit() else None)
        if not devices:
            return
        try:
            section = HueSection.model_validate(self.options)
        except ValidationError as err:
            first = err.errors()[0]
            if first["loc"] == ("bridge",) and first["type"] == "missing":
                raise DriverError(
                    f"the Hue devices ({', '.join(devices)}) need a hue: section with the "
                    "bridge's address in the federation file, like hue: {bridge: 192.168.1.20}"
                ) from None
            key = ".".join(str(part) for part in first["loc"])
            raise DriverError(f"hue.{key}: {_message(first)}") from None
        if not _ADDRESS.fullmatch(section.bridge.strip()):
            raise DriverError(
                f"hue.bridge {section.bridge!r} is not host or host:port (no http://)"
            )
        self.bridge = section.bridge.strip()
        self.username = section.username
        if section.poll_s and any(t.kind == "light" for t in self.targets.values()):
            self._poller = spawn(
                self._watch_reachable(section.poll_s), "watching the Hue lights", logger=log
            )

    async def stop(self) -> None:
        poller = getattr(self, "_poller", None)
        if poller is not None:
            poller.cancel()

    async def _watch_reachable(self, every_s: float) -> None:
        """Every `every_s`, one request for all lights: a light whose `reachable` changed
        since the last answer is an offline or online event (the first answer is not)."""
        known: dict[str, bool] = {}
        while True:
            await asyncio.sleep(every_s)
            try:
                table = self._object("the lights", await self._call(lambda b: b.get_light()))
            except DriverError as err:
                log.debug("cannot poll the Hue lights: %s", err)
                continue
            for device, target in self.targets.items():
                if target.kind != "light":
                    continue
                info = table.get(target.ident) if target.ident else _named(table, target.ref)
                state = info.get("state") if isinstance(info, dict) else None
                reachable = state.get("reachable") if isinstance(state, dict) else None
                if not isinstance(reachable, bool):
                    continue
                was, known[device] = known.get(device), reachable
                if was is not None and was != reachable:
                    await self.emit(device, "online" if reachable else "offline", "")

    # talking to the bridge ---------------------------------------------------------------

    def _reveal(self) -> str:
        if self.username is None:
            raise DriverError(
                f"there is no username for the Hue bridge at {self.bridge}; pair with "
                "`troupe hue pair` and put username: file:PATH in the hue: section"
            )
        try:
            return self.username.reveal()
        except SecretError as err:
            raise DriverError(f"cannot read the Hue username: {err}") from None

    async def _call(self, work: Callable[[phue.Bridge], T]) -> T:
        """Run a phue call in a thread, bounded, with its failures as one sentence."""
        username = self._reveal()
        timeout = self.timeout_s

        def run() -> T:
            bridge = _Bridge(self.bridge, username, os.devnull, timeout_s=timeout)
            return work(bridge)

        try:
            return await asyncio.wait_for(asyncio.to_thread(run), timeout * 2)
        except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
            log.warning("Hue bridge %s: %s", self.bridge, type(err).__name__)
            raise DriverError(_no_answer(self.bridge)) from None
        except OSError as err:
            log.warning("Hue bridge %s: %s", self.bridge, err)
            raise DriverError(_no_answer(self.bridge)) from None
        except (ValueError, _Garbage, *_PHUE_SHAPE_ERRORS) as err:
            log.warning("Hue bridge %s answered garbage: %r", self.bridge, err)
            raise DriverError(_garbled(self.bridge)) from None

    def _explain(self, device: str, error: Any) -> str:
        """One sentence for one of the bridge's error entries."""
        if not isinstance(error, dict):
            return _garbled(self.bridge)
        kind = error.get("type")
        address = str(error.get("address", ""))
        param = address.rsplit("/", 1)[-1]
        target = self.targets[device]
        if kind == 1:
            return (
                f"the Hue bridge at {self.bridge} does not know troupe's username; pair again "
                "(`troupe hue pair`, or say `pair hue`) and update hue.username"
            )
        if kind == 3:
            return (
                f"the Hue bridge at {self.bridge} has no {target.kind} {target.ref}; "
                f"check the {target.kind} option of the {device}"
            )
        if kind == 6:
            what = {
                "bri": "dim",
                "xy": "change colour",
                "hue": "change colour",
                "sat": "change colour",
                "ct": "change colour temperature",
            }.get(param, f"take {param}")
            return f"the {device} cannot {what}"
        if kind == 7:
            what = {
                "bri": "that brightness (it takes 0 to 100%)",
                "ct": "that colour temperature",
                "xy": "that colour",
                "transitiontime": "that transition time",
            }.get(param, f"that value for {param}")
            return f"the Hue bridge refused {what} for the {device}"
        if kind == 201:
            return f"the {device} is off, so the Hue bridge would not change its {param}"
        description = error.get("description", "no description")
        return f"the Hue bridge at {self.bridge} refused: {description} (error {kind})"

    def _fail(self, device: str, errors: list[Any]) -> DriverError:
        if any(isinstance(e, dict) and e.get("type") == 3 for e in errors):
            target = self.targets[device]
            if not target.ref.isdigit():
                target.ident = None  # renamed or re-paired: look the name up again
        return DriverError(self._explain(device, errors[0]))

    def _object(self, device: str, answer: Any) -> dict[str, Any]:
        """A GET answer: a dict, or the bridge's error list turned into a DriverError."""
        if isinstance(answer, dict):
            return answer
        if (
            isinstance(answer, list)
            and answer
            and all(isinstance(e, dict) and "error" in e for e in answer)
        ):
            raise self._fail(device, [e["error"] for e in answer])
        raise DriverError(_garbled(self.bridge))

    def _check(self, device: str, answer: Any) -> None:
        """A PUT answer (phue: one list per target): raise for the first error entry."""
        if not isinstance(answer, list):
            raise DriverError(_garbled(self.bridge))
        entries = [e for part in answer for e in (part if isinstance(part, list) else [part])]
        if not entries or not all(
            isinstance(e, dict) and ("success" in e or "error" in e) for e in entries
        ):
            raise DriverError(_garbled(self.bridge))
        errors = [e["error"] for e in entries if "error" in e]
        if errors:
            raise self._fail(device, errors)

    async def _ident(self, device: str) -> str:
        target = self.targets.get(device)
        if target is None:
            raise DriverError(f"the {device} is not a Hue device of this bot")
        if target.ident is not None:
            return target.ident
        if target.kind == "light":
            everything = await self._call(lambda b: b.get_light())
        else:
            everything = await self._call(lambda b: b.get_group())
        table = self._object(device, everything)
        wanted = " ".join(target.ref.split()).casefold()
        names = {}
        for ident, info in table.items():
            if not isinstance(info, dict) or not isinstance(info.get("name"), str):
                raise DriverError(_garbled(self.bridge))
            names[" ".join(info["name"].split()).casefold()] = str(ident)
        if wanted not in names:
            known = ", ".join(sorted(str(info["name"]) for info in table.values())) or "none"
            raise DriverError(
                f"the Hue bridge at {self.bridge} has no {target.kind} named "
                f"“{target.ref}” (it has: {known}); check the {device}'s {target.kind} option"
            )
        target.ident = names[wanted]
        return target.ident

    async def _fetch(self, device: str) -> tuple[_Target, str, dict[str, Any]]:
        """The device's target, bridge id and what the bridge says of it now."""
        ident = await self._ident(device)
        target = self.targets[device]
        if target.kind == "light":
            answer = await self._call(lambda b: b.get_light(int(ident)))
        else:
            answer = await self._call(lambda b: b.get_group(int(ident)))
        info = self._object(device, answer)
        part = "state" if target.kind == "light" else "action"
        if not isinstance(info.get(part), dict) or not isinstance(info.get("state"), dict):
            raise DriverError(_garbled(self.bridge))
        return target, ident, info

    # the Driver API --------------------------------------------------------------------------

    async def act(self, device: str, action: Action) -> DeviceState:
        if action.op not in ("on", "off", "toggle", "set"):
            raise DriverError(f"a Hue light cannot {action.op}")
        target, ident, info = await self._fetch(device)
        state = info["state"]
        if target.kind == "light" and state.get("reachable") is False:
            raise DriverError(
                f"the Hue bridge cannot reach the {device}; check that it is powered "
                "(its wall switch on)"
            )
        if action.op in ("on", "off"):
            body: dict[str, Any] = {"on": action.op == "on"}
        elif action.op == "toggle":
            now_on = bool(state.get("on") if target.kind == "light" else state.get("any_on"))
            body = {"on": not now_on}
        else:
            body = self._set_body(device, target, info, action.kwargs)
        tt = target.transitiontime
        number = int(ident)
        if target.kind == "light":
            answer = await self._call(lambda b: b.set_light(number, dict(body), transitiontime=tt))
        else:
            answer = await self._call(lambda b: b.set_group(number, dict(body), transitiontime=tt))
        self._check(device, answer)
        # The bridge said success for each key: its state is now the old one with the body.
        part = "state" if target.kind == "light" else "action"
        values = {**info[part], **body}
        values["colormode"] = next((m for m in ("xy", "ct") if m in body), values.get("colormode"))
        gamut = colour.gamut_of(info.get("capabilities"))
        return _state_of(values, body["on"], gamut)

    def _set_body(
        self, device: str, target: _Target, info: dict[str, Any], args: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The state to PUT for a "set"; a group passes everything on
        (the bridge gives each light what it can take)."""
        takes = set(info["state"]) if target.kind == "light" else {"bri", "ct", "xy"}
        brightness = args.get("brightness")
        if brightness is not None and brightness == 0:
            return {"on": False}
        body: dict[str, Any] = {"on": True}
        if brightness is not None:
            if "bri" not in takes:
                raise DriverError(f"the {device} cannot dim; it only turns on and off")
            body["bri"] = bri_of_percent(int(brightness))
        gamut = colour.gamut_of(info.get("capabilities"))
        color = args.get("color")
        if color is not None:
            wanted = colour.named(str(color))
            if wanted.kelvin is not None and "ct" in takes:
                body["ct"] = colour.mireds(wanted.kelvin)
            elif "xy" in takes:
                body["xy"] = list(colour.fit_gamut(wanted.xy, gamut))
            else:
                raise DriverError(f"the {device} cannot change colour")
        temperature = args.get("temperature")
        if temperature is not None:
            if "ct" in takes:
                body["ct"] = colour.mireds(int(temperature))
            elif "xy" in takes:
                body["xy"] = list(colour.fit_gamut(colour.xy_of_kelvin(int(temperature)), gamut))
            else:
                raise DriverError(f"the {device} cannot change colour temperature")
        return body

    async def state(self, device: str) -> DeviceState:
        target, _ident, info = await self._fetch(device)
        if target.kind == "light":
            if info["state"].get("reachable") is False:
                return DeviceState(online=False, detail="the Hue bridge cannot reach it")
            gamut = colour.gamut_of(info.get("capabilities"))
            return _state_of(info["state"], info["state"].get("on"), gamut)
        return _state_of(info["action"], info["state"].get("any_on"))


def _state_of(
    values: Mapping[str, Any], on: object, gamut: colour.Gamut = colour.GAMUT_C
) -> DeviceState:
    """A light's state (or a group's action) as troupe says it."""
    bri = values.get("bri")
    color, temperature = None, None
    mode = values.get("colormode")
    if mode == "xy" and isinstance(values.get("xy"), list) and len(values["xy"]) == 2:
        color = colour.name_of_xy(values["xy"], gamut=gamut)
    elif mode == "ct" and isinstance(values.get("ct"), int):
        temperature = round(1_000_000 / values["ct"])
        color = colour.name_of_mireds(values["ct"])
    return DeviceState(
        on=bool(on),
        brightness=percent_of_bri(bri) if isinstance(bri, int) else None,
        color=color,
        temperature=temperature,
    )


# --- pairing ----------------------------------------------------------------------------------


class PairingError(DriverError):
    """Pairing with the bridge failed; the message says why in one sentence."""


def store_username(path: Path, username: str) -> None:
    """Write the username to `path` with mode 0600 (atomically: a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (username + "\n").encode())
    finally:
        os.close(fd)
    os.replace(scratch, path)


def pair(
    bridge: str,
    path: str | Path,
    *,
    wait_s: float = PAIR_WINDOW_S,
    retry_s: float = 1.0,
    timeout_s: float = BRIDGE_TIMEOUT_S,
    cancel: threading.Event | None = None,
) -> Path:
    """Register troupe with the bridge while its link button is pressed; store the username.

    Retries for up to `wait_s` (the button allows 30 s), so the user may press it before
    or after starting. The username goes to `path` with mode 0600; returns that path.
    Blocking: run it in a thread. phue writes its own config file only in a private
    temporary directory, never in the home directory.
    """
    target = Path(path).expanduser().absolute()
    stop = cancel or threading.Event()
    deadline = time.monotonic() + wait_s
    with tempfile.TemporaryDirectory(prefix="troupe-hue-") as scratch:
        config = os.path.join(scratch, "python_hue")
        while True:
            try:
                registered = _Bridge(bridge, None, config, timeout_s=timeout_s)
            except phue.PhueRegistrationException:
                if time.monotonic() >= deadline or stop.wait(retry_s):
                    raise PairingError(
                        f"the link button on the Hue bridge at {bridge} was not pressed "
                        f"within {wait_s:.0f} s; press it and pair again"
                    ) from None
                continue
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError):
                raise PairingError(_no_answer(bridge)) from None
            except (ValueError, *_PHUE_SHAPE_ERRORS):
                raise PairingError(_garbled(bridge)) from None
            except phue.PhueException as err:
                raise PairingError(f"the Hue bridge at {bridge} refused: {err.message}") from None
            break
        username = registered.username
    if not isinstance(username, str) or not username.strip():
        raise PairingError(_garbled(bridge))
    store_username(target, username.strip())
    return target


def _username_path(options: Mapping[str, Any]) -> Path:
    """Where "pair hue" stores the username: the hue section's file: secret, if any."""
    secret = options.get("username")
    if isinstance(secret, Secret) and secret.path is not None:
        return secret.path
    return Path(DEFAULT_USERNAME_FILE).expanduser()


_PAIRINGS: set[asyncio.Task[None]] = set()


@command(r"pair (?:the )?hue(?: bridge)?", admin=True)
async def pair_hue(ctx: Context) -> None:
    """Pair with the Hue bridge: say it, then press the bridge's link button within 30 s."""
    options = ctx.section("hue")
    bridge = options.get("bridge")
    if not isinstance(bridge, str) or not bridge.strip():
        await ctx.say("There is no Hue bridge in the federation file: add hue: {bridge: HOST}.")
        return
    path = _username_path(options)
    await ctx.say(
        f"Press the link button on the Hue bridge at {bridge} now; "
        f"I'll keep trying for {PAIR_WINDOW_S:.0f} s."
    )

    async def finish() -> None:
        try:
            stored = await asyncio.to_thread(pair, bridge.strip(), path)
        except PairingError as err:
            await ctx.say(f"Pairing failed: {err}.")
            return
        await ctx.say(
            f"Paired: the username is in {stored} (mode 600) on {ctx.me.name}. "
            f"The hue: section needs `username: file:{stored}`."
        )

    # The claim lease is shorter than the 30 s the button allows: answer now, finish later.
    spawn(finish(), "pairing with the Hue bridge", _PAIRINGS, logger=log)


def main(argv: Sequence[str] | None = None) -> int:
    """`troupe hue pair --bridge HOST:PORT [--out PATH]`: pair and print the username line."""
    parser = argparse.ArgumentParser(prog="troupe hue", description="Philips Hue tools.")
    sub = parser.add_subparsers(dest="action", required=True)
    pairing = sub.add_parser("pair", help="get a username from the bridge (press its button)")
    pairing.add_argument("--bridge", required=True, help="the bridge's host or host:port")
    pairing.add_argument(
        "--out",
        default=DEFAULT_USERNAME_FILE,
        help=f"file to store the username in, mode 600 (default {DEFAULT_USERNAME_FILE})",
    )
    pairing.add_argument(
        "--wait-s", type=float, default=PAIR_WINDOW_S, help="how long to keep trying"
    )
    args = parser.parse_args(argv)
    print(
        f"Press the link button on the Hue bridge at {args.bridge}; "
        f"trying for {args.wait_s:.0f} s...",
        file=sys.stderr,
        flush=True,
    )
    try:
        stored = pair(args.bridge, args.out, wait_s=args.wait_s)
    except PairingError as err:
        print(f"troupe hue pair: {err}", file=sys.stderr)
        return 1
    print("Paired. Put this line in the hue: section of the federation file:", file=sys.stderr)
    print(f"username: file:{stored}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
