"""Installing a troupe version beside the running one, switching to it, and rolling back.

The bot runs unprivileged from a root-owned venv, so it never replaces its own code. It
asks a privileged updater (the root oneshot unit `troupe-update@VERSION.service`, or the
test supervisor) to do it: install the source named in the federation file (never a URL
typed in chat) into a new venv under `releases/`, switch the `current` link, restart the
bot, wait for its health file, and switch back when the new version is not healthy.
Every program runs from an argument list: no shell, no archive extracted by troupe.

Integrity: a version is a release version (`0.2.0`, `v0.3.0rc1`), never a branch or HEAD;
pip installs it only with the hashes of the release's lock file (`--require-hashes`); an
older version than the running one only when the admin said `downgrade`; one install at
a time per machine (a file lock); the last `keep` releases stay, older ones are removed.
The root updater opens nothing in the bot's directory that could be a planted link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from troupe.errors import TroupeError
from troupe.release import WHEEL_NAME, check_lock, check_version, is_older, write_lock

HEALTH_FILE = "health.json"
RESULT_FILE = "update-result.json"
LOCK_FILE = "troupe.lock"
"""The lock a release was installed from, kept in its directory."""
DOWNGRADE = "downgrade-"
"""Prefix of a systemd instance that names an older version on purpose."""


class UpdateSource(BaseModel):
    """Where new versions come from: a package index, a git repository, or a wheel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["index", "git", "wheel"]
    value: str
    """index: the index URL; wheel: a path or https URL of the wheel, with `{version}`
    where the version goes. (git is refused: pip cannot check a repository's hashes.)"""
    lock: str | None = None
    """The release's lock file, a path or https URL with `{version}`: every distribution
    pinned with its hashes (`python -m troupe.update lock` writes it next to the wheel).
    Default for a wheel source: troupe-{version}.lock beside the wheel; an index source
    must name it."""

    @field_validator("value", "lock")
    @classmethod
    def _value(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip() or any(c.isspace() for c in value.strip()):
            raise ValueError("must be one URL or path, without spaces")
        return value.strip()

    @model_validator(mode="after")
    def _index_names_its_lock(self) -> UpdateSource:
        if self.kind == "index" and not self.lock:
            raise ValueError(
                "an index source needs `lock:`, the path or https URL of each release's lock "
                "file with {version}, because releases install only with pinned hashes"
            )
        return self

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        if kind == "git":
            raise ValueError(
                "a git source cannot be installed with pinned hashes (pip cannot hash a "
                "repository); publish each release as a wheel with its lock file and use "
                "kind: wheel or kind: index"
            )
        return kind

    def lock_for(self, version: str) -> str | None:
        """Where the lock of `version` is, or None when this source names none."""
        if self.lock:
            return self.lock.replace("{version}", version)
        if self.kind != "wheel":
            return None
        wheel = self.value.replace("{version}", version)
        cut = max(wheel.rfind("/"), 0)
        head = wheel[: cut + 1] if "/" in wheel else ""
        return f"{head}troupe-{version}.lock"


class UpdateSettings(BaseModel):
    """The federation file's `update:` section: how `update [VERSION]` rolls out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: UpdateSource | None = None
    canary: str | None = None
    """The bot that updates first (default: the first bot of the roster)."""
    soak_s: float = Field(default=3600, gt=0)
    """How long the canary runs before the rest follow without an admin's approval."""
    approval: str = "+1"
    """The reaction (Slack's stored name: `+1` is 👍) an admin puts on the canary's report."""
    health_timeout_s: float = Field(default=120, gt=0)
    """How long a restarted bot has to become healthy before it is rolled back."""
    poll_s: float = Field(default=5, gt=0)
    """How often a bot reads the rollout's thread while a rollout is under way."""
    updater: Literal["systemd", "supervisor"] = "systemd"
    """Who installs and restarts: systemd (troupe-update@.service) or the test supervisor."""
    keep: int = Field(default=3, ge=2)
    """How many releases stay installed; older ones are removed after a healthy update
    (the current and the previous release are always kept)."""


def read_settings(path: str | Path | None) -> UpdateSettings:
    """The `update:` section of a YAML file (the federation file); defaults when absent."""
    if not path or not Path(path).is_file():
        return UpdateSettings()
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    section = data.get("update") if isinstance(data, dict) else None
    return UpdateSettings.model_validate(section or {})


def parse_target(instance: str) -> tuple[str, bool]:
    """A systemd instance (`0.2.0` or `downgrade-0.1.0`) as (version, downgrade)."""
    downgrade = instance.startswith(DOWNGRADE)
    return check_version(instance.removeprefix(DOWNGRADE)), downgrade


def pip_requirement(source: UpdateSource, version: str) -> tuple[list[str], str]:
    """pip's extra arguments and the requirement that installs `version` from `source`."""
    check_version(version)
    if source.kind == "index":
        return ["--index-url", source.value], f"troupe=={version}"
    return [], source.value.replace("{version}", version)


def read_lock(source: UpdateSource, version: str, timeout: float = 60) -> str:
    """The lock file of `version` from `source` (a path or an https URL), at most 1 MB."""
    where = source.lock_for(version)
    if where is None:
        raise UpdateError(
            f"troupe {version} cannot be installed without pinned hashes and this source "
            "names no lock file: add `lock:` (a path or https URL with {version}) to "
            "update.source"
        )
    scheme = urllib.parse.urlsplit(where).scheme
    try:
        if scheme == "https":
            with urllib.request.urlopen(where, timeout=timeout) as answer:
                data = answer.read(1_000_001)
        elif scheme in ("", "file"):
            with open(urllib.parse.urlsplit(where).path or where, "rb") as file:
                data = file.read(1_000_001)
        else:
            raise UpdateError(f"the lock of troupe {version} must be a path or an https URL")
    except OSError as err:
        raise UpdateError(
            f"troupe {version} has no lock file at {where} ({err}); a release installs only "
            "with its pinned hashes: build it with `python -m troupe.update lock`"
        ) from err
    if len(data) > 1_000_000:
        raise UpdateError(f"the lock of troupe {version} at {where} is larger than 1 MB")
    return data.decode("utf-8", errors="replace")


def wheel_version(source: UpdateSource | None) -> str | None:
    """The version a fixed wheel source provides (its file name says), for `update` alone."""
    if source is None or source.kind != "wheel" or "{version}" in source.value:
        return None
    found = WHEEL_NAME.search(source.value)
    return found.group("version") if found else None


# --- the machine: releases, the current link, the previous one -----------------------


@dataclass(frozen=True)
class Layout:
    """Where one machine keeps its releases: /opt/troupe on a Pi, a tmp dir in tests."""

    root: Path
    current_name: str = "current"
    """The link the service runs from: `venv` on a Pi (/opt/troupe/venv)."""

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        return self.root / self.current_name

    @property
    def previous(self) -> Path:
        return self.root / "previous"

    def release(self, version: str) -> Path:
        return self.releases / check_version(version)

    def version_of(self, link: Path) -> str | None:
        return Path(os.readlink(link)).name if link.is_symlink() else None


def _run(argv: Sequence[str], timeout: float) -> None:
    """Run one fixed program; raise with its output when it fails."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise UpdateError(f"{Path(argv[0]).name} failed ({done.returncode}): {' | '.join(tail)}")


class UpdateError(TroupeError, RuntimeError):
    """An install, switch or health check did not work; the message is one sentence."""


def install(
    layout: Layout,
    source: UpdateSource,
    version: str,
    *,
    python: str = sys.executable,
    system_site_packages: bool = False,
    pip: Sequence[str] | None = None,
    pip_args: Sequence[str] = (),
    extra_path: str | None = None,
    timeout: float = 600,
) -> Path:
    """Install `version` into its own venv under releases/ (kept if already there), only
    from `source` and only with the hashes of the release's lock (`--require-hashes`).

    `pip` is the pip to drive the new venv with (`pip --python VENV`), so a venv made
    without pip installs in seconds; `extra_path` is appended to the venv's sys.path (the
    test venv's site-packages, where the dependencies already are).
    """
    target = layout.release(version)
    marker = target / ".troupe-installed"
    if marker.exists():
        return target
    lines = check_lock(read_lock(source, version), version)
    layout.releases.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():  # a half-done install: start it again
        _run(["rm", "-rf", "--", str(target)], 60)
    # Built in place, never moved: pip's scripts name the venv's path in their first line.
    venv = [python, "-m", "venv"]
    venv += ["--system-site-packages"] if system_site_packages else []
    venv += ["--without-pip"] if pip else []
    _run([*venv, str(target)], 120)
    if extra_path:
        for site in target.glob("lib/python3*/site-packages"):
            (site / "zz-troupe-extra.pth").write_text(extra_path + "\n")
    extra, requirement = pip_requirement(source, version)
    if source.kind == "wheel":  # the wheel's own place, with the hashes the lock gives it
        lines = [
            re.sub(r"^troupe\s*==\s*\S+", lambda _: requirement, line, flags=re.IGNORECASE)
            for line in lines
        ]
    lock = target / LOCK_FILE
    lock.write_text("\n".join(lines) + "\n", encoding="utf-8")
    python_in = str(target / "bin" / "python")
    driver = [*pip, "--python", python_in] if pip else [python_in, "-m", "pip"]
    command = [*driver, "install", "--no-input", "--disable-pip-version-check"]
    _run([*command, "--require-hashes", *pip_args, *extra, "-r", str(lock)], timeout)
    marker.write_text(version + "\n")
    return target


def prune(layout: Layout, keep: int) -> list[str]:
    """Remove all but the `keep` newest releases, never the current or previous one."""
    spared = {layout.version_of(layout.current), layout.version_of(layout.previous)}
    releases = (
        [
            path
            for path in layout.releases.iterdir()
            if path.is_dir() and not path.is_symlink() and not path.name.startswith(".")
        ]
        if layout.releases.is_dir()
        else []
    )
    newest = sorted(releases, key=_installed_at, reverse=True)
    removed = []
    for path in newest[keep:]:
        if path.name not in spared:
            shutil.rmtree(path)
            removed.append(path.name)
    return removed


def _installed_at(release: Path) -> float:
    marker = release / ".troupe-installed"
    return (marker if marker.exists() else release).stat().st_mtime


@contextlib.contextmanager
def one_at_a_time(layout: Layout) -> Iterator[None]:
    """Hold this machine's install lock; UpdateError at once when another install has it."""
    layout.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(
        layout.root / ".update.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpdateError(
                "another update of this machine is running; wait for it to finish and ask again"
            ) from None
        yield
    finally:
        os.close(fd)


def switch(layout: Layout, version: str) -> str | None:
    """Point `current` at the release of `version`, `previous` at the old one; atomic."""
    if layout.current.exists() and not layout.current.is_symlink():
        raise UpdateError(
            f"{layout.current} is a directory, not a link to a release: reinstall with "
            "install.sh, which keeps releases side by side"
        )
    old = layout.version_of(layout.current)
    _relink(layout.current, layout.release(version))
    if old and old != version:
        _relink(layout.previous, layout.release(old))
    return old


def _relink(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)


# --- health ------------------------------------------------------------------------------


def write_health(state_dir: Path, record: Mapping[str, Any]) -> None:
    """The bot says it is healthy: written whole through a temporary file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{HEALTH_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(dict(record)))
    tmp.replace(state_dir / HEALTH_FILE)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, None when absent, not an object, or a link (the root
    updater reads the bot's files and must not be pointed elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            data = json.loads(file.read(1_000_000))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def healthy(state_dir: Path, version: str, pid: int | None) -> bool:
    """The bot process `pid` runs `version`, is connected, loaded its plugins and its
    devices answer (what it wrote once ready)."""
    record = read_json(state_dir / HEALTH_FILE)
    return bool(
        record
        and record.get("version") == version
        and (pid is None or record.get("pid") == pid)
        and record.get("connected")
        and record.get("plugins")
        and all((record.get("devices") or {}).values())
    )


@dataclass
class Machine:
    """What an updater needs of the machine it updates: its releases, the bot's state
    directory, and how to restart the bot and see its process."""

    layout: Layout
    state_dir: Path
    restart: Callable[[], None]
    main_pid: Callable[[], int | None]
    """The bot's process id, None while it is not running."""


def apply_update(
    machine: Machine,
    version: str,
    installer: Callable[[str], Path],
    *,
    timeout_s: float,
    poll_s: float = 0.2,
    downgrade: bool = False,
    keep: int = 3,
) -> dict[str, Any]:
    """Install, switch, restart, wait for health; roll back when unhealthy.

    One at a time per machine; an older version only with `downgrade` (the admin named
    it); after a healthy update the releases beyond the newest `keep` are removed. The
    result is written to the state directory before the rolled-back bot starts, so that
    bot can report why. Returns the result.
    """
    result: dict[str, Any] = {"version": version, "at": time.time()}
    old = machine.layout.version_of(machine.layout.current)
    result["from"] = old
    try:
        with one_at_a_time(machine.layout):
            return _apply(machine, version, installer, result, timeout_s, poll_s, downgrade, keep)
    except UpdateError as err:
        result.update(ok=False, reason=str(err))
        _write_result(machine.state_dir, result)
        return result


def _apply(
    machine: Machine,
    version: str,
    installer: Callable[[str], Path],
    result: dict[str, Any],
    timeout_s: float,
    poll_s: float,
    downgrade: bool,
    keep: int,
) -> dict[str, Any]:
    old = result["from"]
    if is_older(version, old) and not downgrade:
        result.update(
            ok=False,
            reason=(
                f"troupe {version} is older than the running {old}; an admin installs an "
                f"older release only by saying `downgrade to {version}`"
            ),
        )
        _write_result(machine.state_dir, result)
        return result
    try:
        installer(version)
    except (UpdateError, OSError, ValueError, subprocess.TimeoutExpired) as err:
        result.update(ok=False, reason=f"could not install {version}: {err}")
        _write_result(machine.state_dir, result)
        return result
    try:
        switch(machine.layout, version)
    except (UpdateError, OSError) as err:
        result.update(ok=False, reason=f"could not switch to {version}: {err}")
        _write_result(machine.state_dir, result)
        return result
    machine.restart()
    reason = _wait_healthy(machine, version, timeout_s, poll_s)
    if reason is None:
        result.update(ok=True, reason="healthy", pruned=prune(machine.layout, keep))
        _write_result(machine.state_dir, result)
        return result
    result.update(ok=False, reason=reason, rolled_back_to=old)
    _write_result(machine.state_dir, result)
    if old:
        switch(machine.layout, old)
        machine.restart()
    return result


def _wait_healthy(machine: Machine, version: str, timeout_s: float, poll_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    seen_pid: int | None = None
    while time.monotonic() < deadline:
        pid = machine.main_pid()
        if pid is None and seen_pid is not None:
            return f"troupe {version} stopped right after it started"
        seen_pid = pid or seen_pid
        if pid is not None and healthy(machine.state_dir, version, pid):
            return None
        time.sleep(poll_s)
    if seen_pid is None or machine.main_pid() is None:
        return f"troupe {version} did not stay running"
    return f"troupe {version} was not healthy within {timeout_s:g} s"


def _write_result(state_dir: Path, result: Mapping[str, Any]) -> None:
    """Written by root into the bot's directory, so nothing there is trusted: the file
    is made new (O_EXCL) under a random name without following links (O_NOFOLLOW), in a
    directory opened without following links, then renamed over the result (a rename
    replaces a planted link, never writes through it)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    dir_fd = os.open(state_dir, flags)
    try:
        tmp = f".{RESULT_FILE}.{os.getpid()}.{secrets.token_hex(8)}"
        create = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, create, 0o644, dir_fd=dir_fd)
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(dict(result)))
        os.replace(tmp, RESULT_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


# --- asking the updater, from the bot ------------------------------------------------------


async def request(
    settings: UpdateSettings, bot: str, action: str, version: str = "", *, downgrade: bool = False
) -> str:
    """Ask the privileged updater to update (to `version`) or restart this bot.

    systemd: start `troupe-update@VERSION.service` (`downgrade-VERSION` when the admin
    asked for an older version by name) or restart `troupe.service` (a polkit rule lets
    the troupe user do exactly these two). supervisor: one JSON line on its socket
    ($TROUPE_SUPERVISOR). Returns what the updater said; raises UpdateError.
    """
    if action not in ("update", "restart"):
        raise ValueError(f"unknown updater action {action!r}")
    if action == "update":
        check_version(version)
        if settings.updater == "systemd" and "+" in version:
            raise UpdateError(
                f"{version} cannot name a systemd unit because '+' is not allowed there; "
                "tag the release without '+'"
            )
    if settings.updater == "supervisor":
        message = {"bot": bot, "action": action, "version": version, "downgrade": downgrade}
        return await _ask_supervisor(message)
    instance = (DOWNGRADE if downgrade else "") + version
    unit = f"troupe-update@{instance}.service" if action == "update" else "troupe.service"
    verb = "start" if action == "update" else "restart"
    proc = await asyncio.create_subprocess_exec(
        "systemctl",
        verb,
        "--no-block",
        unit,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    if proc.returncode != 0:
        raise UpdateError(f"systemctl {verb} {unit} failed: {out.decode(errors='replace')}")
    return f"systemctl {verb} {unit}"


async def _ask_supervisor(message: Mapping[str, Any]) -> str:
    path = os.environ.get("TROUPE_SUPERVISOR")
    if not path:
        raise UpdateError("no supervisor to ask: $TROUPE_SUPERVISOR is not set")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 10)
        writer.write((json.dumps(dict(message)) + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
    except (OSError, TimeoutError) as err:
        raise UpdateError(f"the supervisor did not answer: {err}") from err
    answer = json.loads(line or b"{}")
    if not answer.get("ok"):
        raise UpdateError(str(answer.get("error") or "the supervisor refused"))
    return str(answer.get("said") or "accepted")


# --- the root updater's command line ----------------------------------------------------------


def _systemd_machine(root: Path, state_dir: Path) -> Machine:
    def restart() -> None:
        _run(["systemctl", "restart", "--no-block", "troupe.service"], 60)

    def main_pid() -> int | None:
        done = subprocess.run(
            ["systemctl", "show", "--property=MainPID", "--value", "troupe.service"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        pid = int(done.stdout.strip() or 0)
        return pid or None

    return Machine(Layout(root, "venv"), state_dir, restart, main_pid)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m troupe.update install VERSION`: what the root oneshot unit runs;
    `python -m troupe.update lock WHEEL`: what a release build runs."""
    parser = argparse.ArgumentParser(prog="python -m troupe.update")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install VERSION, switch, restart, check, roll back")
    inst.add_argument("version", help="VERSION, or downgrade-VERSION for an older one")
    inst.add_argument("--config", default="/etc/troupe/federation.yaml")
    inst.add_argument("--root", default="/opt/troupe")
    inst.add_argument("--state", default="/var/lib/troupe")
    lock = sub.add_parser("lock", help="write WHEEL's lock (troupe-VERSION.lock beside it)")
    lock.add_argument("wheel", type=Path)
    lock.add_argument("--with", dest="requirements", type=Path, help="the hashed dependencies")
    lock.add_argument("-o", "--out", type=Path, help="where to write the lock")
    args = parser.parse_args(argv)
    try:
        if args.command == "lock":
            print(write_lock(args.wheel, args.requirements, args.out))
            return 0
        version, downgrade = parse_target(args.version)
    except (UpdateError, ValueError, OSError) as err:
        print(f"troupe-update: {err}", file=sys.stderr)
        return 2
    settings = read_settings(args.config)
    if settings.source is None:
        print("troupe-update: the federation file has no update.source", file=sys.stderr)
        return 2
    machine = _systemd_machine(Path(args.root), Path(args.state))
    source = settings.source
    result = apply_update(
        machine,
        version,
        lambda v: install(machine.layout, source, v, system_site_packages=True),
        timeout_s=settings.health_timeout_s,
        poll_s=1.0,
        downgrade=downgrade,
        keep=settings.keep,
    )
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
