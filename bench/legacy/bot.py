"""Run one slackbot 1.0.5 bot with the seed's plugin against a Slack-compatible Web API.

The only change to the libraries is the one the issue allows: slacker's get_api_url is
pointed at the workspace. Everything else (slackbot's RTM loop, its 10 worker threads,
slackmq's 3 s sleep in unack) is the real code. Prints "<name> ready" once slackbot says
it is connected, the line troupe's Fleet waits for. The token must be a classic app's
created before February 2021: slacker sends it in the URL query string, which Slack
refuses from younger apps.

    python -m bench.legacy.bot --name bot-1 --token xoxb-... --api-url http://127.0.0.1:PORT/api/
"""

from __future__ import annotations

import argparse
import logging
import os


class _Ready(logging.Handler):
    """Turns slackbot's "connected to slack RTM api" log line into the ready line."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.bot_name = name

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "connected to slack RTM api":
            print(f"{self.bot_name} ready (slackbot 1.0.5, slackmq 0.1.2)", flush=True)


class _Quiet(logging.Filter):
    """Drops slackbot's once-a-second EAGAIN warning from its non-blocking RTM read."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resource temporarily unavailable" not in record.getMessage()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--api-url", required=True)
    args = parser.parse_args()
    os.environ["LEGACY_BOT_NAME"] = args.name

    import slacker

    root = args.api_url if args.api_url.endswith("/") else args.api_url + "/"
    slacker.get_api_url = lambda method: root + method

    from slackbot import settings

    settings.API_TOKEN = args.token
    settings.PLUGINS = ["bench.legacy.plugin"]
    logging.basicConfig(level=logging.WARNING, format=f"{args.name} %(levelname)s %(message)s")
    logging.getLogger("slackbot.slackclient").addFilter(_Quiet())
    slackbot_log = logging.getLogger("slackbot.bot")
    slackbot_log.setLevel(logging.INFO)
    slackbot_log.addHandler(_Ready(args.name))

    from slackbot.bot import Bot

    Bot().run()


if __name__ == "__main__":
    main()
