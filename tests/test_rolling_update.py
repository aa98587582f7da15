"""A rolling update of three bot processes, version A -> B, from chat, with commands sent
throughout; then a broken version B' that is rolled back and stops the rollout."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fleetkit import BOTS, write_federation
from slack_sdk import WebClient

from troupe.devkit.supervisor import Supervisor, venv_installer
from troupe.devkit.workspace.config import demo_config
from troupe.devkit.workspace.testing import running_workspace
from troupe.release import write_lock
from troupe.update import UpdateSource

ROOT = Path(__file__).resolve().parent.parent
A, B, BROKEN = "0.1.1", "0.1.2", "0.1.3"
WHEEL_VERSION = re.compile(r"^troupe-([^-]+)-py3-none-any\.whl$")
COMMANDS = ("turn on the hall light", "turn off the porch switch", "set the hall light to 40%")


def _build(version: str, dist: Path, work: Path) -> Path:
    """troupe from this checkout, as a wheel of `version`, built offline with this
    environment's setuptools."""
    src = work / f"src-{version}"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("troupe", "plugins", "hardware"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    project = (src / "pyproject.toml").read_text()
    (src / "pyproject.toml").write_text(
        project.replace('version = "0.1.0"', f'version = "{version}"', 1)
    )
    (src / "troupe" / "__init__.py").write_text(f'"""troupe."""\n\n__version__ = "{version}"\n')
    offline = ("--no-deps", "--no-index", "--no-build-isolation")  # this venv's setuptools
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", *offline, "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    return dist / f"troupe-{version}-py3-none-any.whl"


def _reversion(wheel: Path, version: str, *, broken: bool = False) -> Path:
    """The same wheel as another version (what building it again would give, in a fraction
    of a second): the dist-info renamed, its METADATA, troupe/__init__.py and RECORD
    rewritten. B' exits when imported."""
    old = WHEEL_VERSION.search(wheel.name)
    assert old is not None, wheel.name
    old_info, new_info = f"troupe-{old[1]}.dist-info/", f"troupe-{version}.dist-info/"
    init = f'"""troupe."""\n\n__version__ = "{version}"\n'
    if broken:
        init += 'raise SystemExit("this troupe build is broken on purpose")\n'
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            data = zf.read(name)
            name = name.replace(old_info, new_info)
            if name == new_info + "METADATA":
                data = data.replace(
                    f"\nVersion: {old[1]}\n".encode(), f"\nVersion: {version}\n".encode(), 1
                )
            elif name == "troupe/__init__.py":
                data = init.encode()
            files[name] = data
    record = []
    for name, data in files.items():
        if name != new_info + "RECORD":
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(data)}")
    files[new_info + "RECORD"] = ("\n".join([*record, f"{new_info}RECORD,,"]) + "\n").encode()
    out = wheel.with_name(f"troupe-{version}-py3-none-any.whl")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """Versions A, B and B', built once for the session: pytest-xdist's workers share the
    parent of their base temporary directories, and the first to take the lock builds."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    dist = shared / "rolling-update-wheels"
    with open(shared / "rolling-update-wheels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dist / "built").exists():
            first = _build(A, dist, tmp_path_factory.mktemp("wheels"))
            built = [first, _reversion(first, B), _reversion(first, BROKEN, broken=True)]
            for wheel in built:  # each release carries its hashes (dependencies installed)
                write_lock(wheel)
            (dist / "built").touch()
    return dist


class Sampler:
    """Counts the serving bots every 50 ms (the supervisor's view of ready processes)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.low = len(sup.machines)
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            self.low = min(self.low, len(self.sup.serving()))
            self.samples += 1

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


class Driver:
    """Sends device commands every 0.5 s from another thread, remembering each ts (each
    claim pins its command for linger_s, and Slack keeps at most 100 pins a channel)."""

    def __init__(self, alice: WebClient) -> None:
        self.alice = alice
        self.sent: dict[str, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(0.5):
            text = COMMANDS[i % len(COMMANDS)]
            ts = self.alice.chat_postMessage(channel="#home", text=text)["ts"]
            self.sent[ts] = text
            i += 1

    def __enter__(self) -> Driver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def _start_fleet(sup: Supervisor) -> None:
    """Install version A on every machine side by side, then start every bot."""
    with ThreadPoolExecutor(len(BOTS)) as pool:
        list(pool.map(lambda n: sup.add(n, A), BOTS))
    for name in BOTS:
        sup.start(name)
    for name in BOTS:
        sup.wait_ready(name)


def _update_section(source: UpdateSource, rollout: str) -> str:
    """The federation file's update section for the supervisor-run tests."""
    return (
        f"update: {{source: {{kind: wheel, value: '{source.value}'}}, {rollout}, "
        "health_timeout_s: 25, poll_s: 0.5, updater: supervisor}\n"
    )


def _wait(predicate, timeout: float, what: str, sup: Supervisor) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{sup.output(n)[-2500:]}" for n in sup.machines)
            raise AssertionError(f"timed out waiting for {what}\n{sup.events}\n{logs}")
        time.sleep(0.1)


def _thread(alice: WebClient, channel: str, ts: str) -> list[str]:
    resp = alice.conversations_replies(channel=channel, ts=ts, limit=200)
    return [m.get("text", "") for m in resp["messages"] if m["ts"] != ts]


def _counter_ops(path: Path) -> Counter[str]:
    import json

    if not path.exists():
        return Counter()
    return Counter(
        json.loads(line).get("ts", "?") for line in path.read_text().splitlines() if line
    )


@pytest.mark.timeout(300)
def test_rolling_update_canary_approval_and_rollback(tmp_path, wheels):
    config = demo_config().model_copy(update={"rate_limits": 10.0})
    source = UpdateSource(kind="wheel", value=f"{wheels}/troupe-{{version}}-py3-none-any.whl")
    update = _update_section(source, "canary: kitchen-pi, soak_s: 600")
    counter = tmp_path / "actions.jsonl"
    with running_workspace(config) as ws:
        fed = write_federation(
            tmp_path,
            ws.api_url,
            plugins="[troupe.plugins.devops]",
            slackmq="{stale_s: 20, lease_s: 4, stagger_s: 0.3, linger_s: 25}",
            extra=update,
        )
        alice = WebClient("xoxp-alice", base_url=ws.api_url)
        home = {c.name: c.id for c in ws.workspace.config.channels}["home"]
        env = {"TROUPE_COUNTER_FILE": str(counter)}
        sup = Supervisor(tmp_path, fed, source, env=env, health_timeout_s=25)
        sup.installer = venv_installer(source)
        with sup:
            _start_fleet(sup)
            with Sampler(sup) as sampler, Driver(alice) as driver:
                root = alice.chat_postMessage(channel="#home", text=f"update {B}")["ts"]

                def reported(bot: str, version: str = B) -> bool:
                    needle = f"{bot} is on troupe {version} and healthy"
                    return any(needle in t for t in _thread(alice, home, root))

                _wait(lambda: reported("kitchen-pi"), 90, "the canary's report", sup)
                # The canary waits for approval: nobody else moves for a while.
                time.sleep(3)
                assert [e for e in sup.events if e[2] == "update"] == [
                    e for e in sup.events if e[2] == "update" and e[1] == "kitchen-pi"
                ]
                report = next(
                    m
                    for m in alice.conversations_replies(channel=home, ts=root)["messages"]
                    if "kitchen-pi is on troupe" in m.get("text", "")
                )
                # Bob is no admin: his thumbs-up does not release the rest.
                WebClient("xoxp-bob", base_url=ws.api_url).reactions_add(
                    channel=home, timestamp=report["ts"], name="+1"
                )
                time.sleep(2)
                assert len([e for e in sup.events if e[2] == "update"]) == 1
                alice.reactions_add(channel=home, timestamp=report["ts"], name="+1")
                _wait(
                    lambda: (
                        all(reported(b) for b in BOTS)
                        and any(f"troupe {B} done" in t for t in _thread(alice, home, root))
                    ),
                    150,
                    "every bot on B",
                    sup,
                )
                time.sleep(2)
            assert sampler.samples > 100
            assert sampler.low >= 2, "fewer than two bots served at some moment"
            updates = [(e[1], e[3]) for e in sup.events if e[2] == "update"]
            assert sorted(updates) == sorted((b, B) for b in BOTS)
            assert updates[0] == ("kitchen-pi", B)
            # one bot at a time: each update ended before the next began
            spans = []
            for name in BOTS:
                began = next(e[0] for e in sup.events if e[2] == "update" and e[1] == name)
                ended = next(e[0] for e in sup.events if e[2] == "updated" and e[1] == name)
                spans.append((began, ended))
            spans.sort()
            assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)), spans

            # every command carried out exactly once
            _wait(
                lambda: set(_counter_ops(counter)) >= set(driver.sent),
                60,
                "every command carried out",
                sup,
            )
            ops = _counter_ops(counter)
            assert len(driver.sent) >= 20
            assert all(ops[ts] == 1 for ts in driver.sent), {
                ts: ops[ts] for ts in driver.sent if ops[ts] != 1
            }
            for name in BOTS:
                assert sup.machines[name].layout.version_of(sup.machines[name].layout.current) == B

            # a broken version: the canary is rolled back and the rollout stops
            root2 = alice.chat_postMessage(channel="#home", text=f"update {BROKEN}")["ts"]
            _wait(
                lambda: any("Rollout stopped" in t for t in _thread(alice, home, root2)),
                90,
                "the rollout to stop",
                sup,
            )
            texts = _thread(alice, home, root2)
            failure = next(t for t in texts if "Rollout stopped" in t)
            assert f"kitchen-pi could not update to troupe {BROKEN}" in failure
            assert f"rolled back to troupe {B}" in failure
            time.sleep(3)
            assert [e[1] for e in sup.events if e[2] == "update" and e[3] == BROKEN] == [
                "kitchen-pi"
            ]
            for name in BOTS:
                layout = sup.machines[name].layout
                assert layout.version_of(layout.current) == B
            assert set(sup.serving()) == set(BOTS)
            rc = alice.chat_postMessage(channel="#home", text="roll call")["ts"]
            _wait(lambda: len(_thread(alice, home, rc)) >= 3, 30, "roll call", sup)
            answers = _thread(alice, home, rc)
            assert len(answers) == 3
            assert all(f"troupe {B}," in a for a in answers), answers

            # an older version: refused unless the admin says `downgrade`
            root3 = alice.chat_postMessage(channel="#home", text=f"update {A}")["ts"]
            _wait(
                lambda: any("Rollout stopped" in t for t in _thread(alice, home, root3)),
                60,
                "the older version to be refused",
                sup,
            )
            refused = next(t for t in _thread(alice, home, root3) if "Rollout stopped" in t)
            assert f"troupe {A} is older than the running {B}" in refused, refused
            assert f"`downgrade to {A}`; still on troupe {B}." in refused, refused
            root4 = alice.chat_postMessage(channel="#home", text=f"downgrade to {A}")["ts"]
            _wait(
                lambda: any(
                    f"kitchen-pi is on troupe {A} and healthy" in t
                    for t in _thread(alice, home, root4)
                ),
                90,
                "the canary's downgrade",
                sup,
            )
            layout = sup.machines["kitchen-pi"].layout
            assert layout.version_of(layout.current) == A


