"""STUB: the workspace's state; to be written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class Store:
    def __init__(
        self,
        config: Any,
        state_path: str | Path | None = None,
        publish: Callable[..., None] | None = None,
    ) -> None:
        self.config = config

    def close(self) -> None:
        """Flush and close the state file, if any."""
