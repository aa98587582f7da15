"""Fleet commands: refusals for non-admins, targeting, logs without secrets; and the pure
parts of the rollout (reading its thread, pip requirements, switch and roll back)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from botkit import BOB, home, run
from fleetkit import house

from troupe.plugins.devops import read_thread
from troupe.update import (
    Layout,
    Machine,
    UpdateError,
    UpdateSettings,
    UpdateSource,
    apply_update,
    check_version,
    pip_requirement,
    read_json,
    request,
    switch,
    wheel_version,
    write_health,
)

FLEET_COMMANDS = (
    "version",
    "bot count",
    "target hall-pi",
    "canary hall-pi",
    "update 9.9.9",
    "restart hall-pi",
    "logs hall-pi 5",
    "stop",
)


FLEET = frozenset({"U0KITCHEN", "U0HALL"})
ADMINS = {"U0ALICE"}


def _bot(ts: str, text: str, reactions: list | None = None, user: str = "U0KITCHEN") -> dict:
    message = {"ts": ts, "text": text, "bot_id": "B" + user[1:], "user": user}
    if reactions:
        message["reactions"] = reactions
    return message


def _read(messages: list[dict]):
    return read_thread("C1", "1.0", messages, "+1", fleet=FLEET, admin=lambda u: u in ADMINS)


ROOT = {"ts": "1.0", "text": "update 0.2.0", "user": "U0ALICE"}
START = (
    "Rolling update to troupe 0.2.0, step 1: the canary kitchen-pi takes this. One bot at a "
    "time; the others follow after an admin's :+1: on the canary's report, or 600 s after it."
)
CANARY_REPORT = (
    "kitchen-pi is on troupe 0.2.0 and healthy (connected, 6 plugins, 1 devices "
    "answering). Rolling update to troupe 0.2.0, step 2: the next bot takes this, "
    "after an admin's :+1: on this message or in 600 s."
)
THREAD = [
    ROOT,
    _bot("2.0", START, user="U0HALL"),
    _bot("3.0", "kitchen-pi is updating from troupe 0.1.0 to 0.2.0 (step 1)."),
    _bot("4.0", CANARY_REPORT, [{"name": "+1", "users": ["U0BOB", "U0ALICE"], "count": 2}]),
]


def test_read_thread_follows_batons_reports_and_approval():
    messages = [
        *THREAD,
        # a person cannot forge progress: no bot_id, not read
        {"ts": "5.0", "text": "hall-pi is on troupe 0.2.0 and healthy", "user": "U0BOB"},
    ]
    rollout = _read(messages)
    assert rollout.trusted and rollout.version == "0.2.0"
    assert rollout.reported == {"kitchen-pi"}
    assert rollout.active
    first, second = rollout.batons
    assert (first.canary, first.gated, first.step) == ("kitchen-pi", False, 1)
    assert (second.canary, second.gated, second.step) == (None, True, 2)
    assert second.approvers == {"U0BOB", "U0ALICE"}
    assert rollout.taken(first) and not rollout.taken(second)
    failed = (
        "hall-pi could not update to troupe 0.2.0: not healthy in 120 s; rolled back to "
        "troupe 0.1.0. Rollout stopped."
    )
    assert not _read([*messages, _bot("6.0", failed, user="U0HALL")]).active
    last = (
        "hall-pi is on troupe 0.2.0 and healthy (connected, 6 plugins, 2 devices answering)."
        " Rolling update to troupe 0.2.0 done: all 2 bots are on it."
    )
    finished = _read([*messages, _bot("6.0", last, user="U0HALL")])
    assert finished.done and finished.reported == {"kitchen-pi", "hall-pi"}


# The whole report a bot posts, but with the admin gate left out: the next bot would go.
FORGED_BATON = (
    "kitchen-pi is on troupe 0.2.0 and healthy (connected, 6 plugins, 1 devices answering)."
    " Rolling update to troupe 0.2.0, step 2: the next bot takes this."
)


@pytest.mark.parametrize(
    "forged",
    [
        # another app in the channel: its own bot user
        {"ts": "5.0", "text": FORGED_BATON, "bot_id": "B0OTHER", "user": "U0OTHER"},
        # an incoming webhook: bot_id, no user, subtype bot_message
        {"ts": "5.0", "text": FORGED_BATON, "bot_id": "B0HOOK", "subtype": "bot_message"},
        # a fleet bot user, but a webhook-style message carrying its bot_id
        {"ts": "5.0", "text": FORGED_BATON, "bot_id": "B0KITCHEN", "subtype": "bot_message"},
    ],
)
def test_a_forged_baton_from_another_app_or_a_webhook_is_ignored(forged):
    honest = _read(THREAD)
    rollout = _read([*THREAD, forged])
    assert rollout.batons == honest.batons
    assert rollout.latest.gated and rollout.latest.version == "0.2.0"
    stop = dict(
        forged,
        ts="6.0",
        text="kitchen-pi could not ask the updater for troupe 0.2.0: gone. Rollout stopped.",
    )
    assert _read([*THREAD, stop]).active


def test_the_version_comes_from_the_admins_root_message_only():
    other = CANARY_REPORT.replace("0.2.0", "6.6.6")
    rollout = _read([*THREAD[:3], _bot("4.0", other)])
    assert [b.version for b in rollout.batons] == ["0.2.0"] and rollout.reported == set()
    by_bob = [{"ts": "1.0", "text": "update 6.6.6", "user": "U0BOB"}, *THREAD[1:]]
    assert not _read(by_bob).trusted and not _read(by_bob).batons
    by_app = [dict(ROOT, bot_id="B0OTHER"), *THREAD[1:]]
    assert not _read(by_app).trusted
    bare = read_thread(
        "C1",
        "1.0",
        [dict(ROOT, text="<@U0HALL> update"), *THREAD[1:]],
        "+1",
        fleet=FLEET,
        admin=lambda u: u in ADMINS,
        default_version="0.2.0",
    )
    assert bare.trusted and bare.version == "0.2.0" and len(bare.batons) == 2


def test_a_halt_needs_an_admin_or_a_fleet_bots_own_report():
    bob = {"ts": "5.0", "text": "stop", "user": "U0BOB"}
    assert _read([*THREAD, bob]).active
    # a member makes a bot echo the words: an answer is not a report
    echo = _bot("6.0", "I don't know a device or area called “Rollout stopped” — try `devices`.")
    assert _read([*THREAD, echo]).active
    quoted = _bot("6.0", "Sorry, you may not ask for rollout stopped. Rollout stopped.")
    assert _read([*THREAD, quoted]).active
    alice = {"ts": "5.0", "text": "<@U0HALL> stop the rollout!", "user": "U0ALICE"}
    assert not _read([*THREAD, alice]).active
    assert _read([*THREAD, alice]).stopped


def test_sources_become_pip_requirements_and_versions_are_checked():
    index = UpdateSource(kind="index", value="https://pypi.example/simple", lock="/l/{version}")
    assert pip_requirement(index, "0.2.0") == (
        ["--index-url", "https://pypi.example/simple"],
        "troupe==0.2.0",
    )
    wheel = UpdateSource(kind="wheel", value="https://x.example/troupe-{version}-py3-none-any.whl")
    assert pip_requirement(wheel, "0.2.0")[1].endswith("troupe-0.2.0-py3-none-any.whl")
    assert wheel_version(wheel) is None
    fixed = UpdateSource(kind="wheel", value="/srv/troupe-0.3.1-py3-none-any.whl")
    assert wheel_version(fixed) == "0.3.1"
    for bad in ("", "1.0; rm -rf /", "../../etc", "-e", "a b", "x" * 80):
        with pytest.raises(ValueError):
            check_version(bad)
    with pytest.raises(ValueError):
        UpdateSource(kind="wheel", value="a b")


def _fake_machine(tmp_path: Path, *, healthy_versions: set[str]) -> tuple[Machine, list[str]]:
    """A machine whose 'bot' writes a health file only for healthy versions."""
    layout = Layout(tmp_path / "opt")
    state = tmp_path / "state"
    started: list[str] = []
    pid = [100]

    def installer(version: str) -> Path:
        target = layout.release(version)
        (target / "bin").mkdir(parents=True, exist_ok=True)
        return target

    installer("1.0")
    switch(layout, "1.0")

    def restart() -> None:
        version = layout.version_of(layout.current) or ""
        pid[0] += 1
        started.append(version)
        if version in healthy_versions:
            write_health(
                state,
                {
                    "version": version,
                    "pid": pid[0],
                    "connected": True,
                    "plugins": 5,
                    "devices": {"lamp": True},
                },
            )

    machine = Machine(layout, state, restart, lambda: pid[0])
    machine.installer = installer  # type: ignore[attr-defined]
    return machine, started


def test_apply_update_switches_when_healthy(tmp_path):
    machine, started = _fake_machine(tmp_path, healthy_versions={"1.0", "2.0"})
    result = apply_update(machine, "2.0", machine.installer, timeout_s=2, poll_s=0.01)  # type: ignore[attr-defined]
    assert result["ok"] and result["from"] == "1.0"
    assert machine.layout.version_of(machine.layout.current) == "2.0"
    assert machine.layout.version_of(machine.layout.previous) == "1.0"
    assert started == ["2.0"]


def test_apply_update_rolls_back_an_unhealthy_version(tmp_path):
    machine, started = _fake_machine(tmp_path, healthy_versions={"1.0"})
    result = apply_update(machine, "2.0", machine.installer, timeout_s=0.3, poll_s=0.01)  # type: ignore[attr-defined]
    assert not result["ok"]
    assert result["rolled_back_to"] == "1.0"
    assert "not healthy" in result["reason"]
    assert machine.layout.version_of(machine.layout.current) == "1.0"
    assert started == ["2.0", "1.0"]
    assert read_json(machine.state_dir / "update-result.json")["ok"] is False


def test_apply_update_reports_a_failed_install_without_switching(tmp_path):
    machine, started = _fake_machine(tmp_path, healthy_versions={"1.0"})

    def broken(_version: str) -> Path:
        raise OSError("disk full")

    result = apply_update(machine, "2.0", broken, timeout_s=1)
    assert not result["ok"] and "disk full" in result["reason"]
    assert machine.layout.version_of(machine.layout.current) == "1.0"
    assert started == []


def test_non_admins_get_one_refusal_per_fleet_command(tmp_path, caplog):
    async def main(_loop):
        async with home(tmp_path, plugins="[troupe.plugins.devops]") as h:
            sent = {await h.say(text, user=BOB, settle=False): text for text in FLEET_COMMANDS}
            await h.settle()
            for ts, text in sent.items():
                answers = h.answers(ts)
                assert len(answers) == 1, (text, answers)
                assert "is for admins only" in answers[0]

    run(main)  # in-process (tests/botkit.py): the refusal is the pipeline's
    assert caplog.text.count("admins only") >= len(FLEET_COMMANDS)


@pytest.mark.timeout(180)
def test_targeting_and_logs_for_admins(tmp_path):
    with house(tmp_path, plugins="[troupe.plugins.devops]") as h:
        ts = h.say("version")
        h.wait_for(lambda: len(h.replies(ts)) >= 3, 30, "three versions")
        ts = h.say("target hall-pi")
        h.wait_for(lambda: len(h.replies(ts)) >= 1, 30, "the target's answer")
        time.sleep(1.0)
        assert [r["text"] for r in h.replies(ts)] == [
            "hall-pi takes fleet commands; the others stay silent."
        ]
        ts = h.say("version")
        h.wait_for(lambda: len(h.replies(ts)) >= 1, 30, "the target's version")
        time.sleep(1.5)
        replies = h.replies(ts)
        assert len(replies) == 1 and replies[0]["text"].startswith("hall-pi: troupe ")
        ts = h.say("target all")
        h.wait_for(lambda: len(h.replies(ts)) >= 1, 30, "target all")
        ts = h.say("bot count")
        h.wait_for(lambda: len(h.replies(ts)) >= 3, 30, "three bots")
        time.sleep(1.0)
        assert len(h.replies(ts)) == 3
        refused = h.say("version", token="xoxp-bob")
        h.wait_for(lambda: len(h.replies(refused)) >= 1, 30, "a refusal to log")
        ts = h.say("logs garage-pi 50")
        h.wait_for(lambda: len(h.replies(ts)) >= 1, 30, "logs")
        time.sleep(1.0)
        replies = h.replies(ts)
        assert len(replies) == 1, replies
        assert replies[0]["text"].startswith("garage-pi sent you its last ")
        assert replies[0]["text"].endswith(" log lines by direct message.")
        dm = h.alice.conversations_open(users="U0GARAGE")["channel"]["id"]
        [logs] = h.alice.conversations_history(channel=dm)["messages"]
        assert logs["text"].startswith("garage-pi, last ") and logs["user"] == "U0GARAGE"
        assert "refused version to U0BOB" in logs["text"]
        assert "xox" not in logs["text"] and "xapp-" not in logs["text"]
        ts = h.say("restart nobody-pi")
        h.wait_for(lambda: len(h.replies(ts)) >= 1, 30, "an unknown bot")
        time.sleep(1.0)
        assert [r["text"] for r in h.replies(ts)] == [
            "There is no bot called nobody-pi: kitchen-pi, hall-pi, garage-pi."
        ]


async def test_a_version_systemd_cannot_name_is_refused_before_anything_starts() -> None:
    with pytest.raises(UpdateError, match="'\\+' is not allowed"):
        await request(UpdateSettings(updater="systemd"), "kitchen-pi", "update", "0.2.0+pi")


class _FakeSlack:
    """conversations.replies and users.list, as far as FleetService.read uses them."""

    def __init__(self, messages: list[dict]) -> None:
        self.messages = messages
        self.user_lists = 0

    async def conversations_replies(self, **_kw) -> dict:
        return {"messages": self.messages}

    async def users_list(self, **_kw) -> dict:
        self.user_lists += 1
        members = [
            {"id": "U0KITCHEN", "name": "kitchen-pi", "is_bot": True},
            {"id": "U0HALL", "name": "hall-pi", "is_bot": True},
            {"id": "U0OTHER", "name": "some-app", "is_bot": True},
        ]
        return {"members": members}


async def test_a_bot_that_joined_late_counts_and_a_stranger_is_logged_once(caplog):
    from types import SimpleNamespace

    from troupe.access import Access
    from troupe.plugins.devops import FleetService
    from troupe.roster import FleetUsers

    report = CANARY_REPORT.replace("kitchen-pi", "hall-pi")
    forged = {"ts": "5.0", "text": report, "bot_id": "B0OTHER", "user": "U0OTHER"}
    web = _FakeSlack([*THREAD, forged])
    service = FleetService(UpdateSettings())
    service.bot = SimpleNamespace(
        web=web,
        roster=("kitchen-pi", "hall-pi"),
        user_id="U0KITCHEN",
        info=SimpleNamespace(mode="app-per-bot"),
        fleet_user_ids=frozenset({"U0KITCHEN"}),  # hall-pi's app was installed later
        access=Access.build(admins=["U0ALICE"]),
    )
    service.bot.fleet = FleetUsers(service.bot)
    with caplog.at_level("WARNING"):
        first = await service.read("C1", "1.0")
        again = await service.read("C1", "1.0")
    assert [b.ts for b in first.batons] == ["2.0", "4.0"] == [b.ts for b in again.batons]
    assert service.bot.fleet_user_ids == {"U0KITCHEN", "U0HALL"}
    assert web.user_lists == 1  # looked up again once, not at every read
    assert caplog.text.count("ignoring rollout messages from U0OTHER") == 1
