"""The simulated Hue bridge's state and API v1 answers, with no HTTP: BridgeModel.handle().

It keeps every state change each light receives (like gpiozero's MockPin keeps pin states),
so a test counts what the real phue made the bridge do.
"""

from __future__ import annotations

import copy
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from troupe import colour

LINK_WINDOW_S = 30.0
"""How long the link button stays pressed, as on the real bridge."""
HANG_LIMIT_S = 60.0
"""A request to a bridge that is down is dropped after this long, even if still down."""
MAX_LIGHTS = 63
GARBAGE_HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"
Garbage = Literal["text", "shape"]
GARBAGE_MODES: tuple[str, ...] = ("text", "shape")


# --- the lights ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LightKind:
    """A model of Hue light: what it reports and which state parameters it takes."""

    type: str
    modelid: str
    productname: str
    params: frozenset[str]
    state: Mapping[str, Any]


_ALWAYS = frozenset({"on", "alert", "transitiontime"})
_DIM = _ALWAYS | {"bri", "bri_inc"}
_CT = _DIM | {"ct", "ct_inc"}
_COLOR = _CT | {"hue", "sat", "xy", "effect", "hue_inc", "sat_inc"}
_WORKS_WHEN_OFF = _ALWAYS

KINDS: dict[str, LightKind] = {
    "color": LightKind(
        "Extended color light",
        "LCT015",
        "Hue color lamp",
        _COLOR,
        {
            "bri": 254,
            "hue": 8417,
            "sat": 140,
            "effect": "none",
            "xy": [0.4573, 0.41],
            "ct": 366,
            "colormode": "ct",
        },
    ),
    "ambiance": LightKind(
        "Color temperature light",
        "LTW001",
        "Hue ambiance lamp",
        _CT,
        {"bri": 254, "ct": 366, "colormode": "ct"},
    ),
    "white": LightKind("Dimmable light", "LWB010", "Hue white lamp", _DIM, {"bri": 254}),
    "plug": LightKind("On/Off plug-in unit", "LOM001", "Hue smart plug", _ALWAYS, {}),
}
KIND_CYCLE = ("color", "ambiance", "white", "plug")


def _whole(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _unit_pair(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in value)
        and all(0 <= c <= 1 for c in value)
    )


_VALID: dict[str, Callable[[Any], bool]] = {
    "on": lambda v: isinstance(v, bool),
    "bri": _whole(1, 254),
    "hue": _whole(0, 65535),
    "sat": _whole(0, 254),
    "ct": _whole(153, 500),
    "xy": _unit_pair,
    "alert": lambda v: v in ("none", "select", "lselect"),
    "effect": lambda v: v in ("none", "colorloop"),
    "transitiontime": _whole(0, 65535),
    "bri_inc": _whole(-254, 254),
    "sat_inc": _whole(-254, 254),
    "hue_inc": _whole(-65534, 65534),
    "ct_inc": _whole(-65534, 65534),
}
_RANGES = {"bri": (1, 254), "sat": (0, 254), "ct": (153, 500)}
_COLORMODE = {"xy": "xy", "ct": "ct", "hue": "hs", "sat": "hs"}
_GROUP_ACTION = ("on", "bri", "hue", "sat", "effect", "xy", "ct", "alert", "colormode")


@dataclass(frozen=True)
class GroupSpec:
    """A room or a zone: a named set of lights."""

    name: str
    lights: tuple[str, ...]
    type: Literal["Room", "Zone", "LightGroup"] = "Room"
    klass: str = "Other"


