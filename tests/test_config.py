"""The federation file: the example loads, each mistake is one clear line, secrets stay secret."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from troupe.config import (
    BotSettings,
    ConfigError,
    Federation,
    Problem,
    SceneState,
    check,
    load,
)
from troupe.secrets import Secret, SecretError

EXAMPLE = """\
federation: home
language: en                 # hassil / home-assistant-intents language
slack:
  mode: app-per-bot          # app-per-bot | shared-app | rtm  (the local workspace serves all three)
  channel: "#home"           # the channel the bots listen in (id or #name)
  base_url: null             # null = real Slack; e.g. http://127.0.0.1:3000/api/ = local workspace
  bot_token: null            # shared-app and rtm modes: the one bot token (env:/file:)
  app_token: null            # shared-app: the one app token
bots:                        # the roster; a bot knows itself by --bot, $TROUPE_BOT, else hostname
  kitchen-pi: {bot_token: env:KITCHEN_BOT_TOKEN, app_token: env:KITCHEN_APP_TOKEN}
  hall-pi:    {bot_token: file:/etc/troupe/hall.token, app_token: file:/etc/troupe/hall.app}
  garage-pi:  {}
areas: {kitchen: [cuisine], hall: [hallway], garage: [], porch: []}   # area -> aliases
channels: {"#kitchen": kitchen}          # extra channels, each with its default area
mqtt: {host: 127.0.0.1, port: 1883, username: null, password: null, tls: false, bus: true, bus_key: env:TROUPE_BUS_KEY}
hue:  {bridge: 127.0.0.1:8000, username: env:HUE_USER}
slackmq: {stale_s: 30, lease_s: 15, stagger_s: 0.4, linger_s: 45}
journal: ~/.local/state/troupe/{bot}.sqlite3
devices:
  kitchen lamp: {kind: light,  area: kitchen, driver: gpio_relay, owner: kitchen-pi, pin: 17, active_high: false, aliases: [kitchen light]}
  kitchen fan:  {kind: fan,    area: kitchen, driver: gpio_relay, owner: kitchen-pi, pin: 27}
  hall light:   {kind: light,  area: hall,    driver: hue, light: 3}
  porch switch: {kind: switch, area: porch,   driver: mqtt, protocol: tasmota, topic: porch}
scenes:
  movie mode: {hall light: {on: true, brightness: 20}, kitchen lamp: off}
