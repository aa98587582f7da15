"""`troupe-dev workspace | demo | hardware`: the development kit's command line.

What never runs on a Pi: the local Slack workspace, the demo house, the simulated hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from troupe.cli import command_line, start_logging


def _workspace(args: argparse.Namespace) -> int:
    from troupe.devkit.workspace.config import WorkspaceConfigError, demo_config, load_config
    from troupe.devkit.workspace.server import UnsafeBindError, build_workspace, start

    try:
        config = load_config(args.config) if args.config else demo_config()
    except WorkspaceConfigError as err:
        print(f"troupe-dev workspace: {err}", file=sys.stderr)
        return 2
    if args.allow_host:
        hosts = [*config.allowed_hosts, *args.allow_host]
        config = config.model_copy(update={"allowed_hosts": hosts})

    async def _serve() -> None:
        ws = build_workspace(config, args.state)
        runner, port = await start(ws, args.host, args.port)
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{port}/"
        print(f"workspace ready at {url} (Web API {url}api/)", flush=True)
        print(f"control token: {config.control_token}", flush=True)
        for human in config.humans:
            print(f"human {human.name}: {human.token}", flush=True)
        for app in config.apps:
            tokens = app.bot_token + (f" {app.app_token}" if app.app_token else "")
            print(f"app {app.name}: {tokens}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    try:
        asyncio.run(_serve())
    except UnsafeBindError as err:
        print(f"troupe-dev workspace: {err}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from troupe.devkit.demo import run_demo
    from troupe.devkit.workspace.server import UnsafeBindError

    try:
        run_demo(args.host, args.port)
    except UnsafeBindError as err:
        print(f"troupe-dev demo: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"troupe-dev demo: cannot serve on {args.host}:{args.port} ({err}); "
            "stop what uses that port or pass --port",
            file=sys.stderr,
        )
        return 2
    return 0


def _hardware(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"troupe.hardware.{args.kind}")
    return int(module.main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser, sub, verbose = command_line(
        "troupe-dev", "troupe's development kit: a local Slack, a demo house."
    )

    ws = sub.add_parser(
        "workspace", parents=[verbose], help="serve a local Slack-compatible workspace"
    )
    ws.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ws.add_argument("--port", type=int, default=3000, help="port to bind (default 3000)")
    ws.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests that name this host (e.g. a compose service name)",
    )
    ws.add_argument("--config", help="workspace YAML file (default: the demo workspace)")
    ws.add_argument("--state", help="SQLite file that keeps the workspace across restarts")
    ws.set_defaults(func=_workspace)

    demo = sub.add_parser(
        "demo", parents=[verbose], help="the local workspace, three bots and simulated devices"
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=3000, help="port (default 3000; 0 = any)")
    demo.set_defaults(func=_demo)
    hw = sub.add_parser(
        "hardware",
        parents=[verbose],
        help="simulated hardware: hue (a Hue bridge), mqtt (MQTT devices), broker (an MQTT broker)",
    )
    hw.add_argument("kind", choices=["hue", "mqtt", "broker"], help="which simulator")
    hw.add_argument("rest", nargs=argparse.REMAINDER, help="the simulator's own options")
    hw.set_defaults(func=_hardware)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status = start_logging(args)
    return status if status is not None else int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
