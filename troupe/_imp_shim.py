"""A stand-in for the `imp` module, which Python 3.12 removed and slackbot 1.0.5 imports.

slackbot.bot does `import imp` at the top but only calls it on Python 2, so an empty module
of that name is enough for slackbot plugins (`from slackbot.bot import listen_to`) and the
`rtm` mode to load on Python 3.12 and later. Call install() before slackbot is imported.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _removed(*_args: object, **_kwargs: object) -> None:
    raise ImportError(
        "imp was removed in Python 3.12 and troupe only stands in for its import; "
        "use importlib instead"
    )


def install() -> None:
    """Register the stand-in as `imp` if this Python has no `imp` of its own (3.12+)."""
    if "imp" in sys.modules or importlib.util.find_spec("imp") is not None:
        return
    stand_in = types.ModuleType("imp", __doc__)
    stand_in.find_module = _removed  # type: ignore[attr-defined]
    stand_in.load_module = _removed  # type: ignore[attr-defined]
    stand_in.load_source = _removed  # type: ignore[attr-defined]
    sys.modules["imp"] = stand_in