aliases: {"goodnight": "turn off all lights"}   # extra phrase -> command text
access: {admins: [U012ABC], users: ["*"], bots: []}
plugins: []                  # extra plugin modules to load (import paths)
"""  # noqa: E501

SHARED = "\n".join(
    line.split(":")[0] + ": {}" if line.startswith(("  kitchen-pi:", "  hall-pi:")) else line
    for line in EXAMPLE.replace("mode: app-per-bot ", "mode: shared-app ")
    .replace("  bot_token: null ", "  bot_token: env:SHARED_BOT_TOKEN ")
    .replace("  app_token: null ", "  app_token: env:SHARED_APP_TOKEN ")
    .split("\n")
)


def write(tmp_path: Path, text: str, name: str = "federation.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(text: str, old: str, new: str) -> str:
    """The example with one fragment changed; fails loudly if the fragment is not there."""
    assert text.count(old) == 1, f"fragment {old!r} must occur exactly once"
    return text.replace(old, new)


def line_of(text: str, fragment: str) -> int:
    """The 1-based line where `fragment` first occurs in `text`."""
    return text[: text.index(fragment)].count("\n") + 1


def only_problem(path: Path) -> Problem:
    problems = check(path)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


# --- the example ------------------------------------------------------------------------


@pytest.mark.compat
def test_the_example_loads(tmp_path: Path) -> None:
    fed = load(write(tmp_path, EXAMPLE))

    assert check(write(tmp_path, EXAMPLE)) == []
    assert fed.federation == "home"
    assert fed.language == "en"
    assert fed.slack.mode == "app-per-bot"
    assert fed.slack.channel == "#home"
    assert fed.slack.base_url is None
    assert list(fed.bots) == ["kitchen-pi", "hall-pi", "garage-pi"]
    assert fed.bots["kitchen-pi"].bot_token == Secret("env:KITCHEN_BOT_TOKEN")
    assert fed.bots["hall-pi"].app_token == Secret("file:/etc/troupe/hall.app")
    assert fed.areas == {"kitchen": ("cuisine",), "hall": ("hallway",), "garage": (), "porch": ()}
    assert fed.channels == {"#kitchen": "kitchen"}
    assert fed.mqtt is not None and fed.mqtt.bus and fed.mqtt.port == 1883
    assert fed.section("hue") == {"bridge": "127.0.0.1:8000", "username": "env:HUE_USER"}
    assert fed.slackmq.linger_s == 45 and fed.slackmq.stagger_s == 0.4
    assert fed.access.admins == ("U012ABC",) and fed.access.users == ("*",)
    assert fed.plugins == ()
    assert fed.aliases == {"goodnight": "turn off all lights"}


def test_access_takes_user_names_as_well_as_ids(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "admins: [U012ABC]", "admins: [U012ABC, Alice, '@bob.smith']")
    fed = load(write(tmp_path, text))
    assert fed.access.admins == ("U012ABC", "@alice", "@bob.smith")


def test_devices_keep_common_fields_and_driver_options(tmp_path: Path) -> None:
    fed = load(write(tmp_path, EXAMPLE))

    lamp = fed.devices["kitchen lamp"]
    assert (lamp.kind, lamp.area, lamp.driver, lamp.owner) == (
        "light",
        "kitchen",
        "gpio_relay",
        "kitchen-pi",
    )
    assert lamp.aliases == ("kitchen light",)
    assert lamp.options == {"pin": 17, "active_high": False}
    assert fed.devices["porch switch"].options == {"protocol": "tasmota", "topic": "porch"}
    assert fed.devices["hall light"].owner is None
    assert fed.device_name("Kitchen  Light") == "kitchen lamp"
    assert fed.device_name("attic fan") is None
    assert set(fed.devices_owned_by("kitchen-pi")) == {"kitchen lamp", "kitchen fan"}


def test_scene_on_and_off_are_words_not_yaml_booleans(tmp_path: Path) -> None:
    fed = load(write(tmp_path, EXAMPLE))

    scene = fed.scenes["movie mode"]
    assert scene["hall light"] == SceneState(on=True, brightness=20)
    assert scene["kitchen lamp"] == SceneState(on=False)


def test_scenes_take_home_assistants_spellings(tmp_path: Path) -> None:
    text = edit(
        EXAMPLE,
        "movie mode: {hall light: {on: true, brightness: 20}, kitchen lamp: off}",
        "movie mode: {hall light: {state: on, brightness_pct: 20, color_temp_kelvin: 2700}, "
        "kitchen lamp: {state: 'off'}}",
    )
    scene = load(write(tmp_path, text)).scenes["movie mode"]
    assert scene["hall light"] == SceneState(on=True, brightness=20, temperature=2700)
    assert scene["kitchen lamp"] == SceneState(on=False)
    assert scene["hall light"].model_dump(exclude_none=True) == {
        "on": True,
        "brightness": 20,
        "temperature": 2700,
    }


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("{brightness: 20, brightness_pct: 30}", "brightness_pct and brightness say the same"),
        ("{state: dim}", "state must be on or off (got 'dim')"),
        ("{state: on, brightness_pct: 120}", "must be between 0 and 100"),
    ],
)
def test_a_home_assistant_spelling_gone_wrong_is_one_line(
    tmp_path: Path, state: str, words: str
) -> None:
    text = edit(EXAMPLE, "hall light: {on: true, brightness: 20}", f"hall light: {state}")
    problem = only_problem(write(tmp_path, text))
    assert problem.line == line_of(text, "movie mode:")
    assert problem.key.startswith("scenes.movie mode.hall light")
    assert words in problem.message


def test_names_are_canonical(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "  porch switch: {kind", "  Porch   SWITCH : {kind")

    fed = load(write(tmp_path, text))

    assert "porch switch" in fed.devices


def test_a_bot_without_tokens_reads_them_from_the_environment_by_its_name(tmp_path: Path) -> None:
    fed = load(write(tmp_path, EXAMPLE))

    assert fed.bot("garage-pi") == BotSettings(
        bot_token=Secret("env:GARAGE_PI_BOT_TOKEN"), app_token=Secret("env:GARAGE_PI_APP_TOKEN")
    )


def test_journal_path_expands_home_and_bot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    fed = load(write(tmp_path, EXAMPLE))

    assert fed.journal_path("hall-pi") == tmp_path / ".local/state/troupe/hall-pi.sqlite3"


# --- problems: one line each, with the right line and key ---------------------------------


def test_problem_is_one_line_in_the_documented_shape() -> None:
    problem = Problem(
        "federation.yaml",
        12,
        "devices.kitchen fan.owner",
        "'kitchn-pi' is not a bot in the roster; use one of kitchen-pi, hall-pi, garage-pi.",
    )

    assert str(problem) == (
        "federation.yaml:12: devices.kitchen fan.owner: 'kitchn-pi' is not a bot in the roster;"
        " use one of kitchen-pi, hall-pi, garage-pi."
    )


def test_owner_not_in_roster_matches_the_documented_line(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "owner: kitchen-pi, pin: 27", "owner: kitchn-pi, pin: 27")
    path = write(tmp_path, text)

    problem = only_problem(path)

    assert str(problem) == (
        f"{path}:{line_of(text, 'kitchen fan:')}: devices.kitchen fan.owner: 'kitchn-pi' is not"
        " a bot in the roster; use one of kitchen-pi, hall-pi, garage-pi."
    )


CASES = [
    pytest.param(
        "area: hall,    driver: hue",
        "area: hal,     driver: hue",
        "devices.hall light.area",
        "hall light:",
        "area 'hal' is not declared in areas; declare it or use one of kitchen, hall, garage, "
        "porch",
        id="area-undeclared",
    ),
    pytest.param(
        "area: hall,    driver: hue",
        "area: hallway, driver: hue",
        "devices.hall light.area",
        "hall light:",
        "'hallway' is an alias of area 'hall'; use the area's name",
        id="area-is-alias",
    ),
    pytest.param(
        "{hall light: {on",
        "{hal light: {on",
        "scenes.movie mode.hal light",
        "movie mode:",
        "'hal light' is not a device; did you mean 'hall light'?",
        id="scene-device-unknown",
    ),
    pytest.param(
        "brightness: 20",
        "brightness: 120",
        "scenes.movie mode.hall light.brightness",
        "movie mode:",
        "must be between 0 and 100 (got 120)",
        id="scene-brightness",
    ),
    pytest.param(
        "kitchen lamp: off}",
        "kitchen lamp: dim}",
        "scenes.movie mode.kitchen lamp",
        "movie mode:",
        "'dim' is not a device state",
        id="scene-state-word",
    ),
    pytest.param(
        '{"#kitchen": kitchen}',
        '{"#kitchen": kitchn}',
        "channels.#kitchen",
        "channels:",
        "area 'kitchn' is not declared in areas",
        id="channel-area-unknown",
    ),
    pytest.param(
        '"goodnight": "turn off all lights"',
        '"goodnight": ""',
        "aliases.goodnight",
        '"goodnight"',
        "the alias stands for no command",
        id="alias-empty",
    ),
    pytest.param(
        '"goodnight": "turn off all lights"',
        '"goodnight": null',
        "aliases.goodnight",
        '"goodnight"',
        "the alias stands for no command",
        id="alias-null",
    ),
    pytest.param(
        "driver: hue, light: 3}",
        "driver: hue, light: 3, aliases: [Kitchen Light]}",
        "devices.hall light.aliases[0]",
        "hall light:",
        "'kitchen light' already names device 'kitchen lamp'; each name must lead to one device",
        id="alias-duplicates-alias",
    ),
    pytest.param(
        "driver: hue, light: 3}",
        "driver: hue, light: 3, aliases: [kitchen fan]}",
        "devices.hall light.aliases[0]",
        "hall light:",
        "'kitchen fan' already names device 'kitchen fan'",
        id="alias-duplicates-name",
    ),
    pytest.param(
        "  porch switch: {kind: switch",
        "  Kitchen Fan: {kind: switch",
        "devices.Kitchen Fan",
        "Kitchen Fan:",
        "'Kitchen Fan' and 'kitchen fan' are the same name ('kitchen fan'); keep one",
        id="device-names-differ-only-in-case",
    ),
    pytest.param(
        "hall: [hallway]",
        "hall: [cuisine]",
        "areas.hall[0]",
        "areas:",
        "'cuisine' already names area 'kitchen'",
        id="area-alias-duplicate",
    ),
    pytest.param(
        "garage-pi:  {}",
        "garage-pi:  {bot_token: null}",
        "bots.garage-pi.bot_token",
        "garage-pi:",
        "bot 'garage-pi' has no bot_token; in mode app-per-bot each bot is its own Slack app",
        id="app-per-bot-missing-token",
    ),
    pytest.param(
        "  bot_token: null ",
        "  bot_token: env:ONE_TOKEN ",
        "slack.bot_token",
        "  bot_token: env:ONE",
        "is not used in mode app-per-bot",
        id="app-per-bot-shared-token-unused",
    ),
    pytest.param(
        "linger_s: 45",
        "linger_s: 30",
        "slackmq.linger_s",
        "slackmq:",
        "must be greater than stale_s (30): a bot that starts late must still find the claim pin",
        id="linger-not-above-stale",
    ),
    pytest.param(
        "lease_s: 15",
        "lease_s: 28",
        "slackmq.stale_s",
        "slackmq:",
        "must be greater than lease_s + 3 (31): a command whose holder died is taken over",
        id="stale-not-above-lease-and-redelivery",
    ),
    pytest.param(
        "journal: ~",
        "jornal: ~",
        "jornal",
        "jornal:",
        "'jornal' is not a key troupe knows at the top level; did you mean 'journal'?",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "bridge: 127.0.0.1:8000",
        "bridge: 127.0.0.1:8000, usernam: x",
        "hue.usernam",
        "hue:",
        "'usernam' is not a key troupe knows here; did you mean 'username'?",
        id="unknown-nested-key",
    ),
    pytest.param(
        "owner: kitchen-pi, pin: 27",
        "onwer: kitchen-pi, pin: 27",
        "devices.kitchen fan.onwer",
        "kitchen fan:",
        "did you mean 'owner'? ('onwer' would be passed to the gpio_relay driver as an option)",
        id="device-misspelt-common-field",
    ),
    pytest.param(
        "kind: fan,",
        "kind: fna,",
        "devices.kitchen fan.kind",
        "kitchen fan:",
        "'fna' is not allowed; use one of light, fan, switch, outlet, cover, sensor; "
        "did you mean 'fan'?",
        id="device-kind",
    ),
    pytest.param(
        "mode: app-per-bot ",
        "mode: app-per-bots ",
        "slack.mode",
        "  mode:",
        "'app-per-bots' is not allowed; use one of app-per-bot, shared-app, rtm",
        id="slack-mode",
    ),
    pytest.param(
        'channel: "#home"',
        "channel: #home",
        "slack.channel",
        "  channel:",
        "a #name must be quoted in YAML",
        id="unquoted-channel",
    ),
    pytest.param(
        "port: 1883",
        "port: 99999",
        "mqtt.port",
        "mqtt:",
        "less than or equal to 65535",
        id="mqtt-port",
    ),
    pytest.param(
        "language: en ",
        "language: eng ",
        "language",
        "language:",
        "'eng' is not a language of home-assistant-intents; did you mean 'en'?",
        id="language",
    ),
    pytest.param(
        "language: en ",
        "language: en\nlanguage: de ",
        "language",
        "language: de",
        "appears twice (first on line 2); keep one",
        id="duplicate-yaml-key",
    ),
    pytest.param(
        "admins: [U012ABC]",
        "admins: [alice smith]",
        "access.admins[0]",
        "access:",
        "'alice smith' is not a Slack user id (like U012ABC), a user name (like @alice)",
        id="access-user-id",
    ),
]


@pytest.mark.compat
@pytest.mark.parametrize(("old", "new", "key", "line_at", "message"), CASES)
def test_each_mistake_is_reported_with_its_line_and_key(
    tmp_path: Path, old: str, new: str, key: str, line_at: str, message: str
) -> None:
    text = edit(EXAMPLE, old, new)

    problem = only_problem(write(tmp_path, text))

    assert (problem.key, problem.line) == (key, line_of(text, line_at))
    assert message in problem.message
    assert "\n" not in str(problem)


def test_shared_app_example_with_a_bus_loads(tmp_path: Path) -> None:
    fed = load(write(tmp_path, SHARED))

    assert fed.slack.mode == "shared-app"
    assert fed.bot("kitchen-pi") == BotSettings(
        bot_token=Secret("env:SHARED_BOT_TOKEN"), app_token=Secret("env:SHARED_APP_TOKEN")
    )


def test_shared_app_refuses_owned_devices_without_the_bus(tmp_path: Path) -> None:
    text = edit(SHARED, "bus: true", "bus: false")

    problems = check(write(tmp_path, text))

    assert [(p.key, p.line) for p in problems] == [
        ("devices.kitchen lamp.owner", line_of(text, "kitchen lamp:")),
        ("devices.kitchen fan.owner", line_of(text, "kitchen fan:")),
    ]
    for problem in problems:
        assert "Slack hands each event to one bot only" in problem.message
        assert "use mode app-per-bot, or configure mqtt with bus: true" in problem.message


def test_shared_app_without_mqtt_at_all_refuses_owned_devices(tmp_path: Path) -> None:
    text = edit(SHARED, "mqtt: {host: 127.0.0.1, port: 1883, username: null, password: null, "
                "tls: false, bus: true, bus_key: env:TROUPE_BUS_KEY}\n", "")  # fmt: skip

    keys = [p.key for p in check(write(tmp_path, text))]

    assert keys == ["devices.kitchen lamp.owner", "devices.kitchen fan.owner"]


def test_shared_app_needs_both_shared_tokens(tmp_path: Path) -> None:
    text = edit(SHARED, "  app_token: env:SHARED_APP_TOKEN ", "  app_token: null ")

    problem = only_problem(write(tmp_path, text))

    assert problem.key == "slack.app_token"
    assert "mode shared-app needs slack.app_token" in problem.message


def test_rtm_needs_the_shared_bot_token_and_no_per_bot_tokens(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "mode: app-per-bot ", "mode: rtm ")

    problems = check(write(tmp_path, text))

    assert [p.key for p in problems] == ["slack.bot_token", "bots.kitchen-pi", "bots.hall-pi"]
    assert "mode rtm needs slack.bot_token" in problems[0].message
    assert "not used in mode rtm" in problems[1].message


def test_load_raises_one_config_error_with_every_problem(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "owner: kitchen-pi, pin: 27", "owner: kitchn-pi, pin: 27")
    text = edit(text, "linger_s: 45", "linger_s: 10")
    text = edit(text, "journal: ~", "jornal: ~")
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load(path)

    err = caught.value
    assert isinstance(err, ValueError)
    assert [p.key for p in err.problems] == [
        "slackmq.linger_s",
        "jornal",
        "devices.kitchen fan.owner",
    ]
    assert str(err) == "\n".join(str(p) for p in err.problems)
    assert str(err).count("\n") == 2


def test_a_bad_device_does_not_hide_checks_on_the_others(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "kind: fan,", "kind: fna,")
    text = edit(text, "area: hall,    driver: hue", "area: hal,     driver: hue")

    keys = [p.key for p in check(write(tmp_path, text))]

    assert keys == ["devices.kitchen fan.kind", "devices.hall light.area"]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "plugins: []", "plugins: [a, b")

    problem = only_problem(write(tmp_path, text))

    assert problem.message.startswith("not valid YAML:")
    assert problem.line is not None and problem.line >= line_of(text, "plugins:")


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "the file is empty"), ("- a\n- b\n", "the top level must be a mapping of keys")],
)
def test_a_file_that_is_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    problem = only_problem(write(tmp_path, text))

    assert problem.message.startswith(message)


def test_a_missing_file_is_one_problem(tmp_path: Path) -> None:
    problem = only_problem(tmp_path / "nope.yaml")

    assert problem.file == str(tmp_path / "nope.yaml")
    assert "cannot read the federation file" in problem.message


def test_missing_required_sections(tmp_path: Path) -> None:
    problems = check(write(tmp_path, "federation: home\n"))

    assert [(p.key, p.message) for p in problems] == [
        ("slack", "is required but missing."),
        ("bots", "is required but missing."),
    ]


# --- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("env:KITCHEN_BOT_TOKEN", "xoxb-1234567890-abcdefghijkl", "bots.kitchen-pi.bot_token"),
        ("env:KITCHEN_APP_TOKEN", "xapp-1-A0123456789-abcdef", "bots.kitchen-pi.app_token"),
        ("topic: porch}", "topic: porch, key: xoxp-1234567890-abcdef}", "devices.porch switch.key"),
        ("password: null", "password: hunter2-secret", "mqtt.password"),
    ],
)
def test_a_literal_secret_is_refused_without_echoing_it(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    text = edit(EXAMPLE, old, new)
    secret = new.split(": ")[-1].rstrip("}")

    problem = only_problem(write(tmp_path, text))

    assert problem.key == key
    assert "put it in a file or the environment" in problem.message
    assert secret not in str(problem)


def test_an_env_secret_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROUPE_TEST_TOKEN", "xoxb-from-env\n")

    assert Secret("env:TROUPE_TEST_TOKEN").reveal() == "xoxb-from-env"


def test_a_missing_env_secret_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TROUPE_TEST_TOKEN", raising=False)

    with pytest.raises(SecretError, match="environment variable TROUPE_TEST_TOKEN is not set"):
        Secret("env:TROUPE_TEST_TOKEN").reveal()


def test_a_file_secret_resolves_without_its_trailing_newline(tmp_path: Path) -> None:
    token = tmp_path / "hall.token"
    token.write_text("xoxb-from-file\n")
    token.chmod(0o600)

    assert Secret(f"file:{token}").reveal() == "xoxb-from-file"


def test_a_file_secret_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "t").write_text("xoxb-home")
    (tmp_path / "t").chmod(0o600)

    assert Secret("file:~/t").reveal() == "xoxb-home"


def test_a_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "hall.token"
    token.write_text("xoxb-from-file\n")
    token.chmod(0o644)

    with pytest.raises(SecretError) as caught:
        Secret(f"file:{token}").reveal()

    assert str(caught.value) == f"{token} is readable by other users; run chmod 600 {token}"


def test_a_missing_secret_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match=f"secret file {tmp_path / 'gone'} does not exist"):
        Secret(f"file:{tmp_path / 'gone'}").reveal()


@pytest.mark.parametrize("ref", ["xoxb-123-456-abc", "hunter2", "env:", "env:1BAD", "file:"])
def test_a_secret_must_be_a_reference(ref: str) -> None:
    with pytest.raises(SecretError) as caught:
        Secret(ref)

    assert "xoxb-123" not in str(caught.value) and "hunter2" not in str(caught.value)


def test_repr_and_str_never_show_the_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KITCHEN_BOT_TOKEN", "xoxb-very-secret-value")
    secret = Secret("env:KITCHEN_BOT_TOKEN")
    fed = load(write(tmp_path, EXAMPLE))

    assert repr(secret) == "Secret('env:KITCHEN_BOT_TOKEN')"
    assert str(secret) == "Secret('env:KITCHEN_BOT_TOKEN')"
    assert f"{secret}" == "Secret('env:KITCHEN_BOT_TOKEN')"
    for shown in (repr(fed), str(fed), fed.model_dump_json(), repr(fed.bot("kitchen-pi"))):
        assert "xoxb-very-secret-value" not in shown
    assert fed.bot("kitchen-pi").bot_token is not None
    assert fed.bot("kitchen-pi").bot_token.reveal() == "xoxb-very-secret-value"


@pytest.mark.compat
def test_check_for_a_bot_resolves_its_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hall_token, hall_app = tmp_path / "hall.token", tmp_path / "hall.app"
    hall_token.write_text("xoxb-hall\n")
    hall_token.chmod(0o600)
    hall_app.write_text("xapp-hall\n")
    hall_app.chmod(0o640)
    text = EXAMPLE.replace("/etc/troupe", str(tmp_path))
    monkeypatch.setenv("HUE_USER", "hue-user")
    monkeypatch.setenv("TROUPE_BUS_KEY", "bus-key")
    path = write(tmp_path, text)

    problems = check(path, bot="hall-pi")

    assert [(p.key, p.line) for p in problems] == [
        ("bots.hall-pi.app_token", line_of(text, "hall-pi:")),
    ]
    assert (
        problems[0].message == f"{hall_app} is readable by other users; run chmod 600 {hall_app}."
    )
    hall_app.chmod(0o600)
    assert check(path, bot="hall-pi") == []


def test_check_for_a_bot_names_missing_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GARAGE_PI_BOT_TOKEN", "GARAGE_PI_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HUE_USER", "hue-user")
    monkeypatch.setenv("TROUPE_BUS_KEY", "bus-key")

    problems = check(write(tmp_path, EXAMPLE), bot="garage-pi")

    fix = "; set it in the bot's environment (the unit's EnvironmentFile) or name a file:PATH"
    assert [p.message for p in problems] == [
        f"environment variable {name} is not set (env:{name}){fix} instead."
        for name in ("GARAGE_PI_BOT_TOKEN", "GARAGE_PI_APP_TOKEN")
    ]


# --- which bot am I -----------------------------------------------------------------------


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    return load(write(tmp_path, EXAMPLE))


def test_the_cli_name_comes_first(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROUPE_BOT", "hall-pi")

    assert fed.resolve_bot_name("Garage-Pi") == "garage-pi"


def test_then_the_environment(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROUPE_BOT", "hall-pi")
    monkeypatch.setattr(socket, "gethostname", lambda: "kitchen-pi")

    assert fed.resolve_bot_name(None) == "hall-pi"


def test_then_the_hostname(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TROUPE_BOT", raising=False)
    monkeypatch.setattr(socket, "gethostname", lambda: "kitchen-pi.local")

    assert fed.resolve_bot_name() == "kitchen-pi"


def test_an_unknown_bot_lists_the_roster(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TROUPE_BOT", raising=False)
    monkeypatch.setattr(socket, "gethostname", lambda: "raspberrypi")

    with pytest.raises(ConfigError) as caught:
        fed.resolve_bot_name()

    assert "'raspberrypi' (from the hostname) is not a bot in the roster" in str(caught.value)
    assert "use one of kitchen-pi, hall-pi, garage-pi" in str(caught.value)
    with pytest.raises(ConfigError, match="'attic-pi' is not a bot in the roster"):
        fed.bot("attic-pi")


# --- YAML features ------------------------------------------------------------------------

ANCHORS = """\
federation: home
slack: {channel: "#home"}
bots: {a-pi: &no-tokens {}, b-pi: *no-tokens}
areas: {kitchen: }
x-relay: &relay {kind: light, area: kitchen, driver: gpio_relay, owner: a-pi}
devices:
  lamp one: {<<: *relay, pin: 17}
  lamp two:
    <<: *relay
    owner: b-pi
    pin: 18
