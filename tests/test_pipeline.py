"""The dispatch pipeline's decisions, in-process on virtual time (tests/botkit.py): answers,
Slack calls, access, chatter, staleness, built-in commands and timed actions."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from botkit import ALICE, BOB, BOTS, HOME, KITCHEN, USER_OF, home, run
from fleetkit import DEVICES
from test_chatter import DE_AREAS, DE_DEVICES, EN_AREAS, EN_DEVICES, corpus

from troupe.access import OUTSIDER
from troupe.devkit.workspace.config import Human
from troupe.federation import Action, rank
from troupe.plugin import DriverError, resend_check
from troupe.slackmq import DONE, TAKEOVER
from troupe.transports.base import Event


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
            assert len(history) == 1  # one bot answers for the whole fleet
            assert history[0].startswith("What the fleet did to the hall light, newest first:")
            assert "“turn on the hall light” — asked by <@U0ALICE>" in history[0]
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


# --- moved from the in-process fleet on the local workspace (tests/pipekit.py) ---------------

FAST = "{stale_s: 30, lease_s: 3, stagger_s: 0.3, linger_s: 45}"


HOUSES = {"en": (EN_DEVICES, EN_AREAS), "de": (DE_DEVICES, DE_AREAS)}


def house_of(language: str) -> str:
    """The corpora's test house (tests/test_chatter.py) as the federation file's devices."""
    devices, areas = HOUSES[language]
    lines = ["devices:"]
    for d in devices:
        aliases = f", aliases: [{', '.join(d.aliases)}]" if d.aliases else ""
        lines.append(f"  {d.name}: {{kind: {d.kind}, area: {d.area}, driver: counter{aliases}}}")
    lines.append("areas:")
    lines += [f"  {area}: [{', '.join(names)}]" for area, names in areas.items()]
    if "kitchen" not in areas:
        lines.append("  kitchen: []")  # fleetkit's #kitchen channel names it
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("language", ["en", "de"])
def test_chatter_costs_no_call_and_gets_no_answer(tmp_path, language):
    lines = corpus(f"chatter_{language}.txt")
    assert len(lines) >= 150

    async def main(_loop):
        async with home(tmp_path, devices=house_of(language), extra=f"language: {language}\n") as h:
            h.reset_calls()
            sent = [await h.say(line, settle=False) for line in lines]
            marker = await h.say("<@U0HALL> hello there")  # unknown text to a bot: its answer
            assert len(h.answers(marker)) == 1
            for bot in h.bots.values():  # every line was read (journaled) and let be
                statuses = {lines[i]: bot.journal.status(HOME, ts) for i, ts in enumerate(sent)}
                assert {line: st for line, st in statuses.items() if st != "skipped"} == {}
            assert h.calls() == {("U0HALL", "chat.postMessage"): 1}
            assert [ts for ts in sent if h.answers(ts)] == []

    run(main)


def test_each_near_miss_gets_one_helpful_answer(tmp_path):
    lines = corpus("nearmiss_en.txt")[::3]  # a sample: tests/test_chatter.py reads them all

    async def main(_loop):
        async with home(tmp_path, devices=house_of("en")) as h:
            sent = {await h.say(line, settle=False): line for line in lines}
            await h.settle()
            for ts, line in sent.items():
                texts = h.answers(ts)
                assert len(texts) == 1, (line, texts)
                assert texts[0].startswith(("I don't know a device or area", "I can't do that")), (
                    line
                )
            assert h.actions() == []

    run(main)


def test_a_device_whose_owner_is_down_is_answered_by_a_live_bot(tmp_path):
    async def main(_loop):
        async with home(tmp_path, start=("kitchen-pi", "hall-pi"), slackmq=FAST) as h:
            ts = await h.say("turn on the garage light")
            assert h.answers(ts) == [
                "The garage light belongs to garage-pi, which has not answered; nothing was done:"
                " check that Pi and ask again."
            ]
            assert h.actions() == []

    run(main)


def test_an_owned_device_command_gets_its_done_mark(tmp_path):
    async def main(_loop):
        async with home(tmp_path) as h:
            ts = await h.say("turn on the kitchen lamp")
            assert h.answered_by(ts) == [("U0KITCHEN", "Turned on the kitchen lamp.")]
            assert h.marks(ts) == {DONE: ["kitchen-pi"]}
            assert ("U0KITCHEN", "pins.add") not in h.calls()  # its own device: no claim

    run(main)


def test_slow_devices_keep_the_lease_and_nobody_takes_over(tmp_path):
    slow = (
        "  slow one: {kind: switch, driver: counter, delay_s: 1.5}\n"
        "  slow two: {kind: switch, driver: counter, delay_s: 1.5}\n"
        "  slow three: {kind: switch, driver: counter, delay_s: 1.5}\n"
    )
    scene = "scenes:\n  slow start: {slow one: on, slow two: on, slow three: on}\n"
    devices = DEVICES.replace("areas:", slow + "areas:")

    async def main(_loop):
        async with home(tmp_path, slackmq=FAST, devices=devices, extra=scene) as h:
            ts = await h.say("slow start")
            assert Counter(a["device"] for a in h.actions()) == {
                "slow one": 1,
                "slow two": 1,
                "slow three": 1,
            }
            assert TAKEOVER not in h.marks(ts)
            assert len(h.answers(ts)) == 1

    run(main)


def test_a_late_action_never_overrides_a_newer_command_on_the_same_device(tmp_path):
    async def main(_loop):
        async with home(tmp_path, slackmq=FAST) as h:
            older = await h.say("good morning")  # its ts stands for a command held up
            newer = await h.say("turn off the porch switch")
            assert DONE in h.marks(newer)
            bot = h.bots["garage-pi"]
            bot._newest.clear()  # as if it had been down while the newer command acted
            held = Event("message", HOME, older, user=ALICE, text="turn on the porch switch")
            lines = await bot._act(held, [Action("porch switch", "on")], takeover=True)
            at = bot._local_time(newer)
            assert lines == [f"I left the porch switch to the newer command at {at}."]
            assert [a["op"] for a in h.actions() if a["device"] == "porch switch"] == ["off"]
            # Past the stale limit a taker runs nothing: a newer command may have acted
            # while it waited (the peers' per-device wait ends there).
            lines = await bot._act(held, [Action("hall light", "on")], takeover=True)
            assert lines == [
                "I did not change the hall light: the command passed the 30 s limit before"
                " I could take it over, so it is not run."
            ]
            # A device no newer command touched is still acted on by a taker in time.
            recent = await h.say("good evening", settle=False)
            held = Event("message", HOME, recent, user=ALICE, text="turn on the hall light")
            lines = await bot._act(held, [Action("hall light", "on")], takeover=True)
            assert lines == ["Turned on the hall light."]

    run(main)


def test_a_command_waiting_for_its_device_to_come_back_yields_to_a_newer_one(tmp_path):
    """A broker restart: the older command's holder waits for its device to be reachable
    again (Driver.ready) while another bot, back first, carries out a newer command on
    it. The order checks follow the wait, so the older command is not acted after it."""

    async def main(_loop):
        async with home(tmp_path, slackmq=FAST) as h:
            older = await h.say("good morning")  # its ts stands for the held command
            bot = h.bots["garage-pi"]
            driver = bot.drivers[bot.devices["porch switch"].driver]
            back = asyncio.Event()
            act = driver.act

            async def ready(_device: str) -> bool:
                await back.wait()
                return True

            async def act_when_back(device: str, action: Action):  # as the mqtt driver
                await back.wait()
                return await act(device, action)

            driver.ready, driver.act = ready, act_when_back
            held = Event("message", HOME, older, user=ALICE, text="turn on the porch switch")
            waiting = asyncio.ensure_future(
                bot._act(held, [Action("porch switch", "on")], takeover=True)
            )
            await asyncio.sleep(0.5)
            others = tuple(b for b in BOTS if b != "garage-pi")
            newer = await h.say("turn off the porch switch", to=others)
            assert DONE in h.marks(newer)
            back.set()
            at = bot._local_time(newer)
            assert await waiting == [f"I left the porch switch to the newer command at {at}."]
            assert [a["op"] for a in h.actions() if a["device"] == "porch switch"] == ["off"]

    run(main)


def test_an_action_its_dropped_connection_cut_short_is_not_sent_again_over_a_newer_one(tmp_path):
    """A broker killed with the command in flight: the driver would send an "on" once
    more when the broker is back, but another bot carried out a newer command on the
    device meanwhile (the soak's command 4501, sent again 3.8 s later over it). Before
    the resend the runtime checks the order again (`resend_check`, one channel read),
    and the device stays with the newer command. With no newer command it is sent."""

    async def main(_loop):
        async with home(tmp_path, slackmq=FAST) as h:
            bot = h.bots["garage-pi"]
            driver = bot.drivers[bot.devices["porch switch"].driver]
            act, back = driver.act, asyncio.Event()

            async def dropped_then_back(device: str, action: Action):  # as the mqtt driver
                await back.wait()
                if (withdrawn := await resend_check.get()()) is not None:
                    raise DriverError(withdrawn)
                return await act(device, action)

            async def held_on(text: str) -> asyncio.Future[list[str]]:
                ts = await h.say("good morning", settle=False)  # stands for the held command
                held = Event("message", HOME, ts, user=ALICE, text=text)
                on = [Action("porch switch", "on")]
                return asyncio.ensure_future(bot._act(held, on, takeover=False))

            driver.act = dropped_then_back
            waiting = await held_on("turn on the porch switch")
            await asyncio.sleep(0.5)
            others = tuple(b for b in BOTS if b != "garage-pi")
            newer = await h.say("turn off the porch switch", to=others)
            assert DONE in h.marks(newer)
            h.reset_calls()
            back.set()
            at = bot._local_time(newer)
            assert await waiting == [f"I left the porch switch to the newer command at {at}."]
            assert h.calls() == Counter({(USER_OF["garage-pi"], "conversations.history"): 1})
            assert [a["op"] for a in h.actions() if a["device"] == "porch switch"] == ["off"]

            back.clear()
            waiting = await held_on("turn on the porch switch")
            await asyncio.sleep(0.5)
            back.set()
            assert await waiting == ["Turned on the porch switch."]
            assert [a["op"] for a in h.actions() if a["device"] == "porch switch"] == ["off", "on"]

    run(main)


def test_rtm_a_bot_back_from_a_restart_waits_for_an_older_command_it_never_received(tmp_path):
    """rtm replays nothing: a command posted while a bot restarted never reaches it. At
    start it reads the channel once (`_note_missed`) and notes the device commands the
    fleet has not finished, so its newer command on the same device waits for that one
    in turn (the rtm soak's one out-of-order action: the restarted bot turned the plug
    off, then a peer carried out the older "on")."""

    async def main(_loop):
        async with home(tmp_path, slackmq=FAST) as h:
            bot = h.bots["garage-pi"]
            bot._replays_nothing = lambda: True  # as in rtm mode
            others = tuple(b for b in BOTS if b != "garage-pi")
            h.delays.update({b: 2.0 for b in others})  # their copies of the older one are slow
            await h.say("turn on the porch switch", to=others, settle=False)
            h.reset_calls()
            await bot._note_missed()
            assert h.calls() == Counter({(USER_OF["garage-pi"], "conversations.history"): 2})
            await h.say("turn off the porch switch", to=("garage-pi",))
            assert [a["op"] for a in h.actions() if a["device"] == "porch switch"] == ["on", "off"]

    run(main)


def test_commands_that_waited_for_one_device_all_yield_to_the_newest_still_to_act(tmp_path):
    """A broker restart with commands for its device in flight: when it comes back, the
    older one's holder finds a newer one in the channel, neither answered nor marked done
    yet (another bot still holds it), and leaves the device to it; so the older can never
    land after it. A newer command the fleet already answered, its ✅ not yet there, is
    through with its action (a holder answers, then marks ✅, whether or not its device
    answered): the older one is left out too. None is deferred to when the device never
    went away, however late the action (deferring to every newer command still to act
    starved a busy device)."""

    async def main(_loop):
        async with home(tmp_path, slackmq=FAST) as h:
            bot = h.bots["garage-pi"]
            driver = bot.drivers[bot.devices["porch switch"].driver]
            back = asyncio.Event()
            away = [True]

            async def ready(_device: str) -> bool:
                await back.wait()
                return away[0]

            async def late_act(text: str) -> list[str]:
                older = h.slack.post(HOME, ALICE, text)["ts"]
                held = Event("message", HOME, older, user=ALICE, text=text)
                on = Action("porch switch", "on")
                waiting = asyncio.ensure_future(bot._act(held, [on], takeover=True))
                await asyncio.sleep(0.5)
                newer = h.slack.post(HOME, ALICE, "turn off the porch switch")["ts"]
                return waiting, newer

            driver.ready = ready
            waiting, answered = await late_act("turn on the porch switch")
            h.slack.post(HOME, USER_OF["hall-pi"], "Could not reach it.", thread_ts=answered)
            back.set()
            at = bot._local_time(answered)
            assert await waiting == [f"I left the porch switch to the newer command at {at}."]
            assert h.actions() == []

            back.clear()
            waiting, newer = await late_act("turn the porch switch on")
            h.reset_calls()
            back.set()
            at = bot._local_time(newer)
            assert await waiting == [f"I left the porch switch to the newer command at {at}."]
            assert h.calls() == Counter({(USER_OF["garage-pi"], "conversations.history"): 1})
            assert h.actions() == []

            away[0] = False  # late (a takeover), but the device was there all along
            waiting, newer = await late_act("switch the porch switch on")
            assert await waiting == ["Turned on the porch switch."]
            assert [a["op"] for a in h.actions()] == ["on"]

    run(main)


def test_a_takeover_past_the_stale_limit_leaves_the_device_to_a_newer_command(tmp_path):
    """A taker reaches a command past the stale limit (a chain of commands on one device
    after its holder died): it is not run either way. A newer command on the device,
    still to act (it waits for this one's ✅, in order), is named, from the one read a
    late action makes anyway; with none, the answer says the limit passed."""

    async def main(_loop):
        async with home(tmp_path, slackmq=FAST) as h:
            bot = h.bots["garage-pi"]
            on = Action("porch switch", "on")
            alone = h.slack.post(HOME, ALICE, "turn on the porch switch")["ts"]
            await asyncio.sleep(31)
            held = Event("message", HOME, alone, user=ALICE, text="turn on the porch switch")
            h.reset_calls()
            assert await bot._act(held, [on], takeover=True) == [
                "I did not change the porch switch: the command passed the 30 s limit before"
                " I could take it over, so it is not run."
            ]
            older = h.slack.post(HOME, ALICE, "switch on the porch switch")["ts"]
            await asyncio.sleep(25)
            newer = h.slack.post(HOME, ALICE, "turn off the porch switch")["ts"]
            await asyncio.sleep(6)
            held = Event("message", HOME, older, user=ALICE, text="switch on the porch switch")
            h.reset_calls()
            at = bot._local_time(newer)
            assert await bot._act(held, [on], takeover=True) == [
                f"I left the porch switch to the newer command at {at}."
            ]
            assert h.calls() == Counter({(USER_OF["garage-pi"], "conversations.history"): 1})
            assert h.actions() == []

    run(main)


def test_a_bot_just_reconnected_waits_for_an_older_command_it_never_received(tmp_path):
    """Every socket dropped; the older command reached the others (2 s late), the newer
    one reached its holder, which had just reconnected and never got the older one. It
    reads the channel back (one call) and acts after the older one, in the order sent."""

    async def main(loop):
        async with home(tmp_path, slackmq=FAST) as h:
            text = "turn on the porch switch"
            older = h.slack.post(HOME, ALICE, text)
            h.slack.messages[HOME].pop()
            holder = rank(f"{float(older['ts']) + 0.5:.6f}", BOTS)[0]
            others = tuple(b for b in BOTS if b != holder)
            h.transports[holder].connected_since = loop.time()
            h.delays.update(dict.fromkeys(others, 2.0))
            first = await h.say(text, to=others, settle=False)
            await asyncio.sleep(0.5)
            second = await h.say("turn off the porch switch", to=(holder,), settle=False)
            await h.settle()
            assert [(a["ts"], a["op"]) for a in h.actions()] == [(first, "on"), (second, "off")]
            back = [
                c for c in h.slack.calls if c[1] == "conversations.history" and "latest" in c[2]
            ]
            assert [(c[0], c[2]["latest"]) for c in back] == [(USER_OF[holder], second)]

    run(main)


def test_a_late_shared_app_holder_reads_the_ballot_it_was_never_handed(tmp_path):
    """shared-app: Slack hands each reaction event to one connection, so a holder acting
    late may never get the 🔄 of the redelivery receiver that voted to take over. Before
    acting late it reads the marks (one reactions.get) and leaves the device alone."""
    from dataclasses import replace

    async def main(_loop):
        async with home(tmp_path, slackmq=FAST) as h:
            ts = await h.say("good morning")  # a message no bot acts on: its ts stands in
            bot = h.bots["hall-pi"]
            bot.info = replace(bot.info, mode="shared-app")
            h.board.reactions[(HOME, ts)][TAKEOVER].append("kitchen-pi")  # its vote
            held = Event("message", HOME, ts, user=ALICE, text="turn on the porch switch")
            h.reset_calls()
            lines = await bot._act(held, [Action("porch switch", "on")], takeover=False)
            assert lines == [
                "I did not get to the porch switch: my hold on this command ran out while I"
                " waited for Slack, so another bot finishes it."
            ]
            assert h.actions() == []
            assert h.calls()[("U0HALL", "reactions.get")] == 1

    run(main)


# --- moved from the bot-process fleet (tests/fleetkit.py) ------------------------------------


def test_one_bots_events_five_seconds_late(tmp_path):
    async def main(_loop):
        async with home(tmp_path) as h:
            h.delays["hall-pi"] = 5.0
            h.board.delays["hall-pi"] = 5.0
            sent = []
            for i in range(12):
                text = ("turn on the hall light", "turn off the porch switch")[i % 2]
                sent.append(await h.say(text, settle=False))
                await h.settle(0.1)
            await h.settle()
            assert Counter(a["ts"] for a in h.actions()) == dict.fromkeys(sent, 1)
            assert all(h.bots["hall-pi"].journal.status(HOME, ts) for ts in sent)
            # Where the late bot ranks first it still tries, and meets the peer's pin.
            first = sum(rank(ts, BOTS)[0] == "hall-pi" for ts in sent)
            assert first > 0
            assert h.calls()[("U0HALL", "pins.add")] == first
            assert not [a for a in h.actions() if a["bot"] == "hall-pi"]

    run(main)


# --- staleness, scenes and per-device order ---------------------------------------------------


def test_a_command_every_bot_gets_late_is_answered_once_and_never_run(tmp_path):
    async def main(_loop):
        async with home(tmp_path) as h:
            h.delays.update(dict.fromkeys(BOTS, 40.0))  # Slack held it up 40 s (stale_s 30)
            h.reset_calls()
            ts = await h.say("turn on the hall light")
            assert h.answers(ts) == [
                "That command is 40 s old, past the 30 s limit, so I did not run it."
            ]
            assert h.actions() == []
            assert all(bot.journal.status(HOME, ts) == "skipped" for bot in h.bots.values())
            # Only the bot that answers spends calls: the others leave it at their rank.
            first = rank(ts, BOTS)[0]
            assert {user for user, _ in h.calls()} == {USER_OF[first]}

    run(main)


def test_a_command_only_one_bot_had_is_answered_when_it_comes_back_too_late(tmp_path):
    """A bot took a command (acked it: Slack hands it to no one else), then stopped before
    any device action began; it came back past the stale limit. Nobody else ever had the
    command, so this bot says it was not run: silence would leave the person waiting."""

    async def main(loop):
        async with home(tmp_path) as h:
            text = "turn on the hall light"
            message = h.slack.post(HOME, ALICE, text)
            while rank(message["ts"], BOTS)[0] != "hall-pi":  # hall-pi answers stale ones
                message = h.slack.post(HOME, ALICE, text)
            ts, bot = str(message["ts"]), h.bots["hall-pi"]
            assert bot.journal.begin(HOME, ts, text, ALICE)
            assert [c[1] for c in bot.journal.interrupt()] == [ts]  # the stop
            await h.settle(40.0)  # back 40 s later (stale_s 30)
            await bot._resume(HOME, ts, text, ALICE)
            await h.settle()
            [answer] = h.answers(ts)
            assert "past the 30 s limit, so I did not run it" in answer
            assert h.actions() == []
            assert DONE in h.marks(ts)  # a redelivery or a peer's catch-up stays quiet

    run(main)


def test_a_command_cut_short_by_a_stop_and_too_old_to_finish_names_the_newer_one(tmp_path):
    """A bot stopped mid-action and came back past the stale limit. A newer command for the
    device, still to act, has it: the answer names that one (one read of the channel)
    rather than asking the person to check the device and ask again."""

    async def main(_loop):
        async with home(tmp_path) as h:
            text = "turn on the hall light"
            ts, bot = h.slack.post(HOME, ALICE, text)["ts"], h.bots["hall-pi"]
            assert bot.journal.begin(HOME, ts, text, ALICE)
            assert bot.journal.action_begin(HOME, ts, "hall light", "on", {}, ALICE)
            assert [c[1] for c in bot.journal.interrupt()] == [ts]  # the stop
            await h.settle(25.0)
            newer = h.slack.post(HOME, ALICE, "turn off the hall light")["ts"]
            await h.settle(15.0)  # back 40 s after the command (stale_s 30)
            h.reset_calls()
            await bot._resume(HOME, ts, text, ALICE)
            at = bot._local_time(newer)
            assert h.answers(ts) == [f"I left the hall light to the newer command at {at}."]
            assert h.actions() == [] and bot.journal.status(HOME, ts) == "failed"
            assert h.calls()[(USER_OF["hall-pi"], "conversations.history")] == 1

    run(main)


def test_a_claim_holder_stopped_before_acting_answers_its_stale_command_on_return(tmp_path):
    """A bot took a command over (or won its claim), was stopped before any action began,
    and came back past the stale limit. Its peers saw the claim held and left the command
    to it; it is not ranked first, so the pipeline alone would say nothing (the soak: one
    unanswered command). It answers once; a bot that never held the claim stays quiet."""

    async def main(_loop):
        async with home(tmp_path) as h:
            text = "turn on the hall light"
            ts = h.slack.post(HOME, ALICE, text)["ts"]
            _first, holder, other = rank(ts, BOTS)
            for name in (holder, other):
                assert h.bots[name].journal.begin(HOME, ts, text, ALICE)
            h.bots[holder].journal.hold(HOME, ts)
            assert h.bots[holder].journal.held(HOME, ts)
            assert not h.bots[other].journal.held(HOME, ts)
            for name in (holder, other):
                assert [c[1] for c in h.bots[name].journal.interrupt()] == [ts]  # the stop
            await h.settle(40.0)  # back 40 s after the command (stale_s 30)
            await asyncio.gather(
                *(h.bots[n]._resume(HOME, ts, text, ALICE) for n in (holder, other))
            )
            await h.settle()
            assert h.answered_by(ts) == [(USER_OF[holder], _stale_answer(h, ts))]
            assert h.actions() == [] and not h.bots[holder].journal.held(HOME, ts)

    run(main)


def _stale_answer(h, ts: str) -> str:
    """The one answer a stale command gets (its age as the bots said it)."""
    said = h.answers(ts)
    assert len(said) == 1 and "past the 30 s limit" in said[0], said
    return said[0]


def test_a_scene_sets_each_device_once_and_its_owner_answers_for_its_own(tmp_path):
    scene = (
        "scenes:\n  evening: {hall light: {brightness: 30}, porch switch: off, kitchen lamp: on}\n"
    )

    async def main(_loop):
        async with home(tmp_path, extra=scene) as h:
            ts = await h.say("evening")
            acts = sorted((a["device"], a["op"], a["bot"]) for a in h.actions())
            holder = next(a["bot"] for a in h.actions() if a["device"] == "hall light")
            assert acts == sorted(
                [
                    ("hall light", "set", holder),
                    ("porch switch", "off", holder),
                    ("kitchen lamp", "on", "kitchen-pi"),
                ]
            )
            answers = h.answered_by(ts)
            assert ("U0KITCHEN", "Turned on the kitchen lamp.") in answers
            shared = [t for _, t in answers if "hall light" in t]
            assert shared == ["Set the hall light to 30%.\nTurned off the porch switch."]
            assert len(answers) == (1 if holder == "kitchen-pi" else 2)

    run(main)


def test_commands_on_one_device_act_in_the_order_they_were_sent(tmp_path):
    async def main(_loop):
        async with home(tmp_path) as h:
            # Each bot hears of the commands a little late and in its own order.
            h.delays.update({"kitchen-pi": 0.2, "hall-pi": 0.5, "garage-pi": 1.0})
            sent = []
            for i in range(6):
                op = "on" if i % 2 == 0 else "off"
                sent.append(await h.say(f"turn {op} the porch switch", settle=False))
                await h.settle(0.05)
            await h.settle()
            acted = [(a["ts"], a["op"]) for a in h.actions()]
            assert acted == [(ts, "on" if i % 2 == 0 else "off") for i, ts in enumerate(sent)]

    run(main)


def test_a_command_waits_its_turn_unclaimed_and_late_only_from_that_reads_nothing(tmp_path):
    """A slow device: the second command waits for the first's ✅ well past a third of
    the lease. It waits before its claim, so no holder renews a lease while in line (a
    busy device's line of holders spent the fleet's reactions.add), and, every bot having
    heard every mark meanwhile, nothing newer can have acted unheard: it acts in order
    without reading the channel (the line had made a read of every command)."""
    slow = DEVICES.replace(
        "hall light: {kind: light, area: hall, driver: counter}",
        "hall light: {kind: light, area: hall, driver: counter, delay_s: 3}",
    )

    async def main(_loop):
        async with home(tmp_path, devices=slow) as h:
            h.reset_calls()
            first = await h.say("turn on the hall light", settle=False)
            await h.settle(0.1)
            second = await h.say("turn off the hall light")
            assert [(a["ts"], a["op"]) for a in h.actions()] == [(first, "on"), (second, "off")]
            assert [len(h.answers(ts)) for ts in (first, second)] == [1, 1]
            reads = [m for (_, m), n in h.calls().items() if m == "conversations.history"]
            assert reads == []
            # Each holder: two ⏳ flips while its device acts (3 s; one each third of the
            # 4 s lease: on, off) and its ✅; none while the second waited for its turn,
            # unclaimed.
            marks = Counter()
            for (bot, method), n in h.calls().items():
                if method in ("reactions.add", "reactions.remove"):
                    marks[bot] += n
            assert sorted(marks.values()) == [3, 3]

    run(main)


def test_a_restarted_bot_holds_only_claims_its_shared_actions_prove(tmp_path):
    """After a stop, a command this bot had begun acting on under the claim (a shared
    device) is finished under that claim; one where it only drove its own device never
    claimed anything, so it claims as usual."""

    async def main(loop):
        async with home(tmp_path) as h:
            bot = h.bots["kitchen-pi"]
            for ts, device in (("1.000001", "hall light"), ("1.000002", "kitchen lamp")):
                assert bot.journal.begin(HOME, ts, f"turn on the {device}", ALICE)
                assert bot.journal.action_begin(HOME, ts, device, "on", {}, ALICE)
            assert [c[1] for c in bot.interrupted()] == ["1.000001", "1.000002"]
            assert bot._held == {(HOME, "1.000001")}

    run(main)


def test_an_action_a_stop_cut_short_is_not_done_again_where_the_device_shows_it(tmp_path):
    """A bot killed between its device action and the journal's record of it: back, the
    journal says begun, never done. Where the device already shows what the action sets,
    it got it before the stop and is not told again (the soak's one duplicate); where it
    does not, or the action is not idempotent, the action is carried out."""

    async def main(loop):
        async with home(tmp_path) as h:
            bot = h.bots["kitchen-pi"]
            stamps = ("1.000001", "1.000002", "1.000003")
            for ts, op in zip(stamps, ("on", "off", "toggle"), strict=True):
                assert bot.journal.begin(HOME, ts, f"{op} the hall light", ALICE)
                assert bot.journal.action_begin(HOME, ts, "hall light", op, {}, ALICE)
            await bot.drivers[bot.devices["hall light"].driver].act(
                "hall light", Action("hall light", "on")
            )  # the first one reached the device before the stop
            assert len(bot.interrupted()) == 3
            before = len(h.actions())
            done = [
                await bot._drive(HOME, ts, Action("hall light", op), ALICE)
                for ts, op in zip(stamps, ("on", "off", "toggle"), strict=True)
            ]
            assert [d.text for d in done if d is not None] == [
                "The hall light is on already: I restarted in the middle of this command,"
                " so I did not send it again.",
                "turned off the hall light",
                "toggled the hall light (now on)",
            ]
            assert [a["op"] for a in h.actions()[before:]] == ["off", "toggle"]
            assert await bot._drive(HOME, stamps[0], Action("hall light", "on"), ALICE) is None

    run(main)