def default_layout(count: int) -> tuple[list[tuple[str, str]], list[GroupSpec]]:
    """`count` lights cycling through the kinds, two rooms and one zone."""
    if not 1 <= count <= MAX_LIGHTS:
        raise ValueError(f"a Hue bridge has 1 to {MAX_LIGHTS} lights (got {count})")
    lights: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i in range(count):
        kind = KIND_CYCLE[i % len(KIND_CYCLE)]
        seen[kind] = seen.get(kind, 0) + 1
        lights.append((f"{KINDS[kind].productname} {seen[kind]}", kind))
    ids = [str(i + 1) for i in range(count)]
    half = math.ceil(count / 2)
    groups = [GroupSpec("Living room", tuple(ids[:half]), "Room", "Living room")]
    if ids[half:]:
        groups.append(GroupSpec("Bedroom", tuple(ids[half:]), "Room", "Bedroom"))
    groups.append(GroupSpec("Downstairs", tuple(ids[::2]), "Zone", "Downstairs"))
    return lights, groups


def _error(kind: int, address: str, description: str) -> dict[str, Any]:
    return {"error": {"type": kind, "address": address, "description": description}}


def _success(address: str, value: Any) -> dict[str, Any]:
    return {"success": {address: value}}


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _stamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))


# --- the bridge -----------------------------------------------------------------------------


