"""The Hue bridge simulator with the real phue over HTTP, the hue driver and pairing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import phue
import pytest
from drivekit import act

from troupe.federation import Action
from troupe.hardware import hue as sim
from troupe.hardware.hue import running_bridge
from troupe.plugin import DriverError
from troupe.plugincontext import context_for_test
from troupe.plugins import hue
from troupe.plugins.hue import HueDriver, PairingError
from troupe.secrets import Secret

USER = "troupe-test-user"
# The default layout with 4 lights: 1 colour, 2 ambiance (ct), 3 white (dims), 4 plug;
# groups 1 Living room [1, 2], 2 Bedroom [3, 4], 3 Downstairs (a zone) [1, 3].


@pytest.fixture
def bridge():
    with running_bridge(4, usernames=[USER]) as running:
        yield running


def _phue(address: str, tmp_path: Path, username: str | None = USER) -> phue.Bridge:
    return phue.Bridge(address, username=username, config_file_path=str(tmp_path / "phue.json"))


def _secret(tmp_path: Path, value: str = USER) -> Secret:
    path = tmp_path / "hue-username"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return Secret(f"file:{path}")


async def _driver(
    address: str, tmp_path: Path, devices: dict[str, dict[str, Any]], username: str = USER
) -> HueDriver:
    driver = HueDriver("hall-pi", {"bridge": address, "username": _secret(tmp_path, username)})
    driver.timeout_s = 1.0
    await driver.start(devices)
    return driver


def _get(address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def _post(address: str, path: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://{address}{path}", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- the simulator, driven by the real phue ---------------------------------------------------


def test_phue_reads_and_switches_lights_and_groups(bridge, tmp_path):
    b = _phue(bridge.address, tmp_path)
    assert [light.name for light in b.lights] == [
        "Hue color lamp 1",
        "Hue ambiance lamp 1",
        "Hue white lamp 1",
        "Hue smart plug 1",
    ]
    assert b.get_light(1, "on") is False
    b[1].on = True
    b[1].brightness = 100
    assert b[1].brightness == 100
    assert b.get_light(1, "colormode") == "ct"
    b.set_light(1, "xy", [0.64, 0.33])
    assert b.get_light(1, "colormode") == "xy"
    assert [g.name for g in b.groups] == ["Living room", "Bedroom", "Downstairs"]
    assert b.get_group(3)["type"] == "Zone"
    assert b.get_api()["config"]["whitelist"].keys() == {USER}
    assert b.name == "Philips hue"
    assert not (tmp_path / "phue.json").exists()  # phue writes its file only when registering


def test_group_action_reaches_each_member_light_it_can(bridge, tmp_path):
    b = _phue(bridge.address, tmp_path)
    result = b.set_group(2, {"on": True, "bri": 50})  # Bedroom: the white lamp and the plug
    assert result == [
        [{"success": {"/groups/2/action/on": True}}, {"success": {"/groups/2/action/bri": 50}}]
    ]
    assert bridge.model.light_state("3")["bri"] == 50
    assert "bri" not in bridge.model.light_state("4")
    assert bridge.model.changes("4")[0]["change"] == {"on": True}
    assert b.get_group(2)["state"] == {"all_on": True, "any_on": True}
    b.set_group(0, "on", False)  # group 0: every light
    assert bridge.model.counts() == {"1": 1, "2": 1, "3": 2, "4": 2}
    assert not any(bridge.model.light_state(lid)["on"] for lid in "1234")


def test_bridge_errors_are_in_the_bridge_format(bridge, tmp_path):
    b = _phue(bridge.address, tmp_path)
    b.set_light(1, "on", True)
    assert b.set_light(1, "bri", 300) == [
        [
            {
                "error": {
                    "type": 7,
                    "address": "/lights/1/state/bri",
                    "description": "invalid value, 300, for parameter, bri",
                }
            }
        ]
    ]
    assert b.set_light(1, "ct", 600)[0][0]["error"]["type"] == 7
    assert b.set_light(4, "bri", 10)[0][0]["error"] == {
        "type": 6,
        "address": "/lights/4/state/bri",
        "description": "parameter, bri, not available",
    }
    assert b.get_light(9) == [
        {
            "error": {
                "type": 3,
                "address": "/lights/9",
                "description": "resource, /lights/9, not available",
            }
        }
    ]
    assert b.set_light(3, "bri", 10)[0][0]["error"]["type"] == 201  # the white lamp is off
    assert bridge.model.counts()["1"] == 1  # refused values are not changes
    assert bridge.model.counts()["3"] == 0


def test_unauthorized_user_gets_error_1_and_only_public_config(bridge, tmp_path):
    b = _phue(bridge.address, tmp_path, username="stranger")
    assert b.get_light(1) == [
        {"error": {"type": 1, "address": "/lights/1", "description": "unauthorized user"}}
    ]
    assert b.set_light(1, "on", True)[0][0]["error"]["type"] == 1
    public = b.request("GET", "/api/stranger/config")
    assert public["modelid"] == "BSB002" and "whitelist" not in public
    assert bridge.model.counts()["1"] == 0


def test_bad_json_and_unknown_paths_get_bridge_errors(bridge):
    answer = bridge.model.handle("PUT", f"/api/{USER}/lights/1/state", b"{nope")
    assert answer[0]["error"]["type"] == 2
    answer = bridge.model.handle("GET", f"/api/{USER}/nothing", b"")
    assert answer[0]["error"]["type"] == 4
    answer = bridge.model.handle("POST", "/api", b'{"nodevicetype": 1}')
    assert answer[0]["error"]["type"] == 5
    assert bridge.model.handle("GET", f"/api/{USER}/lights/", b"").keys() == {"1", "2", "3", "4"}


def test_registration_needs_the_link_button(tmp_path):
    with running_bridge(2, link_pressed=False) as rb:
        with pytest.raises(phue.PhueRegistrationException):
            _phue(rb.address, tmp_path, username=None)
        assert not (tmp_path / "phue.json").exists()
        status, answer = _post(rb.address, "/linkbutton", {})
        assert status == 200 and answer["linkbutton"] is True
        b = _phue(rb.address, tmp_path, username=None)
        assert b.username in rb.model.whitelist
        assert b.get_light(1, "reachable") is True


def test_link_button_window_closes_after_30_s():
    now = [1000.0]
    model = sim.BridgeModel(*sim.default_layout(1), clock=lambda: now[0])
    body = json.dumps({"devicetype": "troupe#test"}).encode()
    assert "success" in model.handle("POST", "/api", body)[0]
    now[0] += 31
    assert model.handle("POST", "/api", body)[0]["error"]["type"] == 101
    model.press_link_button()
    now[0] += 29
    assert "success" in model.handle("POST", "/api", body)[0]


def test_counts_and_history_over_http(bridge, tmp_path):
    b = _phue(bridge.address, tmp_path)
    b.set_light(1, {"on": True, "bri": 20}, transitiontime=15)
    b.set_light(1, "on", False)
    b.set_light(1, "on", False)  # every change received counts, even one that changes nothing
    snapshot = _get(bridge.address, "/sim/counts")
    assert snapshot["lights"]["1"]["count"] == 3
    assert snapshot["lights"]["2"]["count"] == 0
    history = snapshot["lights"]["1"]["history"]
    assert history[0]["change"] == {"on": True, "bri": 20, "transitiontime": 15}
    assert history[0]["via"] == "/lights/1/state"
    assert history == bridge.model.changes("1")


def test_control_routes_refuse_bad_input_without_a_500(bridge):
    assert _post(bridge.address, "/sim/down", {"down": "yes"})[0] == 400
    assert _post(bridge.address, "/sim/garbage", {"mode": "lies"})[0] == 400
    assert _post(bridge.address, "/sim/reachable", {"light": "9", "reachable": False})[0] == 400
    assert _post(bridge.address, "/sim/reachable", {"light": "2", "reachable": False}) == (
        200,
        {"ok": True},
    )
    assert bridge.model.light_state("2")["reachable"] is False
    assert _post(bridge.address, "/sim/garbage", {"mode": "text"})[0] == 200
    with pytest.raises(ValueError):
        _phue(bridge.address, Path("/nonexistent")).get_light(1)
    assert _post(bridge.address, "/sim/garbage", {"mode": None})[0] == 200
    assert _post(bridge.address, "/sim/down", {"down": True})[0] == 200
    with pytest.raises(TimeoutError):
        urllib.request.urlopen(f"http://{bridge.address}/api/{USER}/lights", timeout=0.5)
    assert _post(bridge.address, "/sim/down", {"down": False})[0] == 200
    assert _get(bridge.address, f"/api/{USER}/lights/1")["state"]["on"] is False


def test_simulator_command_line(tmp_path):
    assert sim.main(["--lights", "0"]) == 2
    cmd = [sys.executable, "-m", "troupe.hardware.hue", "--port", "0", "--lights", "2"]
    proc = subprocess.Popen(
        [*cmd, "--username", USER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.match(r"hue bridge ready at (127\.0\.0\.1:\d+) \(2 lights\)", first)
        assert found, first
        address = found.group(1)
        b = _phue(address, tmp_path)
        b.set_light(2, "on", True)
        assert _get(address, "/sim/counts")["lights"]["2"]["count"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


# --- the driver -------------------------------------------------------------------------------


@pytest.mark.compat
async def test_on_off_toggle_a_light(bridge, tmp_path):
    driver = await _driver(bridge.address, tmp_path, {"hall light": {"light": 1}})
    assert await act(driver, Action("hall light", "on")) == "turned on the hall light"
    assert bridge.model.light_state("1")["on"] is True
    assert (await driver.state("hall light")).on is True
    toggled = await act(driver, Action("hall light", "toggle"))
    assert toggled == "toggled the hall light (now off)"
    assert bridge.model.light_state("1")["on"] is False
    await act(driver, Action("hall light", "toggle"))
    await act(driver, Action("hall light", "off"))
    assert [c["change"] for c in bridge.model.changes("1")] == [
        {"on": True},
        {"on": False},
        {"on": True},
        {"on": False},
    ]
    assert bridge.model.counts() == {"1": 4, "2": 0, "3": 0, "4": 0}


async def test_brightness_percent_maps_to_bri_and_zero_is_off(bridge, tmp_path):
    driver = await _driver(bridge.address, tmp_path, {"lamp": {"light": "Hue white lamp 1"}})
    done = await act(driver, Action("lamp", "set", (("brightness", 40),)))
    assert done == "set the lamp to 40%"
    assert bridge.model.changes("3")[-1]["change"] == {"on": True, "bri": 102}
    state = await driver.state("lamp")
    assert (state.on, state.brightness) == (True, 40)
    await act(driver, Action("lamp", "set", (("brightness", 100),)))
    assert bridge.model.light_state("3")["bri"] == 254
    await act(driver, Action("lamp", "set", (("brightness", 1),)))
    assert bridge.model.light_state("3")["bri"] == 3
    done = await act(driver, Action("lamp", "set", (("brightness", 0),)))
    assert done == "turned off the lamp"
    assert bridge.model.light_state("3")["on"] is False
    assert bridge.model.counts()["3"] == 4


@pytest.mark.compat
async def test_colour_names_and_temperatures(bridge, tmp_path):
    devices = {"color": {"light": 1}, "ambiance": {"light": 2}}
    driver = await _driver(bridge.address, tmp_path, devices)
    done = await act(driver, Action("color", "set", (("color", "Red"),)))
    assert done == "set the color to red"
    light = bridge.model.light_state("1")
    assert (light["on"], light["colormode"], light["xy"]) == (True, "xy", [0.6401, 0.33])
    assert (await driver.state("color")).color == "red"
    await act(driver, Action("color", "set", (("brightness", 50), ("color", "blue"))))
    assert bridge.model.changes("1")[-1]["change"] == {
        "on": True,
        "bri": 127,
        "xy": [0.1535, 0.0599],
    }
    await act(driver, Action("color", "set", (("temperature", 2700),)))
    assert bridge.model.light_state("1")["ct"] == 370
    state = await driver.state("color")
    assert (state.temperature, state.color) == (2703, "warm white")
    await act(driver, Action("ambiance", "set", (("color", "warm white"),)))
    assert bridge.model.light_state("2")["ct"] == 370
    await act(driver, Action("ambiance", "set", (("temperature", 10000),)))
    assert bridge.model.light_state("2")["ct"] == 153  # clamped to what Hue lights take
    await act(driver, Action("ambiance", "set", (("temperature", 1000),)))
    assert bridge.model.light_state("2")["ct"] == 500
    with pytest.raises(DriverError, match="cannot change colour"):
        await act(driver, Action("ambiance", "set", (("color", "green"),)))
    with pytest.raises(DriverError, match="don't know the colour “chartreuse”"):
        await act(driver, Action("color", "set", (("color", "chartreuse"),)))


async def test_transition_goes_as_deciseconds(bridge, tmp_path):
    devices = {"fade": {"light": 1, "transition_s": 1.5}, "room": {"group": 1, "transition_s": 4}}
    driver = await _driver(bridge.address, tmp_path, devices)
    await act(driver, Action("fade", "on"))
    assert bridge.model.changes("1")[-1]["change"] == {"on": True, "transitiontime": 15}
    await act(driver, Action("room", "off"))
    assert bridge.model.changes("2")[-1] == {
        "at": bridge.model.changes("2")[-1]["at"],
        "via": "/groups/1/action",
        "change": {"on": False, "transitiontime": 40},
    }


async def test_rooms_and_zones_by_name(bridge, tmp_path):
    devices = {"living room": {"group": "living room"}, "downstairs": {"group": "Downstairs"}}
    driver = await _driver(bridge.address, tmp_path, devices)
    assert await act(driver, Action("living room", "on")) == ("turned on the living room")
    assert [bridge.model.light_state(i)["on"] for i in "1234"] == [True, True, False, False]
    assert (await driver.state("living room")).on is True
    await act(driver, Action("downstairs", "toggle"))  # lamp 1 is on: any_on
    assert [bridge.model.light_state(i)["on"] for i in "1234"] == [False, True, False, False]
    await act(driver, Action("downstairs", "set", (("brightness", 30),)))
    assert bridge.model.light_state("1")["bri"] == 76
    assert bridge.model.light_state("3")["bri"] == 76
    state = await driver.state("downstairs")
    assert (state.on, state.brightness) == (True, 30)
    assert bridge.model.counts() == {"1": 3, "2": 1, "3": 2, "4": 0}


async def test_unknown_light_and_group_are_one_sentence(bridge, tmp_path):
    devices = {"ghost": {"light": 99}, "nowhere": {"group": "Attic"}, "gone": {"light": "Nope"}}
    driver = await _driver(bridge.address, tmp_path, devices)
    with pytest.raises(DriverError) as err:
        await act(driver, Action("ghost", "on"))
    assert str(err.value) == (
        f"the Hue bridge at {bridge.address} has no light 99; check the light option of the ghost"
    )
    with pytest.raises(DriverError, match=r"no group named “Attic” .*Living room"):
        await act(driver, Action("nowhere", "on"))
    with pytest.raises(DriverError, match="no light named “Nope”"):
        await driver.state("gone")


async def test_out_of_range_brightness_is_the_bridges_error_7_translated(bridge, tmp_path):
    driver = await _driver(bridge.address, tmp_path, {"lamp": {"light": 1}})
    with pytest.raises(DriverError) as err:
        await act(driver, Action("lamp", "set", (("brightness", 150),)))
    assert str(err.value) == (
        "the Hue bridge refused that brightness (it takes 0 to 100%) for the lamp"
    )
    assert bridge.model.light_state("1")["bri"] == 254


async def test_what_a_light_cannot_do(bridge, tmp_path):
    driver = await _driver(bridge.address, tmp_path, {"plug": {"light": 4}, "white": {"light": 3}})
    with pytest.raises(DriverError, match=r"^the plug cannot dim; it only turns on and off$"):
        await act(driver, Action("plug", "set", (("brightness", 50),)))
    with pytest.raises(DriverError, match=r"^the white cannot change colour$"):
        await act(driver, Action("white", "set", (("color", "red"),)))
    with pytest.raises(DriverError, match=r"^the white cannot change colour temperature$"):
        await act(driver, Action("white", "set", (("temperature", 3000),)))
    assert await act(driver, Action("plug", "on")) == "turned on the plug"
    state = await driver.state("plug")
    assert (state.on, state.brightness, state.describe()) == (True, None, "on")
    assert bridge.model.counts() == {"1": 0, "2": 0, "3": 0, "4": 1}


async def test_unauthorized_username_is_one_sentence(bridge, tmp_path):
    driver = await _driver(bridge.address, tmp_path, {"lamp": {"light": 1}}, username="stranger")
    with pytest.raises(DriverError, match="does not know troupe's username; pair again"):
        await act(driver, Action("lamp", "on"))
    with pytest.raises(DriverError, match="does not know troupe's username"):
        await driver.state("lamp")
    assert bridge.model.counts()["1"] == 0


async def test_unreachable_light_is_offline_and_not_switched(bridge, tmp_path):
    driver = await _driver(bridge.address, tmp_path, {"lamp": {"light": 2}})
    bridge.model.set_reachable("2", False)
    state = await driver.state("lamp")
    assert (state.online, state.describe()) == (False, "offline")
    with pytest.raises(DriverError, match="cannot reach the lamp"):
        await act(driver, Action("lamp", "on"))
    assert bridge.model.counts()["2"] == 0


async def test_bridge_down_is_a_driver_error_not_a_hang(bridge, tmp_path):
    driver = await _driver(bridge.address, tmp_path, {"lamp": {"light": 1}})
    driver.timeout_s = 0.5
    bridge.set_down(True)
    with pytest.raises(DriverError) as err:
        await asyncio.wait_for(act(driver, Action("lamp", "on")), 10)
    assert str(err.value) == (
        f"the Hue bridge at {bridge.address} did not answer; check it is powered and on the network"
    )
    with pytest.raises(DriverError, match="did not answer"):
        await asyncio.wait_for(driver.state("lamp"), 10)
    bridge.set_down(False)
    assert await act(driver, Action("lamp", "on")) == "turned on the lamp"
    assert bridge.model.counts()["1"] == 1


async def test_nothing_listening_is_a_driver_error(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    driver = await _driver(address, tmp_path, {"lamp": {"light": 1}})
    with pytest.raises(DriverError, match=f"^the Hue bridge at {address} did not answer"):
        await asyncio.wait_for(act(driver, Action("lamp", "on")), 10)


@pytest.mark.parametrize("mode", ["text", "shape"])
async def test_garbage_answers_are_a_driver_error(bridge, tmp_path, mode):
    driver = await _driver(bridge.address, tmp_path, {"lamp": {"light": 1}, "room": {"group": 1}})
    bridge.set_garbage(mode)
    for device in ("lamp", "room"):
        with pytest.raises(DriverError, match="gave an answer that is not the Hue API"):
            await act(driver, Action(device, "on"))
        with pytest.raises(DriverError, match="gave an answer that is not the Hue API"):
            await driver.state(device)
    bridge.set_garbage(None)
    assert await act(driver, Action("lamp", "on")) == "turned on the lamp"
    assert bridge.model.counts()["1"] == 1


async def test_garbage_in_a_put_answer_is_caught(bridge, tmp_path):
    driver = await _driver(bridge.address, tmp_path, {"lamp": {"light": 1}})
    original = bridge.model.handle

    def half_garbage(method: str, path: str, body: bytes) -> Any:
        return {"weird": True} if method == "PUT" else original(method, path, body)

    bridge.model.handle = half_garbage  # type: ignore[method-assign]
    with pytest.raises(DriverError, match="not the Hue API"):
        await act(driver, Action("lamp", "on"))


@pytest.mark.compat
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lihgt": 1}, "the lamp: unknown option 'lihgt'"),
        ({"light": 1, "group": 2}, "^the lamp: light: give exactly one of light"),
        ({}, "^the lamp: light: give exactly one of light"),
        ({"light": 1, "transition_s": -1}, "the lamp: transition_s: "),
        ({"light": [1]}, "the lamp: light"),
    ],
)
async def test_bad_device_options_name_the_device_and_key(tmp_path, options, message):
    driver = HueDriver("hall-pi", {"bridge": "127.0.0.1:1", "username": _secret(tmp_path)})
    with pytest.raises(DriverError, match=message):
        await driver.start({"lamp": options})


@pytest.mark.compat
async def test_missing_section_bridge_or_username(tmp_path):
    with pytest.raises(DriverError, match=r"need a hue: section"):
        await HueDriver("hall-pi", {}).start({"lamp": {"light": 1}})
    with pytest.raises(DriverError, match="not host or host:port"):
        await HueDriver("hall-pi", {"bridge": "http://hue.local/"}).start({"lamp": {"light": 1}})
    with pytest.raises(
        DriverError, match=r"^hue\.username: secrets are not written in the federation file"
    ):
        await HueDriver("hall-pi", {"bridge": "h", "username": "abc"}).start({"lamp": {"light": 1}})
    driver = HueDriver("hall-pi", {"bridge": "127.0.0.1:1"})
    await driver.start({"lamp": {"light": 1}})
    with pytest.raises(DriverError, match="no username for the Hue bridge"):
        await act(driver, Action("lamp", "on"))
    missing = HueDriver("hall-pi", {"bridge": "127.0.0.1:1", "username": "file:/nonexistent/u"})
    await missing.start({"lamp": {"light": 1}})
    with pytest.raises(DriverError, match=r"cannot read the Hue username: .*does not exist"):
        await act(missing, Action("lamp", "on"))


def test_phue_never_logs_the_username(bridge, tmp_path, caplog):
    caplog.set_level("DEBUG")
    driver = HueDriver("hall-pi", {"bridge": bridge.address, "username": _secret(tmp_path)})

    async def run() -> None:
        await driver.start({"lamp": {"light": 1}})
        await act(driver, Action("lamp", "on"))

    asyncio.run(run())
    assert USER not in caplog.text


# --- pairing ------------------------------------------------------------------------------------


def test_pair_retries_until_the_button_is_pressed_then_stores_0600(tmp_path):
    with running_bridge(1, link_pressed=False) as rb:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["path"] = hue.pair(rb.address, tmp_path / "sub" / "hue-user", retry_s=0.05)
            except PairingError as err:
                box["error"] = err

        thread = threading.Thread(target=run)
        thread.start()
        _until(lambda: rb.model.requests >= 3, "three refused registrations")
        assert not (tmp_path / "sub" / "hue-user").exists()
        rb.model.press_link_button()
        thread.join(timeout=20)
        assert "error" not in box
        path = box["path"]
        assert path == tmp_path / "sub" / "hue-user"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        username = Secret(f"file:{path}").reveal()
        assert username in rb.model.whitelist
        assert rb.model.whitelist[username]["name"] == "python_hue"
        assert os.listdir(tmp_path / "sub") == ["hue-user"]


def test_pair_gives_up_when_the_button_is_never_pressed(tmp_path):
    with running_bridge(1, link_pressed=False) as rb:
        with pytest.raises(PairingError, match=r"link button .* was not pressed within 0 s"):
            hue.pair(rb.address, tmp_path / "u", wait_s=0.2, retry_s=0.05)
        assert not (tmp_path / "u").exists()
        assert rb.model.whitelist == {}


def test_pair_with_no_bridge_or_garbage(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    with pytest.raises(PairingError, match="did not answer"):
        hue.pair(address, tmp_path / "u", wait_s=1)
    with running_bridge(1) as rb:
        rb.set_garbage("text")
        with pytest.raises(PairingError, match="not the Hue API"):
            hue.pair(rb.address, tmp_path / "u", wait_s=1)
        rb.set_garbage("shape")
        with pytest.raises(PairingError, match="not the Hue API"):
            hue.pair(rb.address, tmp_path / "u", wait_s=1)
    assert not (tmp_path / "u").exists()


def test_pair_command_line_prints_the_username_line(tmp_path, capsys):
    with running_bridge(1) as rb:
        out = tmp_path / "hue-user"
        assert hue.main(["pair", "--bridge", rb.address, "--out", str(out)]) == 0
        assert capsys.readouterr().out == f"username: file:{out}\n"
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert out.read_text().strip() in rb.model.whitelist
    assert hue.main(["pair", "--bridge", address_nobody(), "--out", str(out), "--wait-s", "1"]) == 1
    assert "did not answer" in capsys.readouterr().err


def address_nobody() -> str:
    return f"127.0.0.1:{_free_port()}"


async def test_pair_hue_chat_command_answers_now_and_when_paired(tmp_path):
    spec = hue.pair_hue.__troupe_command__
    assert spec.admin and spec.pattern.fullmatch("pair the hue bridge")
    target = tmp_path / "secrets" / "hue-username"
    with running_bridge(1) as rb:
        hue_section = {"bridge": rb.address, "username": Secret(f"file:{target}")}
        ctx, heard = context_for_test(
            hue.pair_hue, "pair hue", bot="hall-pi", sections={"hue": hue_section}
        )
        await hue.pair_hue(ctx)
        assert heard.said == [
            f"Press the link button on the Hue bridge at {rb.address} now; "
            "I'll keep trying for 30 s."
        ]
        await asyncio.wait_for(asyncio.gather(*hue._PAIRINGS), 20)
        assert heard.said[1] == (
            f"Paired: the username is in {target} (mode 600) on hall-pi. "
            f"The hue: section needs `username: file:{target}`."
        )
        assert Secret(f"file:{target}").reveal() in rb.model.whitelist
    ctx, heard = context_for_test(hue.pair_hue, "pair the hue bridge")
    await hue.pair_hue(ctx)
    assert heard.said == ["There is no Hue bridge in the federation file: add hue: {bridge: HOST}."]


# --- three bot processes, one bridge ------------------------------------------------------------


@pytest.mark.compat
@pytest.mark.timeout(240)
def test_three_bots_switch_a_hue_light_once_and_pair_from_chat(tmp_path, monkeypatch):
    import fleetkit

    lamp = "  desk lamp: {kind: light, area: hall, driver: hue, light: Hue color lamp 1}\n"
    monkeypatch.setattr(
        fleetkit, "DEVICES", fleetkit.DEVICES.replace("devices:\n", "devices:\n" + lamp, 1)
    )
    with running_bridge(4, usernames=[USER]) as rb:
        secret = _secret(tmp_path)
        extra = f"hue: {{bridge: '{rb.address}', username: '{secret.ref}'}}\n"
        with fleetkit.house(tmp_path, plugins="[troupe.plugins.hue]", extra=extra) as h:
            ts = h.say("turn on the desk lamp")
            h.wait_for(lambda: len(h.replies(ts)) >= 1, 60, "the answer to turn on")
            assert [r["text"] for r in h.replies(ts)] == ["Turned on the desk lamp."]
            ts = h.say("set the desk lamp to 30%")
            h.wait_for(lambda: len(h.replies(ts)) >= 1, 60, "the answer to set")
            assert [r["text"] for r in h.replies(ts)] == ["Set the desk lamp to 30%."]
            assert bridge_state(rb, "1") == (True, 76)

            ts = h.say("pair hue")
            h.wait_for(lambda: len(h.replies(ts)) >= 2, 60, "both pairing answers")
            texts = [r["text"] for r in h.replies(ts)]
            assert texts[0].startswith("Press the link button on the Hue bridge")
            assert texts[1].startswith("Paired: the username is in ")
            new_user = secret.reveal()
            assert new_user != USER and new_user in rb.model.whitelist

            ts = h.say("turn off the desk lamp")
            h.wait_for(lambda: len(h.replies(ts)) >= 1, 60, "the answer to turn off")
            assert [r["text"] for r in h.replies(ts)] == ["Turned off the desk lamp."]
            time.sleep(1.5)  # settle: a duplicate would have to show up within the stagger
            assert rb.model.counts()["1"] == 3
            assert [c["change"] for c in rb.model.changes("1")] == [
                {"on": True},
                {"on": True, "bri": 76},
                {"on": False},
            ]
            assert rb.model.whitelist[new_user]["last use date"]


def bridge_state(rb, light: str) -> tuple[bool, int]:
    state = rb.model.light_state(light)
    return state["on"], state["bri"]
