"""A stand-in for systemd in tests: runs each bot from its machine's `current` release,
restarts it on request and runs the updater (troupe.update.apply_update) when a bot asks.

Bots ask over a Unix socket ($TROUPE_SUPERVISOR), one JSON line each:
{"bot": NAME, "action": "update"|"restart", "version": V, "downgrade": BOOL}, as a Pi's
bot starts troupe-update@V.service (troupe-update@downgrade-V.service) or restarts
troupe.service. Everything it does is in `events`.
"""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from troupe.devkit.fleet import BotProcess
from troupe.update import Layout, Machine, UpdateSource, apply_update, check_version, switch


@dataclass
class Supervised:
    """One machine: its releases, its state directory and the bot process, if any."""

    name: str
    layout: Layout
    state_dir: Path
    process: BotProcess | None = None
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serving(self) -> bool:
        """Up and answering: alive, said it is ready, and not being stopped."""
        p = self.process
        return p is not None and p.alive and p.ready.is_set() and not self.stopping


class Supervisor:
    """Bots of one federation file, each on its own 'machine' directory."""

    def __init__(
        self,
        workdir: Path,
        config: Path,
        source: UpdateSource,
        *,
        env: Mapping[str, str] | None = None,
        health_timeout_s: float = 30.0,
        installer: Callable[[Layout, str], Path] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.config = Path(config)
        self.source = source
        self.env = dict(env or {})
        self.health_timeout_s = health_timeout_s
        self.installer = installer
        self.machines: dict[str, Supervised] = {}
        self.events: list[tuple[float, str, str, Any]] = []
        self.socket_path = self.workdir / "supervisor.sock"
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._threads: list[threading.Thread] = []

    def note(self, bot: str, what: str, detail: Any = None) -> None:
        self.events.append((time.time(), bot, what, detail))

    # machines and processes --------------------------------------------------------------

    def add(self, name: str, version: str) -> Supervised:
        """A machine for `name` with `version` installed and current."""
        machine = Supervised(
            name, Layout(self.workdir / name / "opt"), self.workdir / name / "state"
        )
        machine.state_dir.mkdir(parents=True, exist_ok=True)
        self._install(machine.layout, version)
        switch(machine.layout, version)
        self.machines[name] = machine
        return machine

    def _install(self, layout: Layout, version: str) -> Path:
        assert self.installer is not None, "the supervisor needs an installer"
        return self.installer(layout, version)

    def start(self, name: str) -> BotProcess:
        machine = self.machines[name]
        python = machine.layout.current / "bin" / "python"
        cmd = [str(python), "-m", "troupe", "run", "--config", str(self.config)]
        cmd += ["--bot", name, "--journal", str(machine.state_dir / f"{name}.sqlite3")]
        env = {
            **os.environ,
            **self.env,
            "PYTHONUNBUFFERED": "1",
            "TROUPE_SUPERVISOR": str(self.socket_path),
            "TROUPE_STATE_DIR": str(machine.state_dir),
        }
        env.pop("PYTHONPATH", None)
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=machine.state_dir,
        )
        bot = BotProcess(name, proc)
        threading.Thread(target=bot._pump, args=(False,), daemon=True).start()
        machine.process = bot
        machine.stopping = False
        self.note(name, "start", machine.layout.version_of(machine.layout.current))
        return bot

    def stop(self, name: str, timeout: float = 30.0) -> None:
        machine = self.machines[name]
        bot = machine.process
        if bot is None:
            return
        machine.stopping = True
        if bot.alive:
            bot.proc.send_signal(signal.SIGTERM)
        try:
            bot.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            bot.proc.kill()
            bot.proc.wait(timeout=10)
        self.note(name, "stop", bot.proc.returncode)

    def restart(self, name: str) -> None:
        with self.machines[name].lock:
            self.stop(name)
            self.start(name)

    def main_pid(self, name: str) -> int | None:
        bot = self.machines[name].process
        return bot.proc.pid if bot is not None and bot.alive else None

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            bot = self.machines[name].process
            assert bot is not None
            if bot.ready.wait(0.1):
                return
            if not bot.alive or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready:\n{bot.output()}")

    def serving(self) -> list[str]:
        return [name for name, m in self.machines.items() if m.serving()]

    def output(self, name: str) -> str:
        bot = self.machines[name].process
        return bot.output() if bot is not None else ""

    # the updater -------------------------------------------------------------------------

    def update(self, name: str, version: str, downgrade: bool = False) -> dict[str, Any]:
        """What troupe-update@VERSION.service does on a Pi."""
        machine = self.machines[name]
        self.note(name, "update", version)
        result = apply_update(
            Machine(
                machine.layout,
                machine.state_dir,
                lambda: self.restart(name),
                lambda: self.main_pid(name),
            ),
            version,
            lambda v: self._install(machine.layout, v),
            timeout_s=self.health_timeout_s,
            poll_s=0.1,
            downgrade=downgrade,
        )
        self.note(name, "updated" if result["ok"] else "rolled back", result)
        return result

    def _handle(self, message: Mapping[str, Any]) -> dict[str, Any]:
        name, action = message.get("bot"), message.get("action")
        if name not in self.machines:
            return {"ok": False, "error": f"no machine called {name!r}"}
        if action == "update":
            try:
                version = check_version(str(message.get("version") or ""))
            except ValueError as err:
                return {"ok": False, "error": str(err)}
            downgrade = message.get("downgrade") is True
            self._background(lambda: self.update(str(name), version, downgrade))
            return {"ok": True, "said": f"updating {name} to {version}"}
        if action == "restart":
            self.note(str(name), "restart requested")
            self._background(lambda: self.restart(str(name)))
            return {"ok": True, "said": f"restarting {name}"}
        return {"ok": False, "error": f"unknown action {action!r}"}

    def _background(self, work: Callable[[], Any]) -> None:
        thread = threading.Thread(target=work, daemon=True)
        self._threads.append(thread)
        thread.start()

    def serve(self) -> None:
        """Listen for bots' requests on the Unix socket."""
        supervisor = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(65536)
                try:
                    message = json.loads(line)
                    answer = supervisor._handle(message if isinstance(message, dict) else {})
                except ValueError:
                    answer = {"ok": False, "error": "not a JSON line"}
                self.wfile.write((json.dumps(answer) + "\n").encode())

        if self.socket_path.exists():
            self.socket_path.unlink()
        self._server = socketserver.ThreadingUnixStreamServer(str(self.socket_path), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for every update and restart in hand to finish."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for name in self.machines:
            self.stop(name)

    def __enter__(self) -> Supervisor:
        self.serve()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def venv_installer(
    source: UpdateSource, pip_args: tuple[str, ...] = ("--no-deps", "--no-index")
) -> Callable[[Layout, str], Path]:
    """An installer for tests: venvs on top of the running one, filled by its pip."""
    from troupe.update import install

    site = next(p for p in sys.path if p.endswith("site-packages"))

    def run(layout: Layout, version: str) -> Path:
        return install(
            layout,
            source,
            version,
            python=sys.executable,
            system_site_packages=True,
            pip=[sys.executable, "-m", "pip"],
            pip_args=pip_args,
            extra_path=site,
            timeout=180,
        )

    return run
