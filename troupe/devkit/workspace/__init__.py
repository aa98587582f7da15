"""A local Slack-compatible workspace: Web API, Socket Mode, RTM and a web chat page.

Real Slack clients (slack_sdk, slackbot, slacker) cannot tell it apart from Slack for
everything troupe uses, so the demo and every test run without a Slack account.
"""

from troupe.devkit.workspace.config import WorkspaceConfig, demo_config, load_config

__all__ = ["WorkspaceConfig", "demo_config", "load_config"]
