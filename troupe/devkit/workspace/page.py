"""The workspace's web chat page: `GET /`, its static files and small JSON endpoints.

The page is a plain Slack client in the browser: it talks to the same Web API and RTM as
any other client, with a human's token. The only things it gets from here that real Slack
would not give are the demo humans' tokens (`GET /page/humans`, loopback only: it is a local
dev tool) and the devices board (`GET /page/devices`, 404 until someone publishes states).

Device states are published either in-process with `devices_board(app).publish(...)` or,
from another process (the demo's bots), with
`POST /page/devices` (Authorization: Bearer <control token>) and a JSON body
`{"id": "kitchen lamp", "name": "kitchen lamp", "room": "kitchen", "state": "on"}` to set one
device, `{"id": ..., "remove": true}` to forget one, or `{"devices": [{...}, ...]}` to
replace them all. The state is shown as given: a string, a boolean (on/off) or a dict.
`GET /page/scheduled` lists the fleet's schedules as the bots keep them: the pinned
records (troupe.schedulestore) that a fleet bot pinned.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from troupe.devkit.workspace.core import Workspace
from troupe.schedulestore import RECORD

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = frozenset({"app.js", "style.css", "favicon.svg"})
LOOPBACK_ADDRESSES = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

# The page may load nothing but itself: no CDN, no fonts, no images from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class DevicesBoard:
    """Device states shown in the page's "Devices" panel, keyed by device id.

    Nothing is served (404) until the first `publish`, so the page hides the panel in a
    workspace that has no devices.
    """

    def __init__(self) -> None:
        self._devices: dict[str, dict[str, Any]] | None = None

    def publish(self, device_id: str, device: Mapping[str, Any]) -> None:
        """Set one device: {"name", "room"?, "state", ...}, shown as given."""
        if self._devices is None:
            self._devices = {}
        self._devices[device_id] = {**device, "id": device_id}

    def remove(self, device_id: str) -> None:
        """Forget one device."""
        if self._devices is not None:
            self._devices.pop(device_id, None)

    def replace(self, devices: list[Mapping[str, Any]]) -> None:
        """Replace every device at once (each needs an "id")."""
        self._devices = {}
        for device in devices:
            self.publish(str(device["id"]), device)

    def snapshot(self) -> list[dict[str, Any]] | None:
        """The devices in publishing order, or None when nothing was ever published."""
        return None if self._devices is None else list(self._devices.values())


DEVICES = web.AppKey("troupe_page_devices", DevicesBoard)


def devices_board(app: web.Application) -> DevicesBoard:
    """The application's devices board, for whoever publishes device states."""
    return app[DEVICES]


def is_local_request(request: web.Request) -> bool:
    """True when the request comes from this machine and names it in Host.

    Checking Host as well as the peer keeps a web page of another origin that resolves
    its name to 127.0.0.1 (DNS rebinding) from reading the tokens.
    """
    try:
        host = request.url.host or ""
    except ValueError:
        return False
    return request.remote in LOOPBACK_ADDRESSES and host.strip("[]") in LOOPBACK_HOSTS


def setup(app: web.Application, ws: Workspace) -> None:
    """Register `GET /`, `GET /static/<file>`, `GET /page/humans`, `GET /page/devices` and
    `GET /page/scheduled`."""
    app[DEVICES] = DevicesBoard()

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers=_page_headers())

    async def humans(request: web.Request) -> web.Response:
        if not is_local_request(request):
            return web.json_response({"ok": False, "error": "not_allowed"}, status=403)
        body = [
            {"id": h.id, "name": h.name, "real_name": h.real_name or h.name, "token": h.token}
            for h in ws.config.humans
        ]
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def devices(request: web.Request) -> web.Response:
        snapshot = request.app[DEVICES].snapshot()
        if snapshot is None:
            return web.json_response({"ok": False, "error": "no_devices"}, status=404)
        return web.json_response({"ok": True, "devices": snapshot})

    async def publish_devices(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {ws.config.control_token}".encode()):
            return web.json_response({"ok": False, "error": "invalid_auth"}, status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"ok": False, "error": "invalid_json"}, status=400)
        error = _devices_body_error(body)
        if error:
            return web.json_response({"ok": False, "error": error}, status=400)
        board = request.app[DEVICES]
        if "devices" in body:
            board.replace(body["devices"])
        elif body.get("remove") is True:
            board.remove(str(body["id"]))
        else:
            board.publish(str(body["id"]), {k: v for k, v in body.items() if k != "id"})
        return web.json_response({"ok": True, "devices": board.snapshot()})

    async def scheduled(request: web.Request) -> web.Response:
        """The fleet's schedules, read as every bot reads them: the pinned records."""
        return web.json_response({"ok": True, "scheduled": scheduled_items(ws)})

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC_DIR / name, headers=_page_headers())

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/page/humans", humans)
    app.router.add_get("/page/devices", devices)
    app.router.add_post("/page/devices", publish_devices)
    app.router.add_get("/page/scheduled", scheduled)


def scheduled_items(ws: Workspace) -> list[dict[str, Any]]:
    """Every channel's pinned schedule records (troupe.schedulestore), by number."""
    items = []
    for conf in ws.config.channels:
        for pin in ws.store.pins(conf.id):
            found = RECORD.match(str(pin["message"].get("text") or ""))
            if found is not None and ws.store.app_for_user(str(pin.get("created_by"))):
                items.append(
                    {
                        "id": int(found["id"]),
                        "when": found["when"],
                        "command": found["command"],
                        "owner": found["owner"],
                        "channel": conf.name,
                    }
                )
    return sorted(items, key=lambda item: item["id"])


def _devices_body_error(body: object) -> str | None:
    """Why a POST /page/devices body cannot be used, or None when it can."""
    if not isinstance(body, dict):
        return "invalid_arguments"
    if "devices" in body:
        devices = body["devices"]
        if not isinstance(devices, list):
            return "invalid_arguments"
        if not all(isinstance(d, dict) and isinstance(d.get("id"), str | int) for d in devices):
            return "invalid_arguments"
        return None
    if not isinstance(body.get("id"), str | int) or isinstance(body.get("id"), bool):
        return "invalid_arguments"
    return None


def _page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
