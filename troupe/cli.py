"""`troupe workspace | demo | ...`: the command line, a thin layer over the package."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from troupe import __version__


def _workspace(args: argparse.Namespace) -> int:
    from troupe.workspace.config import WorkspaceConfigError, demo_config, load_config
    from troupe.workspace.server import UnsafeBindError, build_workspace, start

    try:
        config = load_config(args.config) if args.config else demo_config()
    except WorkspaceConfigError as err:
        print(f"troupe workspace: {err}", file=sys.stderr)
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
        print(f"troupe workspace: {err}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from troupe.demo import run_demo
    from troupe.workspace.server import UnsafeBindError

    try:
        run_demo(args.host, args.port)
    except UnsafeBindError as err:
        print(f"troupe demo: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"troupe demo: cannot serve on {args.host}:{args.port} ({err}); "
            "stop what uses that port or pass --port",
            file=sys.stderr,
        )
        return 2
    return 0


def _hardware(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"troupe.hardware.{args.kind}")
    return int(module.main(args.rest) or 0)


def _hue(args: argparse.Namespace) -> int:
    from troupe.plugins.hue import main as hue_main

    return int(hue_main(args.rest) or 0)


def _federation_file(args: argparse.Namespace) -> str | None:
    """--config, else $TROUPE_FEDERATION, else /etc/troupe/federation.yaml if it exists."""
    from troupe.config import DEFAULT_PATH, default_path

    if args.config or os.environ.get("TROUPE_FEDERATION"):
        return str(args.config or default_path())
    if Path(DEFAULT_PATH).exists():
        return DEFAULT_PATH
    print(
        f"troupe {args.command}: no federation file: pass --config FILE, set TROUPE_FEDERATION, "
        f"or create {DEFAULT_PATH}",
        file=sys.stderr,
    )
    return None


def _run(args: argparse.Namespace) -> int:
    """Exit status 2 (which the unit does not restart on) when the start cannot work."""
    from troupe.config import ConfigError, load
    from troupe.runner import StartError, build_bot, run_bot
    from troupe.systemd import error_line

    config = _federation_file(args)
    if config is None:
        return 2
    try:
        fed = load(config)
        name = fed.resolve_bot_name(args.bot)
        bot = build_bot(fed, name, journal_path=args.journal)
        asyncio.run(run_bot(bot))
    except (ConfigError, StartError) as err:
        print(error_line(f"troupe run: {err}"), file=sys.stderr)
        return 2
    return 0


def _check(args: argparse.Namespace) -> int:
    from troupe.config import check

    config = _federation_file(args)
    if config is None:
        return 2
    problems = check(config, bot=args.bot)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{config}: ok")
    return 1 if problems else 0


def _doctor(args: argparse.Namespace) -> int:
    from troupe.doctor import diagnose

    config = _federation_file(args)
    if config is None:
        return 2
    findings = asyncio.run(diagnose(config, args.bot))
    for finding in findings:
        print(finding, flush=True)
    return 1 if any(f.level == "fail" for f in findings) else 0


def _manifest(args: argparse.Namespace) -> int:
    from troupe.manifest import main as manifest_main

    return manifest_main([args.bot, *(["--config", args.config] if args.config else [])])


FEDERATION_HELP = (
    "the federation file (default: $TROUPE_FEDERATION, then /etc/troupe/federation.yaml)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="troupe", description="A federation of Slack bots that run a home from chat."
    )
    parser.add_argument("--version", action="version", version=f"troupe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    # -v after the subcommand too; SUPPRESS keeps a subcommand from resetting the one before it.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages"
    )
    sub = parser.add_subparsers(dest="command", required=True)

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

    man = sub.add_parser(
        "manifest", parents=[verbose], help="print the Slack app manifest (YAML) for one bot"
    )
    man.add_argument("bot", help="the bot's name: the Pi's host name, like kitchen-pi")
    man.add_argument("--config", help="the federation file; checks that BOT is in its roster")
    man.set_defaults(func=_manifest)

    run = sub.add_parser("run", parents=[verbose], help="run one bot of the federation")
    run.add_argument("--config", help=FEDERATION_HELP)
    run.add_argument("--bot", help="this bot's name (default: $TROUPE_BOT, then the hostname)")
    run.add_argument("--journal", help="journal file (default: the federation file's journal)")
    run.set_defaults(func=_run)

    chk = sub.add_parser("check", parents=[verbose], help="validate a federation file")
    chk.add_argument("--config", help=FEDERATION_HELP)
    chk.add_argument("--bot", help="also read this bot's secrets, as it will on its Pi")
    chk.set_defaults(func=_check)

    doc = sub.add_parser(
        "doctor",
        parents=[verbose],
        help="check this bot's setup live: Slack, the MQTT broker, the Hue bridge, the GPIO",
    )
    doc.add_argument("--config", help=FEDERATION_HELP)
    doc.add_argument("--bot", help="this bot's name (default: $TROUPE_BOT, then the hostname)")
    doc.set_defaults(func=_doctor)

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

    hue = sub.add_parser(
        "hue", parents=[verbose], help="Philips Hue tools: `troupe hue pair --bridge HOST:PORT`"
    )
    hue.add_argument("rest", nargs=argparse.REMAINDER, help="pair and its options")
    hue.set_defaults(func=_hue)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from troupe.systemd import configure_logging

    try:
        configure_logging(args.verbose)  # journald's prefixes under systemd; TROUPE_LOG_LEVEL
    except ValueError as err:
        print(f"troupe: {err}", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
