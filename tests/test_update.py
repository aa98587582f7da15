"""The updater's integrity rules: release versions only, pinned hashes, downgrades by name,
pruning, one install at a time, and no planted link followed by the root updater."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

import pytest
from deploykit import fake_wheel

from troupe.release import LockError, check_version, is_older, write_lock
from troupe.update import (
    RESULT_FILE,
    Layout,
    Machine,
    UpdateError,
    UpdateSettings,
    UpdateSource,
    _write_result,
    apply_update,
    install,
    main,
    one_at_a_time,
    parse_target,
    prune,
    read_json,
    request,
    switch,
    write_health,
)

MOVING = ("main", "HEAD", "master", "feature/x", "a1b2c3d", "0123456789abcdef" * 2 + "01234567")


# --- versions ------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", MOVING)
def test_a_moving_ref_is_refused_with_one_sentence(ref: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_version(ref)
    text = str(refused.value)
    assert "is not a release version" in text and "branches, HEAD and commits" in text
    assert text.count(". ") == 0 and "\n" not in text


def test_the_updater_refuses_a_moving_ref_before_it_reads_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["install", "main", "--config", str(tmp_path / "none.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("troupe-update: 'main' is not a release version")
    assert len(err.strip().splitlines()) == 1


def test_release_versions_are_accepted_and_ordered() -> None:
    for good in ("0.2.0", "v0.3.0rc1", "1.0.post1", "2.0.dev3", "v1.2.3-rc1"):
        assert check_version(good) == good
    assert parse_target("downgrade-0.1.0") == ("0.1.0", True)
    assert parse_target("0.2.0") == ("0.2.0", False)
    assert is_older("0.1.9", "0.2.0") and is_older("1.0rc1", "1.0") and is_older("1.0", "1.0.1")
    assert is_older("1.0.dev1", "1.0a1") and not is_older("1.0.post1", "1.0")
    assert not is_older("0.2.0", None) and not is_older("0.10.0", "0.9.0")


def test_a_git_source_is_refused_because_it_cannot_be_hashed() -> None:
    with pytest.raises(ValueError, match="cannot be installed with pinned hashes"):
        UpdateSource(kind="git", value="https://git.example/troupe.git")


# --- hashes --------------------------------------------------------------------------------


def _install(tmp_path: Path, source: UpdateSource, version: str) -> Path:
    return install(
        Layout(tmp_path / "opt"),
        source,
        version,
        python=sys.executable,
        pip=[sys.executable, "-m", "pip"],
        pip_args=["--no-deps", "--no-index"],
        timeout=120,
    )


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    dist.mkdir()
    for version in ("0.1.0", "0.2.0"):
        fake_wheel(dist, version)
    return dist


def test_a_release_without_a_lock_is_refused(tmp_path: Path, wheels: Path) -> None:
    source = UpdateSource(kind="wheel", value=f"{wheels}/troupe-{{version}}-py3-none-any.whl")
    with pytest.raises(UpdateError, match=r"has no lock file at .*troupe-0\.2\.0\.lock"):
        _install(tmp_path, source, "0.2.0")
    assert not (tmp_path / "opt/releases/0.2.0").exists()
    with pytest.raises(ValueError, match="an index source needs `lock:`"):
        UpdateSource(kind="index", value="https://pypi.example/simple")


def test_a_lock_with_an_unhashed_line_or_another_version_is_refused(
    tmp_path: Path, wheels: Path
) -> None:
    source = UpdateSource(kind="wheel", value=f"{wheels}/troupe-{{version}}-py3-none-any.whl")
    lock = write_lock(wheels / "troupe-0.2.0-py3-none-any.whl")
    hashed = lock.read_text()
    lock.write_text(hashed + "requests==2.32.0\n")
    with pytest.raises(LockError, match=r"without a pinned version and hash \(requests\)"):
        _install(tmp_path, source, "0.2.0")
    lock.write_text(hashed.replace("troupe==0.2.0", "troupe==0.1.0"))
    with pytest.raises(LockError, match=r"does not pin troupe==0\.2\.0"):
        _install(tmp_path, source, "0.2.0")


def test_a_hashed_release_installs_and_a_tampered_wheel_does_not(
    tmp_path: Path, wheels: Path
) -> None:
    source = UpdateSource(kind="wheel", value=f"{wheels}/troupe-{{version}}-py3-none-any.whl")
    write_lock(wheels / "troupe-0.1.0-py3-none-any.whl")
    target = _install(tmp_path, source, "0.1.0")
    assert (target / ".troupe-installed").read_text() == "0.1.0\n"
    kept = (target / "troupe.lock").read_text()
    assert f"{wheels}/troupe-0.1.0-py3-none-any.whl --hash=sha256:" in kept
    # The wheel is replaced after its lock was written: pip refuses it.
    write_lock(wheels / "troupe-0.2.0-py3-none-any.whl")
    wheel = wheels / "troupe-0.2.0-py3-none-any.whl"
    wheel.unlink()
    fake_wheel(wheels, "0.2.0").write_bytes(wheel.read_bytes() + b"\0")
    with pytest.raises(UpdateError, match="DO NOT MATCH THE HASHES"):
        _install(tmp_path, source, "0.2.0")
    assert not (tmp_path / "opt/releases/0.2.0/.troupe-installed").exists()


def test_the_lock_command_pins_the_wheel_and_keeps_the_hashed_dependencies(
    tmp_path: Path, wheels: Path
) -> None:
    deps = tmp_path / "requirements.lock"
    deps.write_text(
        "# a pip-compile --generate-hashes file\n"
        "pyyaml==6.0.2 \\\n    --hash=sha256:" + "a" * 64 + "\n"
        "troupe==0.0.1 --hash=sha256:" + "b" * 64 + "\n"
    )
    code = main(["lock", str(wheels / "troupe-0.2.0-py3-none-any.whl"), "--with", str(deps)])
    assert code == 0
    lines = (wheels / "troupe-0.2.0.lock").read_text().splitlines()
    assert lines[0] == "pyyaml==6.0.2 --hash=sha256:" + "a" * 64
    assert lines[1].startswith("troupe==0.2.0 --hash=sha256:") and len(lines) == 2


# --- downgrades, pruning, one at a time ----------------------------------------------------


def _machine(tmp_path: Path, current: str) -> tuple[Machine, list[str]]:
    """A machine on `current` whose every version is healthy; `installed` lists installs."""
    layout = Layout(tmp_path / "opt")
    state = tmp_path / "state"
    installed: list[str] = []

    def restart() -> None:
        version = layout.version_of(layout.current)
        health = {"version": version, "pid": 7, "connected": True, "plugins": 1}
        write_health(state, health)

    machine = Machine(layout, state, restart, lambda: 7)
    machine.installer = lambda v: _fake_install(layout, v, installed)  # type: ignore[attr-defined]
    machine.installer(current)  # type: ignore[attr-defined]
    switch(layout, current)
    return machine, installed


def _fake_install(layout: Layout, version: str, installed: list[str]) -> Path:
    target = layout.release(version)
    target.mkdir(parents=True, exist_ok=True)
    marker = target / ".troupe-installed"
    marker.write_text(version + "\n")
    at = 1_000_000 + len(installed) * 10
    os.utime(marker, (at, at))
    installed.append(version)
    return target


def test_a_downgrade_is_refused_unless_the_admin_named_it(tmp_path: Path) -> None:
    machine, installed = _machine(tmp_path, "0.2.0")
    refused = apply_update(machine, "0.1.0", machine.installer, timeout_s=2, poll_s=0.01)  # type: ignore[attr-defined]
    assert refused["ok"] is False
    assert refused["reason"] == (
        "troupe 0.1.0 is older than the running 0.2.0; an admin installs an older release "
        "only by saying `downgrade to 0.1.0`"
    )
    assert installed == ["0.2.0"]
    assert machine.layout.version_of(machine.layout.current) == "0.2.0"
    assert read_json(machine.state_dir / RESULT_FILE)["reason"] == refused["reason"]
    done = apply_update(
        machine,
        "0.1.0",
        machine.installer,  # type: ignore[attr-defined]
        timeout_s=2,
        poll_s=0.01,
        downgrade=True,
    )
    assert done["ok"] is True, done
    assert machine.layout.version_of(machine.layout.current) == "0.1.0"


def test_updates_keep_the_newest_releases_and_never_the_current_or_previous(
    tmp_path: Path,
) -> None:
    machine, installed = _machine(tmp_path, "1.0")
    for version in ("1.1", "1.2", "1.3", "1.4"):
        result = apply_update(machine, version, machine.installer, timeout_s=2, poll_s=0.01, keep=3)  # type: ignore[attr-defined]
        assert result["ok"], result
    releases = sorted(p.name for p in machine.layout.releases.iterdir())
    assert releases == ["1.2", "1.3", "1.4"]
    assert result["pruned"] == ["1.1"]
    # A previous release older than the newest three (after a switch back) stays.
    switch(machine.layout, "1.2")
    _fake_install(machine.layout, "1.5", installed)
    _fake_install(machine.layout, "1.6", installed)
    switch(machine.layout, "1.6")
    assert machine.layout.version_of(machine.layout.previous) == "1.2"
    assert prune(machine.layout, 3) == ["1.3"]
    assert sorted(p.name for p in machine.layout.releases.iterdir()) == [
        "1.2",
        "1.4",
        "1.5",
        "1.6",
    ]
    assert prune(machine.layout, 2) == ["1.4"]
    with pytest.raises(ValueError):
        UpdateSettings(keep=1)
    assert UpdateSettings().keep == 3


def test_a_second_install_at_the_same_time_is_refused(tmp_path: Path) -> None:
    machine, installed = _machine(tmp_path, "1.0")
    with one_at_a_time(machine.layout):
        result = apply_update(machine, "2.0", machine.installer, timeout_s=2, poll_s=0.01)  # type: ignore[attr-defined]
    assert result["ok"] is False
    assert result["reason"] == (
        "another update of this machine is running; wait for it to finish and ask again"
    )
    assert installed == ["1.0"]
    after = apply_update(machine, "2.0", machine.installer, timeout_s=2, poll_s=0.01)  # type: ignore[attr-defined]
    assert after["ok"] is True


# --- the root updater and links the bot could plant ------------------------------------


def test_a_planted_link_in_the_state_directory_is_not_followed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0:0\n")
    other = tmp_path / "passwd"
    other.write_text("untouched\n")
    # What the old updater wrote through: its temporary name, and the result itself.
    (state / f".{RESULT_FILE}.{os.getpid()}").symlink_to(victim)
    (state / RESULT_FILE).symlink_to(other)
    (state / "health.json").symlink_to(other)
    _write_result(state, {"version": "0.2.0", "ok": False})
    assert victim.read_text() == "root:x:0:0\n"
    assert other.read_text() == "untouched\n"
    result = state / RESULT_FILE
    assert stat.S_ISREG(result.lstat().st_mode)
    assert read_json(result) == {"version": "0.2.0", "ok": False}
    assert read_json(state / "health.json") is None  # a link is never read either


def test_the_state_directory_itself_may_not_be_a_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (tmp_path / "state").symlink_to(elsewhere)
    with pytest.raises(OSError):
        _write_result(tmp_path / "state", {"ok": True})
    assert list(elsewhere.iterdir()) == []


# --- asking the updater --------------------------------------------------------------------


def test_a_downgrade_is_asked_for_by_its_own_unit_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    systemctl = tmp_path / "bin/systemctl"
    systemctl.parent.mkdir()
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{systemctl.parent}:{os.environ['PATH']}")
    settings = UpdateSettings()
    asyncio.run(request(settings, "kitchen-pi", "update", "0.2.0"))
    asyncio.run(request(settings, "kitchen-pi", "update", "0.1.0", downgrade=True))
    assert calls.read_text().splitlines() == [
        "start --no-block troupe-update@0.2.0.service",
        "start --no-block troupe-update@downgrade-0.1.0.service",
    ]
    with pytest.raises(ValueError, match="not a release version"):
        asyncio.run(request(settings, "kitchen-pi", "update", "main"))


def test_the_rollout_reads_downgrade_from_the_admins_root_message() -> None:
    from troupe.plugins.devops import read_thread

    for text, downgrade in (("<@U0BOT> downgrade to 0.1.0", True), ("update 0.1.0", False)):
        messages = [{"ts": "1.0", "user": "U0ALICE", "text": text}]
        rollout = read_thread(
            "C1",
            "1.0",
            messages,
            "+1",
            fleet=frozenset({"U0BOT"}),
            admin=lambda user: user == "U0ALICE",
            default_version=None,
        )
        assert rollout.version == "0.1.0" and rollout.downgrade is downgrade, text
