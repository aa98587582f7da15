"""The development kit: what never runs on a Pi.

The local Slack workspace (workspace/), the demo house (demo), a fleet of bot processes
(fleet, botrun), a stand-in for systemd (supervisor), fault injection (faults), an in-memory
lock (memorylock) and the demo page's state publisher (pagestates). The runtime (the rest of
troupe/) never imports from here; tests, the demo and the benchmark do.
"""
