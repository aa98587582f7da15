"""Access control: who may command what, where; each refusal answered once and logged."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from fleetkit import house
from slack_sdk import WebClient

from troupe.access import OUTSIDER, Access, Person
from troupe.devkit.workspace.config import Human

RULES = [
    SimpleNamespace(users=("U0BOB",), channels=("*",), what=("garage",), allow=False),
    SimpleNamespace(users=("*",), channels=("#kitchen",), what=("hall light",), allow=False),
]


def test_first_matching_rule_decides_and_admins_may_do_anything():
    access = Access.build(admins=["U0ALICE"], users=["U0ALICE", "U0BOB"], rules=RULES)
    home = {"C0HOME", "#home"}
    assert access.decide("U0BOB", home, {"garage light", "garage"}).allowed is False
    assert "garage" in access.decide("U0BOB", home, {"garage light", "garage"}).reason
    assert access.decide("U0BOB", home, {"hall light", "hall"}).allowed is True
    assert access.decide("U0BOB", {"C0KITCHEN", "#kitchen"}, {"hall light"}).allowed is False
    assert access.decide("U0ALICE", home, {"garage"}).allowed is True
    assert access.decide("U0CAROL", home, {"hall light"}).allowed is False
    assert access.decide(None, home, {"help"}).allowed is False
    assert access.may_message_directly("U0ALICE") and not access.may_message_directly("U0BOB")


def test_names_become_ids_before_anything_is_decided():
    rule = SimpleNamespace(users=("@bob",), channels=("*",), what=("garage",), allow=False)
    named = Access.build(admins=["@alice"], users=["@alice", "U0BOB"], rules=[rule])
    assert named.names() == {"@alice", "@bob"}
    assert named.decide("U0ALICE", {"#home"}, {"garage"}).allowed is False
    access = named.with_ids({"@alice": "U0ALICE", "@bob": "U0BOB"})
    assert access.names() == set()
    assert access.is_admin("U0ALICE") and access.may_message_directly("U0ALICE")
    assert access.decide("U0BOB", {"#home"}, {"garage"}).allowed is False
    assert access.decide("U0BOB", {"#home"}, {"hall light"}).allowed is True


def test_guests_and_other_teams_need_to_be_listed_by_id_even_with_a_star():
    access = Access.build(admins=["U0ALICE"], users=["*", "U0LENA"]).for_team("T0HOME")
    home = {"C0HOME", "#home"}
    gwen = Person("U0GWEN", guest=True, team="T0HOME")
    olaf = Person("U0OLAF", team="T0OTHER")
    lena = Person("U0LENA", guest=True, team="T0HOME")
    bob = Person("U0BOB", team="T0HOME")
    for outsider in (gwen, olaf):
        assert not access.may_command(outsider)
        assert access.decide(outsider, home, {"hall light"}) == access.decide(
            outsider, home, {"help"}
        )
        assert access.decide(outsider, home, {"hall light"}).reason == OUTSIDER
        assert access.refusal(outsider) == OUTSIDER
    assert access.may_command(lena) and access.decide(lena, home, {"hall light"}).allowed
    assert access.may_command(bob) and access.decide(bob, home, {"hall light"}).allowed
    assert access.is_admin(Person("U0ALICE", guest=True))  # an admin is listed by id
    # direct messages: '*' lets in members only, too
    direct = Access.build(admins=[], direct=["*", "U0LENA"]).for_team("T0HOME")
    assert direct.may_message_directly(bob) and direct.may_message_directly(lena)
    assert not direct.may_message_directly(gwen) and not direct.may_message_directly(olaf)
    # before the team is known, only guests stand out
    assert Access.build(admins=[]).may_command(olaf)
    assert not Access.build(admins=[]).may_command(gwen)


def test_admins_named_by_handle_are_warned_about():
    named = Access.build(admins=["@alice", "U0ROOT"])
    [warning] = named.warnings()
    assert "@alice" in warning and "U0ROOT" not in warning and "user ids" in warning
    assert Access.build(admins=["U0ALICE"]).warnings() == []
    assert named.with_ids({"@alice": "U0ALICE"}).warnings() == []


GUESTS = (
    Human(id="U0GWEN", name="gwen", token="xoxp-gwen", guest="multi"),
    Human(id="U0OLAF", name="olaf", token="xoxp-olaf", team_id="T0OTHER"),
    Human(id="U0LENA", name="lena", token="xoxp-lena", guest="single"),
)


@pytest.mark.timeout(240)
def test_guests_and_other_teams_are_refused_unless_listed_by_id(tmp_path):
    access = "{admins: ['@alice'], users: ['*', U0LENA]}"
    with house(tmp_path, access=access, humans=GUESTS) as h:
        for token in ("xoxp-gwen", "xoxp-olaf"):
            ts = h.say("turn on the hall light", token=token)
            assert _one_answer(h, ts) == f"Sorry, {OUTSIDER}."
        ts = h.say("turn on the hall light", token="xoxp-lena")
        h.wait_for(lambda: len(h.actions()) >= 1, 30, "lena's hall light")
        assert _one_answer(h, ts) == "Turned on the hall light."
        assert [a["device"] for a in h.actions()] == ["hall light"]
        logs = "\n".join(b.output() for b in h.fleet.bots.values())
        assert "refused U0GWEN" in logs and "refused U0OLAF" in logs
        assert logs.count("names @alice by handle") == 3  # once per bot, at start


# Names and ids mixed, as people write them: the bots look the names up at start.
ACCESS = (
    "{admins: ['@alice'], users: [Alice, U0BOB], "
    "rules: [{users: ['@Bob'], what: [garage], allow: false}]}"
)


def _one_answer(h, ts: str, channel: str = "home") -> str:
    h.wait_for(lambda: len(h.replies(ts, channel)) >= 1, 30, "an answer")
    time.sleep(1.0)
    replies = h.replies(ts, channel)
    assert len(replies) == 1, replies
    return replies[0]["text"]


@pytest.mark.timeout(240)
def test_refusals_are_answered_once_and_nothing_moves(tmp_path):
    with house(tmp_path, access=ACCESS) as h:
        bob = WebClient("xoxp-bob", base_url=h.ws.api_url)
        garage = bob.chat_postMessage(channel="#home", text="turn on the garage light")["ts"]
        assert _one_answer(h, garage) == "Sorry, you may not ask for garage here."
        hall = bob.chat_postMessage(channel="#home", text="turn on the hall light")["ts"]
        h.wait_for(lambda: len(h.actions()) >= 1, 30, "bob's hall light")
        long = h.say("turn on the hall light " + "please " * 700)
        assert _one_answer(h, long) == "Sorry, a command may be 4,000 characters at most."
        too_long = h.say("turn on the porch switch for 30 hours")
        assert _one_answer(h, too_long) == "Sorry, timed commands may last 24 hours at most."
        assert [a["device"] for a in h.actions()] == ["hall light"]
        assert h.replies(hall)
        logs = "\n".join(b.output() for b in h.fleet.bots.values())
        assert "refused U0BOB in" in logs and "garage" in logs


@pytest.mark.timeout(240)
def test_direct_messages_only_from_listed_people(tmp_path):
    with house(tmp_path) as h:
        dm = h.alice.conversations_open(users="U0KITCHEN")["channel"]["id"]
        ts = h.alice.chat_postMessage(channel=dm, text="turn on the porch switch")["ts"]
        h.wait_for(lambda: len(h.actions()) >= 1, 30, "the porch switch from a DM")
        assert h.actions()[0]["bot"] == "kitchen-pi"
        bob = WebClient("xoxp-bob", base_url=h.ws.api_url)
        bob_dm = bob.conversations_open(users="U0KITCHEN")["channel"]["id"]
        refused = bob.chat_postMessage(channel=bob_dm, text="turn on the hall light")["ts"]
        deadline = time.monotonic() + 30
        answers: list = []
        while not answers and time.monotonic() < deadline:
            msgs = bob.conversations_replies(channel=bob_dm, ts=refused)["messages"]
            answers = [m for m in msgs if m["ts"] != refused]
            time.sleep(0.1)
        assert [m["text"] for m in answers] == [
            "Sorry, I only take direct messages from the people the federation file lists."
        ]
        time.sleep(1.0)
        assert len(h.actions()) == 1
        msgs = h.alice.conversations_replies(channel=dm, ts=ts)["messages"]
        assert [m["text"] for m in msgs if m["ts"] != ts] == ["Turned on the porch switch."]
