"""A bot imports only what its devices and language need: drivers, slackbot, intents data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import troupe.intents as intents
from bench import footprint
from bench.procstat import sample
from tests.fleetkit import write_federation
from troupe.intents import DeviceInfo, Recognizer
from troupe.plugin import BUILTIN_DRIVERS, load_plugins

LIBRARIES = ("troupe.plugins.hue", "phue", "troupe.plugins.gpio_relay", "gpiozero")
LIBRARIES += ("troupe.plugins.mqtt", "slackbot", "requests")

BUILD = """\
import json, sys
from troupe.config import load
from troupe.runner import build_bot

bot = build_bot(load(sys.argv[1]), "kitchen-pi", journal_path=sys.argv[2])
bot.recognizer.warm()
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m in sys.argv[3:]),
    "drivers": sorted(bot.plugins.drivers),
    "commands": sorted(spec.name for spec in bot.plugins.commands),
    "parsed": sorted(
        name
        for name, intent in bot.recognizer._full.intents.items()
        if any("sentences" in vars(data) for data in intent.data)
    ),
}))
"""


def built(tmp_path: Path, extra: str = "") -> dict[str, list[str]]:
    """Build and warm kitchen-pi from a federation file in a fresh interpreter: what it
    imported and which intents' sentences it parsed."""
    path = write_federation(tmp_path, "http://127.0.0.1:9/api/", extra=extra)
    journal = tmp_path / "kitchen.sqlite3"
    cmd = [sys.executable, "-c", BUILD, str(path), str(journal), *LIBRARIES]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_bot_whose_devices_use_the_counter_imports_no_other_driver_nor_slackbot(tmp_path):
    seen = built(tmp_path)
    assert seen["modules"] == []
    assert seen["drivers"] == ["counter"]
    assert {"help_", "roll_call"} <= set(seen["commands"])
    # Warmed, it has parsed the sentences of the intents it acts on, and no others.
    assert seen["parsed"] and set(seen["parsed"]) <= intents.SUPPORTED_INTENTS


def test_the_hue_section_brings_pair_hue_before_any_hue_device(tmp_path):
    (tmp_path / "hue.username").write_text("nobody\n")
    (tmp_path / "hue.username").chmod(0o600)
    hue = f'hue: {{bridge: "127.0.0.1:9", username: "file:{tmp_path}/hue.username"}}\n'
    seen = built(tmp_path, extra=hue)
    assert seen["modules"] == ["phue", "troupe.plugins.hue"]
    assert seen["drivers"] == ["counter", "hue"]
    assert "pair_hue" in seen["commands"]


def test_a_driver_no_plugin_provides_loads_every_shipped_one_to_list_them():
    plugins = load_plugins(drivers={"hues"}, entry_points_too=False)
    assert set(plugins.drivers) == set(BUILTIN_DRIVERS)
    assert "hues" not in plugins.drivers


@pytest.mark.parametrize("language", ["en", "de"])
def test_a_recognizer_reads_its_own_language_only(monkeypatch, language):
    read: list[str] = []
    original_intents, original_data = intents.get_intents, intents._language_data
    original_numbers = intents.get_rbnf_engine

    def spy(function):
        def called(lang, *args, **kwargs):
            read.append(lang)
            return function(lang, *args, **kwargs)

        return called

    monkeypatch.setattr(intents, "get_intents", spy(original_intents))
    monkeypatch.setattr(intents, "_language_data", spy(original_data))
    monkeypatch.setattr(intents, "get_rbnf_engine", spy(original_numbers))
    monkeypatch.setattr(intents, "_NUMBER_WORDS", {})
    recognizer = Recognizer(
        [DeviceInfo("kitchen lamp", "light", "kitchen")], {"kitchen": []}, language=language
    )
    recognizer.warm()
    recognizer.recognize("kitchen lamp on" if language == "en" else "Küchenlampe an")
    assert read and set(read) == {language}


def test_a_recognizer_parses_the_intents_it_does_not_act_on_only_when_a_near_miss_needs_them():
    recognizer = Recognizer(
        [DeviceInfo("küchenlampe", "light", "küche")], {"küche": []}, language="de"
    )
    recognizer.warm()

    def parsed() -> set[str]:
        """Intents whose sentence templates hassil has parsed (a cached property)."""
        full = recognizer._full
        assert full is not None
        return {
            name
            for name, intent in full.intents.items()
            if any("sentences" in vars(data) for data in intent.data)
        }

    acted_on = set(recognizer._supported.intents) if recognizer._supported else set()
    assert acted_on and acted_on <= intents.SUPPORTED_INTENTS
    assert parsed() == acted_on
    command = recognizer.recognize("küchenlampe an")
    assert command is not None and command.devices == ("küchenlampe",)
    assert recognizer.recognize("hallo zusammen") is None
    assert parsed() == acted_on
    # "7" nearly fits "set the light to 7 (kelvin)", and exactly fits another intent:
    # chatter, as before; that question parses the other intents.
    assert recognizer.recognize("7") is None
    assert parsed() > acted_on


