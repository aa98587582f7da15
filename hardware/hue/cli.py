"""`troupe-dev hardware hue`: serve a simulated Hue bridge until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from troupe.hardware.hue.model import KINDS, LINK_WINDOW_S, MAX_LIGHTS, BridgeModel, default_layout
from troupe.hardware.hue.server import start

# --- the command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="troupe-dev hardware hue", description="Serve a simulated Philips Hue bridge (API v1)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument(
        "--lights", type=int, default=4, help=f"number of lights, 1-{MAX_LIGHTS} (default 4)"
    )
    parser.add_argument(
        "--username",
        action="append",
        default=[],
        help="a username the bridge already knows (repeatable), so no pairing is needed",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`troupe-dev hardware hue --port PORT [--lights N] [--username NAME]`."""
    args = build_parser().parse_args(argv)
    try:
        lights, groups = default_layout(args.lights)
    except ValueError as err:
        print(f"troupe-dev hardware hue: {err}", file=sys.stderr)
        return 2
    model = BridgeModel(lights, groups, usernames=args.username)

    async def _serve() -> None:
        if args.host not in ("127.0.0.1", "::1", "localhost"):
            print(
                f"WARNING: the Hue simulator is bound to {args.host}: anyone who can reach it "
                "can switch its lights and its fault switches.",
                file=sys.stderr,
            )
        runner, port, _switches = await start(model, args.host, args.port)
        print(f"hue bridge ready at {args.host}:{port} ({len(lights)} lights)", flush=True)
        for lid, (name, kind) in enumerate(lights, start=1):
            print(f"light {lid}: {name} ({KINDS[kind].type})", flush=True)
        for gid, group in model.groups.items():
            print(f"group {gid}: {group['name']} ({group['type']})", flush=True)
        for user in args.username:
            print(f"username: {user}", flush=True)
        print(f"link button pressed for {LINK_WINDOW_S:.0f} s", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    try:
        asyncio.run(_serve())
    except OSError as err:
        print(
            f"troupe-dev hardware hue: cannot serve on {args.host}:{args.port}: {err.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0
