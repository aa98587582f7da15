"""The fleet's own bot users: found by their unique Slack user name, looked up again
(rarely) when an unknown bot user speaks."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from slack_sdk.web.async_client import AsyncWebClient

from troupe.devkit.workspace.config import App, demo_config
from troupe.devkit.workspace.testing import running_workspace
from troupe.roster import FleetUsers, fleet_user_ids

ROSTER = ("kitchen-pi", "hall-pi", "garage-pi")


async def test_the_roster_bots_users_are_the_fleet(caplog):
    # another app named much like a bot, and a roster bot with no app yet
    config = demo_config()
    impostor = App(id="A0EVIL", name="kitchen-pi-2", bot_user_id="U0EVIL", bot_token="xoxb-evil")
    config = config.model_copy(update={"apps": [*config.apps, impostor]})
    with running_workspace(config) as ws:
        web = AsyncWebClient("xoxb-kitchen", base_url=ws.api_url)
        fleet = await fleet_user_ids(web, ROSTER, "U0KITCHEN", "app-per-bot")
        assert fleet == {"U0KITCHEN", "U0HALL", "U0GARAGE"}
        shared = AsyncWebClient("xoxb-troupe", base_url=ws.api_url)
        assert await fleet_user_ids(shared, ROSTER, "U0TROUPE", "shared-app") == {"U0TROUPE"}
        with caplog.at_level(logging.WARNING, logger="troupe.roster"):
            fewer = await fleet_user_ids(web, (*ROSTER, "attic-pi"), "U0KITCHEN", "app-per-bot")
        assert fewer == fleet
        assert "no Slack bot user named attic-pi" in caplog.text


async def test_an_unknown_bot_user_makes_the_fleet_be_looked_up_again_rarely():
    with running_workspace() as ws:
        web = AsyncWebClient("xoxb-kitchen", base_url=ws.api_url)
        bot = SimpleNamespace(
            web=web,
            roster=ROSTER,
            user_id="U0KITCHEN",
            info=SimpleNamespace(mode="app-per-bot"),
            fleet_user_ids=frozenset({"U0KITCHEN"}),  # as if hall-pi's app came later
        )
        users = FleetUsers(bot)
        assert await users.recheck({"U0HALL"}) == {"U0KITCHEN", "U0HALL", "U0GARAGE"}
        bot.fleet_user_ids = frozenset({"U0KITCHEN"})
        assert await users.recheck({"U0HALL"}) == {"U0KITCHEN"}  # not again within a minute
        assert await users.recheck({"U0KITCHEN"}) == {"U0KITCHEN"}