def _row(bot: str, rss_mb: float, cpu_s: float) -> dict[str, object]:
    row = {"bot": bot, "devices": "-", "runs": 1, "cpu_s": cpu_s, "ready_s": 1.0}
    return {**row, "rss_mb": rss_mb, "peak_mb": rss_mb}


def test_the_footprint_section_holds_kitchen_pi_to_the_goals_and_shows_troupes_share():
    over = "\n".join(
        footprint.markdown(
            [_row(footprint.GOAL_BOT, 66.3, 0.61), _row(footprint.FLOOR_BOT, 54.9, 0.47)]
        )
    )
    assert "55 MB with the demo's kitchen-pi devices: 66.3 MB (NOT met)" in over
    assert "0.5 CPU-seconds: 0.61 s (NOT met)" in over
    assert "11.4 MB, 0.14 CPU-seconds" in over
    under = "\n".join(footprint.markdown([_row(footprint.GOAL_BOT, 54.0, 0.45)]))
    assert under.count("(met)") == 2 and "NOT met" not in under
    assert footprint.markdown(None) == []


def test_the_footprint_section_says_what_aiohttp_and_the_other_intents_cost():
    rows = [
        _row(footprint.GOAL_BOT, 62.3, 0.54),
        _row(footprint.FLOOR_BOT, 56.5, 0.37),
        _row(footprint.FLOOR_ALL_BOT, 59.5, 0.47),
        _row(footprint.AIOHTTP_FLOOR_BOT, 65.4, 0.48),
    ]
    text = "\n".join(footprint.markdown(rows))
    assert "That floor, no troupe code at all, is already 56.5 MB: over the 55 MB goal" in text
    assert (
        "What aiohttp would cost (the floor with it less that floor), which the bot no "
        "longer loads: 8.9 MB, 0.11 CPU-seconds."
    ) in text
    assert "parsed at the first near miss, which they may silence: 3.0 MB, 0.10" in text
    under = "\n".join(footprint.markdown([_row(footprint.FLOOR_BOT, 54.0, 0.4)]))
    assert "already" not in under and "What aiohttp would cost" not in under


def test_the_footprint_section_shows_kitchen_pis_start_step_by_step():
    goal = _row(footprint.GOAL_BOT, 66.4, 0.60)
    goal["stages"] = [
        {"stage": "interpreter", "rss_mb": 10.8, "cpu_s": 0.02},
        {"stage": "imports (troupe.cli, troupe.runner)", "rss_mb": 53.3, "cpu_s": 0.42},
    ]
    text = footprint.markdown([goal])
    assert "| interpreter | 10.8 | +10.8 | 0.02 | +0.02 |" in text
    assert "| imports (troupe.cli, troupe.runner) | 53.3 | +42.5 | 0.42 | +0.40 |" in text


def test_kitchen_pis_start_path_is_read_after_each_step(tmp_path, workspace):
    path = write_federation(tmp_path, workspace.api_url)
    cmd = ["python", "-m", "troupe", "run", "--config", str(path), "--bot", "kitchen-pi"]
    steps = footprint.stages(cmd, os.environ, tmp_path)
    assert [s["stage"] for s in steps] == [
        "interpreter",
        "imports (troupe.cli, troupe.runner)",
        "federation file loaded",
        "bot built (its drivers, journal)",
        "intents warmed",
        "connected to Slack, ready",
        "a first unknown device named (other intents parsed)",
    ]
    cpu = [s["cpu_s"] for s in steps]
    assert cpu == sorted(cpu) and all(s["rss_mb"] > 0 for s in steps)


def test_a_start_path_that_fails_is_an_error_with_its_output(tmp_path):
    cmd = ["python", "-m", "troupe", "run", "--config", str(tmp_path / "nowhere.yaml")]
    with pytest.raises(RuntimeError, match=r"nowhere\.yaml"):
        footprint.stages([*cmd, "--bot", "kitchen-pi"], os.environ, tmp_path)


def test_a_process_sample_has_its_peak_memory():
    now = sample(os.getpid())
    assert now is not None and 0 < now.rss_mb <= now.peak_mb


def test_measuring_a_process_reads_it_at_its_ready_line_and_stops_it(tmp_path, monkeypatch):
    monkeypatch.setattr(footprint, "SETTLE_S", 0.0)
    # some CPU before the ready line: a bare interpreter can read as 0 clock ticks
    script = (
        "import time; print('warming'); sum(range(3_000_000)); print('x ready (1 device)');"
        " time.sleep(60)"
    )
    got = footprint.measure_process([sys.executable, "-c", script], os.environ, tmp_path, "x ready")
    assert got["cpu_s"] > 0 and 0 < got["rss_mb"] <= got["peak_mb"]


@pytest.mark.parametrize(
    ("script", "timeout"),
    [("print('starting'); raise SystemExit(2)", 30.0), ("import time; time.sleep(60)", 0.3)],
)
def test_a_process_that_never_says_ready_is_an_error_with_its_output(tmp_path, script, timeout):
    cmd = [sys.executable, "-c", script]
    with pytest.raises(RuntimeError, match="'x ready' never came"):
        footprint.measure_process(cmd, os.environ, tmp_path, "x ready", timeout=timeout)
