"""The original SlackMQ 0.1.2 pattern in slackbot 1.0.5 bots, as the benchmark's baseline."""
