"""The dispatch pipeline's decisions, in-process on virtual time (tests/botkit.py): answers,
Slack calls, access, chatter, staleness, built-in commands and timed actions."""

from __future__ import annotations

from botkit import BOB, BOTS, KITCHEN, home, run

from troupe.access import OUTSIDER
from troupe.workspace.config import Human


def test_chatter_costs_nothing_unknown_text_to_a_bot_gets_its_answer_bots_are_ignored(
    tmp_path,
):
    async def main(_loop):
        async with home(tmp_path) as h:
            h.reset_calls()
            chatter = await h.say("please make me a sandwich")
            assert h.calls() == {}
            asked = await h.say("<@U0HALL> please make me a sandwich")
            bot_ts = await h.say("turn on the hall light", user="U0KITCHEN")
            ok_ts = await h.say("turn on the porch switch")
            assert h.answers(chatter) == []
            assert h.answered_by(asked) == [("U0HALL", "I don't know that — try `help`.")]
            assert h.answers(bot_ts) == []
            assert [a["ts"] for a in h.actions()] == [ok_ts]
            assert len(h.answers(ok_ts)) == 1

    run(main)


def test_a_bot_the_file_allows_may_command(tmp_path):
    access = '{admins: [U0ALICE], users: ["*"], bots: [U0TROUPE]}'

    async def main(_loop):
        async with home(tmp_path, access=access) as h:
            alarm = await h.say("turn on the porch switch", user="U0TROUPE")
            other = await h.say("turn on the hall light", user="U0CLASSIC")
            assert [(a["ts"], a["device"]) for a in h.actions()] == [(alarm, "porch switch")]
            assert h.answers(other) == []

    run(main)


def test_help_devices_status_history_and_roll_call(tmp_path):
    async def main(_loop):
        async with home(tmp_path) as h:
            on = await h.say("turn on the hall light")
            asks = {t: await h.say(t) for t in ("help", "devices", "status", "history hall light")}
            roll = await h.say("roll call")
            [help_] = h.answers(asks["help"])
            assert "hall light" in help_ and "*Devices:*" in help_
            [listing] = h.answers(asks["devices"])
            assert "kitchen lamp (light, kitchen) — counter, kitchen-pi" in listing
            status = "\n".join(h.answers(asks["status"]))
            for device in ("kitchen lamp", "garage light", "hall light", "porch switch"):
                assert f"The {device} is" in status
            assert "The hall light is on." in status
            history = h.answers(asks["history hall light"])
            actor = h.actions()[0]["bot"]
            assert len(history) == 1 and history[0].startswith(f"{actor}:")
            assert "hall light on" in history[0] and "<@U0ALICE>" in history[0]
            assert sorted(t.split(" on ")[0] for t in h.answers(roll)) == sorted(BOTS)
            assert h.answers(on) == ["Turned on the hall light."]

    run(main)


def test_roll_call_shows_each_bots_clock(tmp_path):
    async def main(_loop):
        async with home(tmp_path, offsets={"garage-pi": -120.0}) as h:
            texts = h.answers(await h.say("roll call"))
            garage = next(t for t in texts if t.startswith("garage-pi"))
            assert "clock 120" in garage and "behind Slack's" in garage

    run(main)


def test_timed_action_undoes_itself_and_a_later_command_cancels_it(tmp_path):
    async def main(_loop):
        async with home(tmp_path) as h:
            ts = await h.say("turn on the hall light for 1 minute")
            ops = [(a["device"], a["op"]) for a in h.actions()]
            assert ops == [("hall light", "on"), ("hall light", "off")]
            assert h.answers(ts) == [
                "Turned on the hall light for 1 minute.",
                "Turned off the hall light (its time was up).",
            ]
            cancel = await h.say("turn on the porch switch for 2 minutes", settle=False)
            await h.settle(30)
            await h.say("turn on the porch switch")
            await h.settle(300)  # past the two minutes: a timer left running would fire
            porch = [a["op"] for a in h.actions() if a["device"] == "porch switch"]
            assert porch == ["on", "on"]
            assert len(h.answers(cancel)) == 1

    run(main)


GUESTS = (
    Human(id="U0GWEN", name="gwen", token="xoxp-gwen", guest="multi"),
    Human(id="U0OLAF", name="olaf", token="xoxp-olaf", team_id="T0OTHER"),
    Human(id="U0LENA", name="lena", token="xoxp-lena", guest="single"),
)


def test_guests_and_other_teams_are_refused_unless_listed_by_id(tmp_path, caplog):
    access = "{admins: ['@alice'], users: ['*', U0LENA]}"

    async def main(_loop):
        async with home(tmp_path, access=access, humans=GUESTS) as h:
            for user in ("U0GWEN", "U0OLAF"):
                ts = await h.say("turn on the hall light", user=user)
                assert h.answers(ts) == [f"Sorry, {OUTSIDER}."]
            ts = await h.say("turn on the hall light", user="U0LENA")
            assert h.answers(ts) == ["Turned on the hall light."]
            assert [a["device"] for a in h.actions()] == ["hall light"]

    run(main)
    assert "refused U0GWEN" in caplog.text and "refused U0OLAF" in caplog.text
    assert caplog.text.count("names @alice by handle") == 3  # once per bot, at start


# Names and ids mixed, as people write them: the bots look the names up at start.
ACCESS = (
    "{admins: ['@alice'], users: [Alice, U0BOB], "
    "rules: [{users: ['@Bob'], what: [garage], allow: false}]}"
)


def test_refusals_are_answered_once_and_nothing_moves(tmp_path, caplog):
    async def main(_loop):
        async with home(tmp_path, access=ACCESS) as h:
            garage = await h.say("turn on the garage light", user=BOB)
            assert h.answers(garage) == ["Sorry, you may not ask for garage here."]
            hall = await h.say("turn on the hall light", user=BOB)
            long = await h.say("turn on the hall light " + "please " * 700)
            assert h.answers(long) == ["Sorry, a command may be 4,000 characters at most."]
            too_long = await h.say("turn on the porch switch for 30 hours")
            assert h.answers(too_long) == ["Sorry, timed commands may last 24 hours at most."]
            assert [a["device"] for a in h.actions()] == ["hall light"]
            assert h.answers(hall) == ["Turned on the hall light."]

    run(main)
    assert "refused U0BOB in" in caplog.text and "garage" in caplog.text


def test_direct_messages_only_from_listed_people(tmp_path):
    async def main(_loop):
        async with home(tmp_path) as h:
            ts = await h.say("turn on the porch switch", channel="D0ALICE", to=("kitchen-pi",))
            assert [a["bot"] for a in h.actions()] == ["kitchen-pi"]
            assert h.answers(ts, "D0ALICE") == ["Turned on the porch switch."]
            refused = await h.say(
                "turn on the hall light", user=BOB, channel="D0BOB", to=("kitchen-pi",)
            )
            assert h.answers(refused, "D0BOB") == [
                "Sorry, I only take direct messages from the people the federation file lists."
            ]
            assert len(h.actions()) == 1

    run(main)


def test_a_command_in_an_area_channel_means_that_area(tmp_path):
    async def main(_loop):
        async with home(tmp_path) as h:
            ts = await h.say("turn on the lights", channel=KITCHEN)
            assert [a["device"] for a in h.actions()] == ["kitchen lamp"]
            assert h.answered_by(ts, KITCHEN) == [("U0KITCHEN", "Turned on the kitchen lamp.")]

    run(main)
