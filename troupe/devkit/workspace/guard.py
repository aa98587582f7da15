"""Host and Origin checks: the workspace answers only requests meant for it by its own pages.

A web page the user happens to visit can aim requests at 127.0.0.1: with a name of its
own that resolves there (DNS rebinding) it would read the answers, and with a plain form,
image or fetch it can post cross-site. So every request must name this workspace in Host
(a loopback name, the bound address or a configured name), and a request a browser marks
as coming from another site (Origin, or Sec-Fetch-Site for requests without Origin) is
refused. Clients that are not browsers (slack_sdk, slacker, websocket-client) send
neither header and are not affected.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
CROSS_SITE = frozenset({"cross-site", "same-site"})
"""Sec-Fetch-Site values of a request another site started ("same-site" is another port
or subdomain, which is another origin here)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_names(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names requests may use in Host: loopback, the bound address and `extra`."""
    names = set(LOOPBACK_NAMES) | {n.lower().strip("[]") for n in extra}
    if bind_host not in WILDCARD_BINDS:
        names.add(bind_host.lower().strip("[]"))
    return frozenset(names)


def _refuse(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=403)


def request_host(request: web.Request) -> str | None:
    """The host name the request names (without port or brackets), or None if unreadable."""
    try:
        host = request.url.host
    except ValueError:
        return None
    return host.lower().strip("[]") if host else None


def same_origin(request: web.Request, origin: str) -> bool:
    """Whether Origin is this workspace's own origin as the request addresses it."""
    return origin.lower() == f"{request.scheme}://{request.host}".lower()


def guard(names: frozenset[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """aiohttp middleware: 403 {"ok": false, "error": "invalid_host" | "invalid_origin"}."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request_host(request) not in names:
            log.debug("refused a request naming host %.80r", request.host)
            return _refuse("invalid_host")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not same_origin(request, origin):
            log.debug("refused a request from origin %.80r", origin)
            return _refuse("invalid_origin")
        if origin is None and request.headers.get("Sec-Fetch-Site", "") in CROSS_SITE:
            log.debug("refused a cross-site request without Origin to %s", request.path)
            return _refuse("invalid_origin")
        return await handler(request)

    return check
