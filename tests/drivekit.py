"""Driving a driver as the bot does: act(), then the answer the runtime words from its state."""

from __future__ import annotations

from troupe.federation import Action
from troupe.outcomes import Acted, render
from troupe.plugin import Driver


async def act(driver: Driver, action: Action) -> str:
    """The answer a bot gives after driver.act (the wording lives in troupe.outcomes)."""
    return render(Acted(action, await driver.act(action.device, action)))
