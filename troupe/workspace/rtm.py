"""STUB: to be written (see the module contract in the helper brief)."""

from aiohttp import web

from troupe.workspace.core import Workspace


def setup(app: web.Application, ws: Workspace) -> None:
    """Register this part's routes on the application."""
