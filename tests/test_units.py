"""deploy/'s systemd units and polkit rule: hardened, as docs/fleet.md shows them, within
their systemd-analyze security goals."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deploykit import (
    FLEET_DOC,
    INSTALL,
    REPO,
    RULE,
    UNIT,
    UPDATE_UNIT,
    require_tool,
)


def fleet_doc_block(caption: str) -> list[str]:
    """The lines of the code block that follows CAPTION in docs/fleet.md."""
    text = FLEET_DOC.read_text()
    found = re.search(re.escape(caption) + r"\n\n```\w*\n(.*?)\n```", text, re.DOTALL)
    assert found, f"docs/fleet.md has no code block after {caption}"
    return found.group(1).splitlines()


def test_the_update_unit_and_polkit_rule_are_what_docs_fleet_md_shows() -> None:
    unit = [line for line in UPDATE_UNIT.read_text().splitlines() if not line.startswith("#")]
    assert unit == fleet_doc_block("`/etc/systemd/system/troupe-update@.service`:")
    assert (
        "ExecStart=/opt/troupe/venv/bin/python -m troupe.update install %i "
        "--config /etc/troupe/federation.yaml --root /opt/troupe --state /var/lib/troupe"
    ) in unit
    assert "Type=oneshot" in unit
    rule = [line for line in RULE.read_text().splitlines() if not line.startswith("//")]
    assert rule == fleet_doc_block("`/etc/polkit-1/rules.d/50-troupe.rules`:")
    text = "\n".join(rule)
    assert 'action.id != "org.freedesktop.systemd1.manage-units"' in text
    assert 'subject.user != "troupe"' in text
    assert 'verb == "restart" && unit == "troupe.service"' in text
    # The rule's unit pattern lets through exactly the instances troupe.update starts.
    [js] = re.findall(r"/(\^troupe-update@.*?\$)/\.test\(unit\)", text)
    pattern = re.compile(js)
    for unit_name in (
        "troupe-update@0.2.0.service",
        "troupe-update@v1.2.3-rc1+b.service",
        "troupe-update@downgrade-0.1.0.service",
    ):
        assert pattern.search(unit_name), unit_name
    for unit_name in (
        "troupe.service",
        "troupe-update@.service",
        "troupe-update@-x.service",
        "troupe-update@main.service",
        "troupe-update@downgrade-main.service",
        "troupe-update@0.2.0.service.d",
        "sshd.service",
        "troupe-update@0.2.0/../x.service",
    ):
        assert not pattern.search(unit_name), unit_name


# Loads the rule the way polkitd does (a script that calls polkit.addRule), then asks it
# about each [action id, user, unit, verb] read from stdin.
POLKIT_HARNESS = """
const fs = require("fs");
let rule = null;
const polkit = {
  Result: {YES: "yes", NO: "no", NOT_HANDLED: "not_handled"},
  addRule(f) { rule = f; },
};
new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
const asked = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(asked.map(([id, user, unit, verb]) =>
  rule({id, lookup: (key) => ({unit, verb})[key]}, {user}))));
"""


def test_the_polkit_rule_allows_the_updater_and_the_restart_and_nothing_else() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed to run the polkit rule")
    manage = "org.freedesktop.systemd1.manage-units"
    cases = {
        (manage, "troupe", "troupe-update@0.2.0.service", "start"): "yes",
        (manage, "troupe", "troupe-update@v0.3.0-rc1.service", "start"): "yes",
        (manage, "troupe", "troupe-update@downgrade-0.1.0.service", "start"): "yes",
        (manage, "troupe", "troupe-update@main.service", "start"): "not_handled",
        (manage, "troupe", "troupe.service", "restart"): "yes",
        (manage, "troupe", "troupe.service", "stop"): "not_handled",
        (manage, "troupe", "troupe.service", "start"): "not_handled",
        (manage, "troupe", "troupe-update@0.2.0.service", "stop"): "not_handled",
        (manage, "troupe", "troupe-update@0.2.0.service", "restart"): "not_handled",
        (manage, "troupe", "troupe-update@.service", "start"): "not_handled",
        (manage, "troupe", "troupe-update@0.2.0.service.d", "start"): "not_handled",
        (manage, "troupe", "x-troupe-update@0.2.0.service", "start"): "not_handled",
        (manage, "troupe", "ssh.service", "restart"): "not_handled",
        (manage, "pi", "troupe-update@0.2.0.service", "start"): "not_handled",
        (manage, "pi", "troupe.service", "restart"): "not_handled",
        ("org.freedesktop.systemd1.manage-unit-files", "troupe", "troupe.service", "restart"): (
            "not_handled"
        ),
    }
    done = subprocess.run(
        [node, "-e", POLKIT_HARNESS, str(RULE)],
        input=json.dumps([list(case) for case in cases]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert dict(zip(cases, json.loads(done.stdout), strict=True)) == cases


SECURITY_GOALS = {UNIT: 2.5, UPDATE_UNIT: 5.0}
"""The exposure each unit may have at most (issue 12); docs/security.md has the scores."""


def exposure(unit: Path) -> float:
    """systemd-analyze's overall exposure of a unit file, read offline as shipped."""
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout[-500:] + result.stderr
    return float(found.group(1))


@pytest.mark.parametrize("unit", list(SECURITY_GOALS), ids=lambda unit: unit.name)
def test_units_meet_their_systemd_analyze_security_goal(unit: Path) -> None:
    score = exposure(unit)
    assert score <= SECURITY_GOALS[unit], f"{unit.name} scores {score}"
    command = f"systemd-analyze security --offline=true deploy/{unit.name}"
    doc = (REPO / "docs/security.md").read_text()
    assert f"| `{command}` | {score:.1f} |" in doc, "docs/security.md shows another score"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_runs_the_bot_hardened_and_restarts_on_failure() -> None:
    unit = unit_settings()
    assert unit["ExecStart"] == [
        "/opt/troupe/venv/bin/python -m troupe run --config /etc/troupe/federation.yaml"
    ]
    assert unit["User"] == ["troupe"]
    assert unit["EnvironmentFile"] == ["/etc/troupe/troupe.env"]
    # `python -m troupe` with the bot's writable state directory as working directory: only
    # PYTHONSAFEPATH keeps a troupe/ written there from being imported as the bot's code.
    assert "PYTHONSAFEPATH=1" in unit["Environment"][0].split()
    assert unit["WorkingDirectory"] == ["/var/lib/troupe"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]
    assert unit["Type"] == ["notify"] and unit["WatchdogSec"] == ["30"]
    assert unit["DeviceAllow"] == ["char-gpiochip rw"] and unit["DevicePolicy"] == ["closed"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == ["/var/lib/troupe"]
    assert unit["WantedBy"] == ["multi-user.target"]
    assert "PrivateDevices" not in unit
    script = INSTALL.read_text()
    assert "readonly VENV=/opt/troupe/venv" in script
    assert "readonly RELEASES=/opt/troupe/releases" in script
    assert "readonly STATE=/var/lib/troupe" in script
    assert "TROUPE_BOT=%s" in script