"""


def test_anchors_merge_keys_and_x_keys(tmp_path: Path) -> None:
    fed = load(write(tmp_path, ANCHORS))

    assert fed.devices["lamp one"].owner == "a-pi"
    assert fed.devices["lamp two"].owner == "b-pi"
    assert fed.devices["lamp two"].options == {"pin": 18}
    assert fed.bots["b-pi"].bot_token == Secret("env:B_PI_BOT_TOKEN")
    assert fed.bots["a-pi"].bot_token == Secret("env:A_PI_BOT_TOKEN")


def test_a_merged_key_is_checked_at_the_line_that_overrides_it(tmp_path: Path) -> None:
    text = edit(ANCHORS, "owner: b-pi", "owner: c-pi")

    problem = only_problem(write(tmp_path, text))

    assert (problem.key, problem.line) == ("devices.lamp two.owner", line_of(text, "owner: c-pi"))


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    text = 'federation: home\nslack: {channel: "#home"}\nbots: {a-pi: {}}\nplugins: &p [*p]\n'

    problem = only_problem(write(tmp_path, text))

    assert problem.line == 4
    assert "refers to a node that contains it" in problem.message


def test_a_section_of_the_wrong_shape(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "  kitchen fan:  {kind: fan,    area: kitchen, driver: gpio_relay, "
                "owner: kitchen-pi, pin: 27}", "  kitchen fan: 3")  # fmt: skip

    problem = only_problem(write(tmp_path, text))

    assert (problem.key, problem.message) == (
        "devices.kitchen fan",
        "must be a mapping of keys (got int).",
    )


def test_base_url_gets_its_final_slash_and_must_be_http(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "base_url: null", "base_url: http://127.0.0.1:3000/api")
    assert load(write(tmp_path, text)).slack.base_url == "http://127.0.0.1:3000/api/"

    text = edit(EXAMPLE, "base_url: null", "base_url: ftp://example")
    problem = only_problem(write(tmp_path, text))
    assert (problem.key, problem.line) == ("slack.base_url", line_of(text, "base_url:"))


def test_an_empty_roster_is_refused(tmp_path: Path) -> None:
    text = 'federation: home\nslack: {channel: "#home"}\nbots: {}\n'

    problem = only_problem(write(tmp_path, text))

    assert (problem.key, problem.line) == ("bots", 3)
    assert "the roster is empty" in problem.message


def test_the_events_section_names_only_devices_areas_and_channels_the_file_declares(
    tmp_path: Path,
) -> None:
    text = EXAMPLE + (
        "events:\n"
        "  per_minute: 2\n"
        "  areas: {hall: {channel: '#hall'}}\n"
        "  devices: {hall lihgt: {kinds: [offline]}}\n"
    )
    problems = check(write(tmp_path, text))
    assert sorted((p.key, p.message) for p in problems) == [
        (
            "events.areas.hall.channel",
            "#hall is not a channel of the federation; add it under channels.",
        ),
        (
            "events.devices.hall lihgt",
            "there is no device called 'hall lihgt'; name one of the file's devices; "
            "did you mean 'hall light'?",
        ),
    ]
