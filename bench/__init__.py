"""The benchmark and chaos harness: troupe against the original SlackMQ 0.1.2, same workload."""
