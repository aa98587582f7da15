"""The pin sweep lists pins only when a fleet pin may be left behind (troupe/pinwatch.py)."""

from __future__ import annotations

from botkit import HOME, USER_OF, home, run

from troupe.pinwatch import FULL_SWEEP_EVERY, PinWatch


def test_a_pin_up_past_the_horizon_or_a_gap_in_events_needs_a_sweep():
    watch = PinWatch()
    assert watch.needs_sweep(100.0)  # at start: events before it were never seen
    watch.swept(100.0)
    assert not watch.needs_sweep(100.0)
    watch.added(HOME, "150.000001")
    assert not watch.needs_sweep(100.0)  # its holder releases it at ts + linger
    assert watch.needs_sweep(200.0)  # it outlived its release: its holder may be dead
    watch.removed(HOME, "150.000001")
    assert not watch.needs_sweep(200.0)
    watch.reconnected()
    assert watch.needs_sweep(200.0)
    watch.swept(200.0)
    assert not watch.needs_sweep(200.0)


def test_a_sweep_forgets_the_pins_it_released_and_keeps_the_younger():
    watch = PinWatch()
    watch.added(HOME, "50.0")
    watch.added(HOME, "150.0")
    watch.swept(100.0)
    assert not watch.needs_sweep(100.0)
    assert watch.needs_sweep(150.0)


def test_an_event_lost_without_a_reconnect_is_caught_by_a_full_sweep_now_and_then():
    watch = PinWatch()
    watch.swept(0.0)
    rounds = 1
    while not watch.needs_sweep(0.0):
        rounds += 1
    assert rounds == FULL_SWEEP_EVERY


def test_the_fleet_lists_pins_only_when_one_is_left_behind(tmp_path):
    async def main(_loop):
        async with home(tmp_path) as h:
            linger = next(iter(h.bots.values())).settings.linger_s
            lists = lambda: sum(1 for _, m, _ in h.slack.calls if m == "pins.list")  # noqa: E731
            started = lists()
            assert started  # the sweep at start (and the schedules' records)
            await h.settle(5 * linger)
            assert lists() == started  # nothing said, nothing pinned: no sweep
            old = h.slack.post(HOME, "U0ALICE", "turn on the hall light")["ts"]
            pin = {"type": "message", "channel": HOME, "message": {"ts": old}}
            event = {"type": "pin_added", "user": USER_OF["kitchen-pi"], "item": pin}
            for transport in h.transports.values():
                transport.deliver({**event, "channel_id": HOME})
            await h.settle(3 * linger)
            assert lists() > started  # a fleet pin outlived its release: swept

    run(main)
