"""Shared fixtures: a workspace on a free loopback port, stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from troupe import _imp_shim
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace

_imp_shim.install()  # tests import slackbot.bot, which imports `imp` (gone in 3.12)


@pytest.fixture
def workspace() -> Iterator[RunningWorkspace]:
    """The demo workspace served on 127.0.0.1 and a free port."""
    with running_workspace() as running:
        yield running
