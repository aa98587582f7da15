"""A locked, lean install: runtime pins with hashes, amqtt only in the demo extra."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from troupe.hardware.broker import BrokerError, start_broker

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def locked() -> dict[str, tuple[str, int]]:
    """Each package of requirements.lock: its pinned version and how many hashes it has."""
    text = (REPO / "requirements.lock").read_text()
    pins = {}
    for block in re.split(r"\n(?=\S)", text):
        found = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if found:
            pins[canonicalize_name(found[1])] = (found[2], block.count("--hash=sha256:"))
    return pins


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = locked()
    for spec in PROJECT["dependencies"]:
        req = Requirement(spec)
        version, hashes = pins[canonicalize_name(req.name)]
        assert req.specifier.contains(version, prereleases=True), (spec, version)
        assert hashes >= 1, req.name
    assert all(hashes >= 1 for _, hashes in pins.values())


def test_amqtt_is_only_in_the_demo_extra() -> None:
    names = {canonicalize_name(Requirement(s).name) for s in PROJECT["dependencies"]}
    assert "amqtt" not in names
    assert "amqtt" not in locked()
    demo = [Requirement(s).name for s in PROJECT["optional-dependencies"]["demo"]]
    assert demo == ["amqtt"]


def test_known_breaking_upgrades_are_bounded_and_the_license_is_spdx() -> None:
    deps = {Requirement(s).name: Requirement(s) for s in PROJECT["dependencies"]}
    assert not deps["hassil"].specifier.contains("4.0")
    tests = {Requirement(s).name: Requirement(s) for s in PROJECT["optional-dependencies"]["test"]}
    ruff = tests["ruff"].specifier
    assert not ruff.contains("1.0") and len([s for s in ruff if s.operator == "<"]) == 1
    assert PROJECT["license"] == "MIT"


def test_install_sh_and_the_dockerfile_install_the_lock_with_hashes() -> None:
    install = (REPO / "deploy" / "install.sh").read_text()
    assert "--require-hashes" in install and "requirements.lock" in install
    docker = (REPO / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in docker
    assert "!requirements.lock" in (REPO / "deploy" / "Dockerfile.dockerignore").read_text()


def test_without_amqtt_the_embedded_broker_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "amqtt", None)  # importing it now raises ImportError
    with pytest.raises(BrokerError) as caught:
        start_broker(embedded=True)
    assert str(caught.value) == (
        "neither mosquitto nor amqtt is installed: apt-get install mosquitto, "
        "or install troupe's demo extra (pip install 'troupe[demo]')"
    )
