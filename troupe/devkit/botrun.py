"""`python -m troupe.devkit.botrun --config F --bot NAME`: `troupe run` with the kit's extras.

The local fleet (troupe.devkit.fleet) starts bots with this instead of `troupe run`, so that
tests, the demo and the benchmark can ask, by environment variable, for what the runtime
never does by itself: $TROUPE_FAULTS (die-after-claim, die-mid-action), $TROUPE_TIMER_SCALE
(timed actions that many times faster) and $TROUPE_PAGE_URL + $TROUPE_PAGE_TOKEN (publish
device states to the local workspace's page). Without them it is exactly `troupe run`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from troupe.bot import Bot
from troupe.cli import run_one


def _timer_scale() -> float:
    try:
        return float(os.environ.get("TROUPE_TIMER_SCALE", "1"))
    except ValueError:
        return 1.0


def prepare(bot: Bot) -> None:
    """Attach the demo page's state publisher when the environment names the page."""
    from troupe.devkit.pagestates import PageStates

    page = PageStates.from_env()
    if page is not None:
        bot.services.append(page)


def main(argv: Sequence[str] | None = None) -> int:
    from troupe.devkit.faults import chaos_bot

    faults = [f for f in os.environ.get("TROUPE_FAULTS", "").split(",") if f]
    return run_one(
        list(argv if argv is not None else sys.argv[1:]),
        bot_class=chaos_bot(faults, _timer_scale()),
        prepare=prepare,
    )


if __name__ == "__main__":
    sys.exit(main())