@pytest.mark.timeout(240)
def test_soak_time_releases_the_rest_and_an_offline_bot_catches_up(tmp_path, wheels):
    config = demo_config().model_copy(update={"rate_limits": 10.0})
    source = UpdateSource(kind="wheel", value=f"{wheels}/troupe-{{version}}-py3-none-any.whl")
    update = _update_section(source, "canary: hall-pi, soak_s: 2")
    with running_workspace(config) as ws:
        fed = write_federation(
            tmp_path, ws.api_url, plugins="[troupe.plugins.devops]", extra=update
        )
        alice = WebClient("xoxp-alice", base_url=ws.api_url)
        home = {c.name: c.id for c in ws.workspace.config.channels}["home"]
        sup = Supervisor(tmp_path, fed, source, health_timeout_s=25)
        sup.installer = venv_installer(source)
        with sup:
            _start_fleet(sup)
            sup.stop("garage-pi")
            root = alice.chat_postMessage(channel="#home", text=f"update {B}")["ts"]

            def reported(bot: str) -> bool:
                needle = f"{bot} is on troupe {B} and healthy"
                return any(needle in t for t in _thread(alice, home, root))

            # no approval: the soak time releases the rest
            _wait(lambda: reported("hall-pi") and reported("kitchen-pi"), 90, "two bots", sup)
            time.sleep(2)
            texts = _thread(alice, home, root)
            assert not any("done" in t for t in texts), texts
            assert [e[1] for e in sup.events if e[2] == "update"] == ["hall-pi", "kitchen-pi"]
            sup.start("garage-pi")  # back on its old version: it finds the open step
            _wait(
                lambda: (
                    reported("garage-pi")
                    and any(f"troupe {B} done" in t for t in _thread(alice, home, root))
                ),
                90,
                "garage-pi to catch up",
                sup,
            )
            layout = sup.machines["garage-pi"].layout
            assert layout.version_of(layout.current) == B
            assert [e[1] for e in sup.events if e[2] == "update"] == [
                "hall-pi",
                "kitchen-pi",
                "garage-pi",
            ]
