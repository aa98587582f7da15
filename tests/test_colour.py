"""troupe.colour, and that the Hue and Zigbee drivers and simulators agree on every colour."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mqttkit import mqtt_driver, powered

from troupe import colour
from troupe.federation import Action
from troupe.hardware.broker import Broker
from troupe.hardware.hue import BridgeModel, default_layout, running_bridge
from troupe.hardware.mqtt import Zigbee2Mqtt
from troupe.plugins.hue import HueDriver
from troupe.secrets import Secret

pytest_plugins = ("mqttkit",)

USER = "troupe-colour-user"


def test_css_names_and_whites() -> None:
    assert colour.CSS_COLOURS["green"] == (0, 128, 0)  # CSS, not X11's (0, 255, 0)
    assert colour.named("Green").xy == colour.xy_of_rgb(0, 255, 0) == (0.3, 0.6)
    assert colour.named("red").xy == (0.6401, 0.33)
    assert colour.named(" Warm  White") == colour.Colour("warm white", (0.4593, 0.4107), 2700)
    assert colour.named("white").kelvin == 4000
    assert colour.xy_of_hex("#ff0000") == colour.named("red").xy
    with pytest.raises(colour.ColourError, match=r"^a light cannot shine black; turn it off"):
        colour.named("black")
    with pytest.raises(colour.ColourError, match=r"^I don't know the colour “chartreuse”; I know"):
        colour.named("chartreuse")


def test_gamut_fitting_keeps_what_a_light_shows_and_moves_the_rest_to_the_edge() -> None:
    assert colour.fit_gamut((0.6401, 0.33)) == (0.6401, 0.33)
    blue = colour.fit_gamut(colour.named("blue").xy)
    assert blue != colour.named("blue").xy and blue == colour.fit_gamut(blue)
    assert math.dist(blue, colour.named("blue").xy) < 0.005
    assert colour.fit_gamut((0.0, 0.0)) == colour.GAMUT_C[2]  # beyond the blue corner
    assert colour.name_of_xy(blue) == "blue"  # a fitted colour keeps its name
    assert colour.name_of_xy((0.5, 0.2)) is None


def test_the_hue_simulator_shows_the_nearest_colour_its_gamut_holds() -> None:
    model = BridgeModel(*default_layout(1), usernames=[USER])
    body = json.dumps({"on": True, "xy": [0.15, 0.06]}).encode()
    answer = model.handle("PUT", f"/api/{USER}/lights/1/state", body)
    assert answer[-1] == {"success": {"/lights/1/state/xy": [0.15, 0.06]}}
    assert model.light_state("1")["xy"] == list(colour.fit_gamut((0.15, 0.06))) != [0.15, 0.06]
    assert model.changes("1")[-1]["change"]["xy"] == [0.15, 0.06]  # what it was sent


async def test_hue_and_zigbee_lights_show_and_report_every_colour_alike(
    broker: Broker, tmp_path: Path
) -> None:
    """The same name gives the same xy on a Hue and a Zigbee light (up to the Hue gamut),
    and both drivers read it back as that name (or the name sharing its xy)."""
    secret = tmp_path / "hue-username"
    secret.write_text(USER)
    secret.chmod(0o600)
    names = list(colour.CSS_COLOURS)
    with (
        running_bridge(1, usernames=[USER]) as bridge,
        powered(Zigbee2Mqtt(broker.host, broker.port, ("hall bulb",))) as zigbee,
    ):
        hue = HueDriver("hall-pi", {"bridge": bridge.address, "username": Secret(f"file:{secret}")})
        await hue.start({"lamp": {"light": 1}})
        bulb = {"protocol": "zigbee2mqtt", "topic": "hall bulb", "confirm_s": 2}
        async with mqtt_driver(broker, {"bulb": bulb}) as mqtt:
            for name in names:
                await hue.act("lamp", Action("lamp", "set", (("color", name),)))
                await mqtt.act("bulb", Action("bulb", "set", (("color", name),)))
                hue_xy = bridge.model.light_state("1")["xy"]
                zigbee_xy = zigbee["hall bulb"].state["color"]
                expected = colour.named(name).xy
                assert hue_xy == pytest.approx(list(colour.fit_gamut(expected)), abs=1e-4), name
                assert (zigbee_xy["x"], zigbee_xy["y"]) == pytest.approx(expected, abs=1e-4), name
                hue_name = (await hue.state("lamp")).color
                zigbee_name = (await mqtt.state("bulb")).color
                assert hue_name == colour.name_of_xy(expected), name
                assert zigbee_name == name, name  # it remembers the name it sent
                assert colour.named(hue_name).xy == expected, name
        await hue.stop()


def test_a_light_of_another_gamut_gets_and_reports_names_in_its_own() -> None:
    gamut_b = ((0.675, 0.322), (0.409, 0.518), (0.167, 0.04))
    capabilities = {"control": {"colorgamut": [list(c) for c in gamut_b]}}
    assert colour.gamut_of(capabilities) == gamut_b
    assert colour.gamut_of({"control": {}}) == colour.GAMUT_C
    green = colour.fit_gamut(colour.named("green").xy, gamut_b)
    assert math.dist(green, colour.named("green").xy) > colour.NAME_TOLERANCE
    assert colour.name_of_xy(green, gamut=gamut_b) == "green"
    assert colour.name_of_xy(green) != "green"
