"""The simulated Hue bridge over HTTP (aiohttp), its fault switches, a threaded runner for tests.

Switches a test flips: `down` (the bridge hangs like one that lost power) and `garbage`
(it answers non-JSON or the wrong shapes, like some other device at the bridge's address).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from troupe.hardware.hue.model import (
    GARBAGE_HTML,
    GARBAGE_MODES,
    HANG_LIMIT_S,
    BridgeModel,
    Garbage,
    GroupSpec,
    default_layout,
)

# --- HTTP -----------------------------------------------------------------------------------


@dataclass
class Switches:
    """The faults a test turns on; change them on the server's loop only."""

    down: bool = False
    garbage: Garbage | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def set_down(self, down: bool) -> None:
        self.down = down
        if not down:
            self.release()

    def release(self) -> None:
        """Let go of the requests held while down (their connections are dropped)."""
        self.wake.set()
        self.wake = asyncio.Event()


MODEL_KEY = web.AppKey("hue_model", BridgeModel)
SWITCHES_KEY = web.AppKey("hue_switches", Switches)


async def _hang(request: web.Request, switches: Switches) -> web.StreamResponse:
    """A bridge without power: the request gets no answer, and the connection is dropped."""
    waiter = asyncio.ensure_future(switches.wake.wait())
    try:
        await asyncio.wait({waiter}, timeout=HANG_LIMIT_S)
    finally:
        waiter.cancel()
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=503)


def _wrong_shape(method: str) -> Any:
    return ["unexpected"] if method == "GET" else {"result": "ok"}


async def _api(request: web.Request) -> web.StreamResponse:
    switches = request.app[SWITCHES_KEY]
    if switches.down:
        return await _hang(request, switches)
    body = await request.read()
    if switches.garbage == "text":
        return web.Response(text=GARBAGE_HTML, content_type="text/html")
    if switches.garbage == "shape":
        return web.json_response(_wrong_shape(request.method))
    answer = request.app[MODEL_KEY].handle(request.method, request.path, body)
    return web.json_response(answer)


def _bad(message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=400)


async def _control_body(request: web.Request) -> dict[str, Any] | None:
    try:
        data = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


async def _linkbutton(request: web.Request) -> web.Response:
    request.app[MODEL_KEY].press_link_button()
    return web.json_response({"ok": True, "linkbutton": True})


async def _counts(request: web.Request) -> web.Response:
    return web.json_response(request.app[MODEL_KEY].snapshot())


async def _down(request: web.Request) -> web.Response:
    data = await _control_body(request)
    if data is None or not isinstance(data.get("down"), bool):
        return _bad('send {"down": true} or {"down": false}')
    request.app[SWITCHES_KEY].set_down(data["down"])
    return web.json_response({"ok": True, "down": data["down"]})


async def _garbage(request: web.Request) -> web.Response:
    data = await _control_body(request)
    mode = data.get("mode") if data is not None else "?"
    if mode is not None and mode not in GARBAGE_MODES:
        return _bad('send {"mode": "text"}, {"mode": "shape"} or {"mode": null}')
    request.app[SWITCHES_KEY].garbage = mode
    return web.json_response({"ok": True, "mode": mode})


async def _reachable(request: web.Request) -> web.Response:
    data = await _control_body(request)
    if data is None or not isinstance(data.get("reachable"), bool):
        return _bad('send {"light": "1", "reachable": false}')
    try:
        request.app[MODEL_KEY].set_reachable(str(data.get("light")), data["reachable"])
    except KeyError as err:
        return _bad(str(err.args[0]))
    return web.json_response({"ok": True})


def build_app(model: BridgeModel, switches: Switches | None = None) -> web.Application:
    """The bridge's HTTP API (/api/...) and the simulator's control routes (/sim/...)."""
    app = web.Application(client_max_size=64 * 1024)
    app[MODEL_KEY] = model
    app[SWITCHES_KEY] = switches or Switches()
    app.router.add_post("/linkbutton", _linkbutton)
    app.router.add_get("/sim/counts", _counts)
    app.router.add_post("/sim/down", _down)
    app.router.add_post("/sim/garbage", _garbage)
    app.router.add_post("/sim/reachable", _reachable)
    app.router.add_route("*", "/api", _api)
    app.router.add_route("*", "/api/{tail:.*}", _api)

    async def _release(app: web.Application) -> None:
        app[SWITCHES_KEY].release()

    app.on_shutdown.append(_release)
    return app


async def start(
    model: BridgeModel, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int, Switches]:
    """Serve the bridge; returns the runner (call .cleanup()), the bound port, the switches."""
    switches = Switches()
    runner = web.AppRunner(
        build_app(model, switches), access_log=None, handle_signals=False, shutdown_timeout=5
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound, switches


# --- in a background thread, for tests ------------------------------------------------------


@dataclass
class RunningBridge:
    """A simulated bridge serving on 127.0.0.1; `address` is what phue.Bridge takes."""

    model: BridgeModel
    switches: Switches
    host: str
    port: int
    loop: asyncio.AbstractEventLoop

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def set_down(self, down: bool) -> None:
        """Down: requests hang with no answer (a bridge without power)."""
        self._on_loop(self.switches.set_down, down)

    def set_garbage(self, mode: Garbage | None) -> None:
        """ "text": answer HTML; "shape": answer JSON of the wrong shape; None: normal."""
        self._on_loop(setattr, self.switches, "garbage", mode)


@contextmanager
def running_bridge(
    lights: int | Sequence[tuple[str, str]] = 4,
    groups: Sequence[GroupSpec] | None = None,
    *,
    usernames: Sequence[str] = (),
    link_pressed: bool = True,
    clock: Callable[[], float] = time.monotonic,
    host: str = "127.0.0.1",
) -> Iterator[RunningBridge]:
    """Serve a simulated bridge on a free port for the duration of the with-block."""
    if isinstance(lights, int):
        light_list, default_groups = default_layout(lights)
    else:
        light_list, default_groups = list(lights), []
    model = BridgeModel(
        light_list,
        default_groups if groups is None else groups,
        usernames=usernames,
        link_pressed=link_pressed,
        clock=clock,
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def _thread() -> None:
        asyncio.set_event_loop(loop)
        try:
            runner, port, switches = loop.run_until_complete(start(model, host, 0))
        except BaseException as err:  # reported to the caller below
            box["error"] = err
            ready.set()
            return
        box.update(port=port, switches=switches)
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=_thread, name="hue-bridge", daemon=True)
    thread.start()
    if not ready.wait(timeout=30):
        raise TimeoutError("the Hue bridge simulator did not start within 30 s")
    if "error" in box:
        raise box["error"]
    try:
        yield RunningBridge(model, box["switches"], host, box["port"], loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
