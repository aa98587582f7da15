"""troupe: a federation of identical Slack bots that run a home from chat."""

__version__ = "0.1.0"