class BridgeModel:
    """The bridge's state and its API v1 answers, with no HTTP: `handle()` does one request.

    Thread-safe (one lock), so a test thread can read counts while the server runs.
    """

    def __init__(
        self,
        lights: Sequence[tuple[str, str]],
        groups: Sequence[GroupSpec] = (),
        *,
        usernames: Sequence[str] = (),
        link_pressed: bool = True,
        clock: Callable[[], float] = time.monotonic,
        name: str = "Philips hue",
    ) -> None:
        """`lights` are (name, kind) pairs, numbered from 1; `link_pressed` presses the
        link button at start (as the bridge's first 30 s after power-up allow pairing)."""
        self._lock = threading.Lock()
        self.clock = clock
        self.name = name
        self.lights: dict[str, dict[str, Any]] = {}
        self.kinds: dict[str, LightKind] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        for number, (light_name, kind_name) in enumerate(lights, start=1):
            self._add_light(str(number), light_name, kind_name)
        self.groups: dict[str, dict[str, Any]] = {}
        for number, spec in enumerate(groups, start=1):
            unknown = [lid for lid in spec.lights if lid not in self.lights]
            if unknown:
                raise ValueError(f"group {spec.name!r} names unknown lights {unknown}")
            self.groups[str(number)] = {
                "name": spec.name,
                "lights": list(spec.lights),
                "sensors": [],
                "type": spec.type,
                "recycle": False,
                "class": spec.klass,
                "action": dict(KINDS["color"].state, on=False, alert="none"),
            }
        self.all_action: dict[str, Any] = dict(KINDS["color"].state, on=False, alert="none")
        now = time.time()
        self.whitelist: dict[str, dict[str, str]] = {
            user: {"last use date": _stamp(now), "create date": _stamp(now), "name": "troupe#sim"}
            for user in usernames
        }
        self.link_until = clock() + LINK_WINDOW_S if link_pressed else -math.inf
        self.requests = 0

    def _add_light(self, lid: str, light_name: str, kind_name: str) -> None:
        kind = KINDS[kind_name]
        state = {"on": False, **copy.deepcopy(dict(kind.state))}
        state.update(alert="none", mode="homeautomation", reachable=True)
        mac = f"00:17:88:01:00:{int(lid):02x}:{(int(lid) * 7) % 256:02x}:{int(lid) % 256:02x}"
        self.lights[lid] = {
            "state": state,
            "swupdate": {"state": "noupdates", "lastinstall": "2024-01-01T00:00:00"},
            "type": kind.type,
            "name": light_name,
            "modelid": kind.modelid,
            "manufacturername": "Signify Netherlands B.V.",
            "productname": kind.productname,
            "capabilities": {"certified": True, "control": self._control(kind)},
            "config": {"archetype": "classicbulb", "function": "mixed", "direction": "omni"},
            "uniqueid": f"{mac}-0b",
            "swversion": "1.104.2",
        }
        self.kinds[lid] = kind
        self.history[lid] = []

    @staticmethod
    def _control(kind: LightKind) -> dict[str, Any]:
        control: dict[str, Any] = {}
        if "bri" in kind.params:
            control.update(mindimlevel=1000, maxlumen=800)
        if "ct" in kind.params:
            control["ct"] = {"min": 153, "max": 500}
        if "xy" in kind.params:
            control.update(
                colorgamuttype="C", colorgamut=[list(corner) for corner in colour.GAMUT_C]
            )
        return control

    # what a test or the control routes do -------------------------------------------------

    def press_link_button(self) -> None:
        """Allow registration for the next 30 s."""
        with self._lock:
            self.link_until = self.clock() + LINK_WINDOW_S

    @property
    def link_pressed(self) -> bool:
        return self.clock() < self.link_until

    def set_reachable(self, light: str, reachable: bool) -> None:
        """Unplug (False) or plug back (True) a light: the bridge says it is unreachable."""
        with self._lock:
            if light not in self.lights:
                raise KeyError(f"no light {light}")
            self.lights[light]["state"]["reachable"] = reachable

    def counts(self) -> dict[str, int]:
        """How many state changes each light received, by light id."""
        with self._lock:
            return {lid: len(changes) for lid, changes in self.history.items()}

    def changes(self, light: str) -> list[dict[str, Any]]:
        """Every state change a light received: {"at", "via", "change"}, oldest first."""
        with self._lock:
            return copy.deepcopy(self.history[light])

    def light_state(self, light: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.lights[light]["state"])

    def snapshot(self) -> dict[str, Any]:
        """What GET /sim/counts answers."""
        with self._lock:
            return {
                "lights": {
                    lid: {"count": len(changes), "history": copy.deepcopy(changes)}
                    for lid, changes in self.history.items()
                },
                "requests": self.requests,
                "linkbutton": self.link_pressed,
            }

    # the API ----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> Any:
        """Answer one API request as the bridge would: a JSON value (errors are in it)."""
        parts = [p for p in path.split("/") if p]
        with self._lock:
            self.requests += 1
            if parts == ["api"]:
                if method == "POST":
                    return self._register(body)
                return [_error(1, "/", "unauthorized user")]
            user, rest = parts[1], parts[2:]
            address = "/" + "/".join(rest)
            if user not in self.whitelist:
                if rest == ["config"] and method == "GET":
                    return self._public_config()
                return [_error(1, address, "unauthorized user")]
            self.whitelist[user]["last use date"] = _stamp(time.time())
            data: Any = None
            if method in ("PUT", "POST"):
                try:
                    data = json.loads(body or b"null")
                except (ValueError, UnicodeDecodeError):
                    return [_error(2, address, "body contains invalid json")]
                if not isinstance(data, dict):
                    return [_error(2, address, "body contains invalid json")]
            return self._route(method, rest, address, data)

    def _route(self, method: str, rest: list[str], address: str, data: Any) -> Any:
        not_here = [_error(4, address, f"method, {method}, not available for resource, {address}")]
        if not rest:
            return self._full_state() if method == "GET" else not_here
        head, tail = rest[0], rest[1:]
        if head == "config" and not tail:
            if method == "GET":
                return self._config()
            return self._put_config(data) if method == "PUT" else not_here
        if head in ("lights", "groups"):
            table = self.lights if head == "lights" else self.groups
            if not tail:
                if method != "GET":
                    return not_here
                return {k: self._show(head, k) for k in table}
            ident = tail[0]
            if not (ident in table or (head == "groups" and ident == "0")):
                return [_error(3, address, f"resource, {address}, not available")]
            if len(tail) == 1:
                if method == "GET":
                    return self._show(head, ident)
                if method == "PUT":
                    return self._rename(head, ident, data)
                return not_here
            leaf = "state" if head == "lights" else "action"
            if tail[1:] == [leaf]:
                if method != "PUT":
                    return not_here
                if head == "lights":
                    return self._set_light(ident, data)
                return self._set_group(ident, data)
            return [_error(3, address, f"resource, {address}, not available")]
        if head in ("sensors", "scenes", "schedules", "rules", "resourcelinks") and not tail:
            return {} if method == "GET" else not_here
        return not_here

    def _register(self, body: bytes) -> list[dict[str, Any]]:
        try:
            data = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            return [_error(2, "/", "body contains invalid json")]
        devicetype = data.get("devicetype") if isinstance(data, dict) else None
        if not isinstance(devicetype, str) or not 0 < len(devicetype) <= 40:
            return [_error(5, "/", "invalid/missing parameters in body")]
        if not self.link_pressed:
            return [_error(101, "", "link button not pressed")]
        username = secrets.token_hex(20)
        now = _stamp(time.time())
        self.whitelist[username] = {"last use date": now, "create date": now, "name": devicetype}
        answer: dict[str, str] = {"username": username}
        if data.get("generateclientkey") is True:
            answer["clientkey"] = secrets.token_hex(16).upper()
        return [{"success": answer}]

    def _public_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datastoreversion": "98",
            "swversion": "1953188020",
            "apiversion": "1.53.0",
            "mac": "00:17:88:00:00:01",
            "bridgeid": "001788FFFE000001",
            "factorynew": False,
            "replacesbridgeid": None,
            "modelid": "BSB002",
            "starterkitid": "",
        }

    def _config(self) -> dict[str, Any]:
        now = time.time()
        return {
            **self._public_config(),
            "zigbeechannel": 25,
            "dhcp": True,
            "ipaddress": "127.0.0.1",
            "netmask": "255.0.0.0",
            "gateway": "127.0.0.1",
            "proxyaddress": "none",
            "proxyport": 0,
            "UTC": _stamp(now),
            "localtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
            "timezone": "UTC",
            "linkbutton": self.link_pressed,
            "portalservices": False,
            "portalconnection": "disconnected",
            "whitelist": copy.deepcopy(self.whitelist),
        }

    def _full_state(self) -> dict[str, Any]:
        return {
            "lights": {lid: self._show("lights", lid) for lid in self.lights},
            "groups": {gid: self._show("groups", gid) for gid in self.groups},
            "config": self._config(),
            "schedules": {},
            "scenes": {},
            "rules": {},
            "sensors": {},
            "resourcelinks": {},
        }

    def _put_config(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        results = []
        for key, value in data.items():
            address = f"/config/{key}"
            if key == "name":
                if isinstance(value, str) and 4 <= len(value) <= 16:
                    self.name = value
                    results.append(_success(address, value))
                else:
                    results.append(
                        _error(7, address, f"invalid value, {_show(value)}, for parameter, {key}")
                    )
            elif key == "linkbutton":
                if value is True:
                    self.link_until = self.clock() + LINK_WINDOW_S
                    results.append(_success(address, True))
                else:
                    results.append(
                        _error(7, address, f"invalid value, {_show(value)}, for parameter, {key}")
                    )
            else:
                results.append(_error(6, address, f"parameter, {key}, not available"))
        return results or [_error(5, "/config", "invalid/missing parameters in body")]

    def _show(self, table: str, ident: str) -> dict[str, Any]:
        if table == "lights":
            return copy.deepcopy(self.lights[ident])
        group = self._group(ident)
        shown = copy.deepcopy(group)
        states = [self.lights[lid]["state"]["on"] for lid in group["lights"]]
        shown["state"] = {"all_on": bool(states) and all(states), "any_on": any(states)}
        return shown

    def _group(self, ident: str) -> dict[str, Any]:
        if ident == "0":
            return {
                "name": "Group 0",
                "lights": list(self.lights),
                "sensors": [],
                "type": "LightGroup",
                "recycle": False,
                "action": self.all_action,
            }
        return self.groups[ident]

    def _rename(self, table: str, ident: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        results = []
        base = f"/{table}/{ident}"
        for key, value in data.items():
            address = f"{base}/{key}"
            bad = _error(7, address, f"invalid value, {_show(value)}, for parameter, {key}")
            if key == "name" and not (table == "groups" and ident == "0"):
                if isinstance(value, str) and 0 < len(value) <= 32:
                    target = self.lights[ident] if table == "lights" else self.groups[ident]
                    target["name"] = value
                    results.append(_success(address, value))
                else:
                    results.append(bad)
            elif key == "lights" and table == "groups" and ident != "0":
                if isinstance(value, list) and all(v in self.lights for v in value):
                    self.groups[ident]["lights"] = [str(v) for v in value]
                    results.append(_success(address, value))
                else:
                    results.append(bad)
            else:
                results.append(_error(6, address, f"parameter, {key}, not available"))
        return results or [_error(5, base, "invalid/missing parameters in body")]

    def _set_light(self, lid: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = self.kinds[lid]
        state = self.lights[lid]["state"]
        if not data:
            return [_error(5, f"/lights/{lid}/state", "invalid/missing parameters in body")]
        turning_on = data.get("on") is True
        results = []
        applied: dict[str, Any] = {}
        for key, value in data.items():
            address = f"/lights/{lid}/state/{key}"
            if key not in kind.params:
                results.append(_error(6, address, f"parameter, {key}, not available"))
            elif not _VALID[key](value):
                results.append(
                    _error(7, address, f"invalid value, {_show(value)}, for parameter, {key}")
                )
            elif key not in _WORKS_WHEN_OFF and not state["on"] and not turning_on:
                results.append(
                    _error(
                        201,
                        address,
                        f"parameter, {key}, is not modifiable. Device is set to off.",
                    )
                )
            else:
                applied[key] = value
                results.append(_success(address, value))
        self._apply(lid, applied, f"/lights/{lid}/state")
        return results

    def _set_group(self, gid: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        if not data:
            return [_error(5, f"/groups/{gid}/action", "invalid/missing parameters in body")]
        results = []
        accepted: dict[str, Any] = {}
        for key, value in data.items():
            address = f"/groups/{gid}/action/{key}"
            if key not in _VALID:
                results.append(_error(6, address, f"parameter, {key}, not available"))
            elif not _VALID[key](value):
                results.append(
                    _error(7, address, f"invalid value, {_show(value)}, for parameter, {key}")
                )
            else:
                accepted[key] = value
                results.append(_success(address, value))
        group = self._group(gid)
        for key, value in accepted.items():
            if key in _GROUP_ACTION:
                group["action"][key] = value
                if key in _COLORMODE:
                    group["action"]["colormode"] = _COLORMODE[key]
        for lid in group["lights"]:
            kind = self.kinds[lid]
            light_on = self.lights[lid]["state"]["on"] or accepted.get("on") is True
            subset = {
                k: v
                for k, v in accepted.items()
                if k in kind.params and (k in _WORKS_WHEN_OFF or light_on)
            }
            self._apply(lid, subset, f"/groups/{gid}/action")
        return results

    def _apply(self, lid: str, change: dict[str, Any], via: str) -> None:
        """Change one light's state and note the change in its history."""
        if not change:
            return
        state = self.lights[lid]["state"]
        for key, value in change.items():
            if key == "transitiontime":
                continue
            if key.endswith("_inc"):
                base = key[: -len("_inc")]
                if base == "hue":
                    state["hue"] = (state["hue"] + value) % 65536
                else:
                    lo, hi = _RANGES[base]
                    state[base] = min(hi, max(lo, state[base] + value))
            elif key == "xy":  # as a real bridge: the nearest colour the light can show
                state["xy"] = list(colour.fit_gamut(value, colour.GAMUT_C))
                base = key
            else:
                state[key] = copy.deepcopy(value)
                base = key
            if base in _COLORMODE:
                state["colormode"] = _COLORMODE[base]
        self.history[lid].append({"at": time.time(), "via": via, "change": copy.deepcopy(change)})
