"""Shared fixtures: a workspace on a free loopback port, stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from troupe.workspace.testing import RunningWorkspace, running_workspace


@pytest.fixture
def workspace() -> Iterator[RunningWorkspace]:
    """The demo workspace served on 127.0.0.1 and a free port."""
    with running_workspace() as running:
        yield running
