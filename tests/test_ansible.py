"""deploy/'s Ansible playbook."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess

import pytest
import yaml
from deploykit import (
    DEPLOY,
    RULE,
    UNIT,
    UPDATE_UNIT,
)


def test_ansible_playbook_installs_one_pi_at_a_time() -> None:
    ansible = DEPLOY / "ansible"
    [play] = yaml.safe_load((ansible / "playbook.yml").read_text())
    assert play["hosts"] == "troupe"
    assert play["serial"] == 1
    assert play["max_fail_percentage"] == 0
    assert play["become"] is True
    assert play["roles"] == ["troupe"]
    tasks = yaml.safe_load((ansible / "roles/troupe/tasks/main.yml").read_text())
    names = [task["name"] for task in tasks]
    assert "Run install.sh" in names
    assert "The bot stayed up without restarting" in names
    run = next(task for task in tasks if task["name"] == "Run install.sh")
    assert run["no_log"] is True
    assert "environment" not in run and "--bot-token-file" in run["ansible.builtin.command"]["argv"]
    staged = next(task for task in tasks if task["name"] == "Stage the tokens")
    assert staged["no_log"] is True and staged["ansible.builtin.copy"]["mode"] == "0600"
    assert names.index("Remove the staged tokens") > names.index("Run install.sh")
    copied = next(task for task in tasks if task["name"] == "Copy install.sh and the systemd unit")
    for item in copied["loop"]:
        assert (DEPLOY / item["name"]).is_file()
    assert {item["name"] for item in copied["loop"]} == {
        "install.sh",
        UNIT.name,
        UPDATE_UNIT.name,
        RULE.name,
    }
    defaults = yaml.safe_load((ansible / "roles/troupe/defaults/main.yml").read_text())
    assert defaults["troupe_deploy_dir"] == "{{ playbook_dir }}/.."
    inventory = configparser.ConfigParser(allow_no_value=True, delimiters=(" ",))
    inventory.read(ansible / "inventory.example.ini")
    assert "troupe" in inventory.sections()
    assert {"kitchen-pi", "hall-pi", "garage-pi"} <= set(inventory["troupe"])


def test_ansible_playbook_passes_syntax_check_when_ansible_is_here() -> None:
    tool = shutil.which("ansible-playbook")
    if tool is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ansible-playbook is missing; .ci/run must install ansible-core")
        pytest.skip("ansible-playbook is not installed")
    ansible = DEPLOY / "ansible"
    result = subprocess.run(
        [
            tool,
            "-i",
            str(ansible / "inventory.example.ini"),
            str(ansible / "playbook.yml"),
            "--syntax-check",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
