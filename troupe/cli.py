"""`troupe run | check | doctor | manifest | hue`: the command line of a bot's Pi, a thin layer
over the package. The development kit's commands (workspace, demo, hardware) are `troupe-dev`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from troupe import __version__

if TYPE_CHECKING:
    from troupe.bot import Bot


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


def _run(
    args: argparse.Namespace,
    bot_class: type[Bot] | None = None,
    prepare: Callable[[Bot], None] | None = None,
) -> int:
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
        bot = build_bot(fed, name, journal_path=args.journal, bot_class=bot_class)
        if prepare is not None:
            prepare(bot)
        asyncio.run(run_bot(bot))
    except (ConfigError, StartError) as err:
        print(error_line(f"troupe run: {err}"), file=sys.stderr)
        return 2
    return 0


def run_one(
    argv: Sequence[str],
    *,
    bot_class: type[Bot] | None = None,
    prepare: Callable[[Bot], None] | None = None,
) -> int:
    """`troupe run ARGV` with another Bot class and a step before it starts: for the
    development kit's bot runner (troupe.devkit.botrun), which adds faults and the demo page."""
    args = build_parser().parse_args(["run", *argv])
    status = start_logging(args)
    return status if status is not None else _run(args, bot_class, prepare)


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


def command_line(
    prog: str, description: str
) -> tuple[argparse.ArgumentParser, Any, argparse.ArgumentParser]:
    """A parser with --version and -v, its subcommands, and the parent that gives each
    subcommand -v too (troupe's and troupe-dev's command lines)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"troupe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    # -v after the subcommand too; SUPPRESS keeps a subcommand from resetting the one before it.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages"
    )
    return parser, parser.add_subparsers(dest="command", required=True), verbose


def build_parser() -> argparse.ArgumentParser:
    parser, sub, verbose = command_line(
        "troupe", "A federation of Slack bots that run a home from chat."
    )

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

    hue = sub.add_parser(
        "hue", parents=[verbose], help="Philips Hue tools: `troupe hue pair --bridge HOST:PORT`"
    )
    hue.add_argument("rest", nargs=argparse.REMAINDER, help="pair and its options")
    hue.set_defaults(func=_hue)
    return parser


def start_logging(args: argparse.Namespace) -> int | None:
    from troupe.systemd import configure_logging

    try:
        configure_logging(args.verbose)  # journald's prefixes under systemd; TROUPE_LOG_LEVEL
    except ValueError as err:
        print(f"troupe: {err}", file=sys.stderr)
        return 2
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status = start_logging(args)
    return status if status is not None else int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
