"""Start bots as separate processes (troupe.devkit.botrun, `troupe run` plus the kit's
faults) and watch them: for tests, the demo and the benchmark.
Each bot's output is collected; start() returns once it says it is ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BotProcess:
    """One running `troupe run` and everything it printed."""

    name: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    ready_after_s: float | None = None

    def _pump(self, echo: bool) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if echo and (" WARNING " in line or " ERROR " in line or " ready (" in line):
                print(line if " ready (" in line else f"[{self.name}] {line}", end="", flush=True)
            if line.startswith(f"{self.name} ready"):
                self.ready_after_s = time.monotonic() - self.started
                self.ready.set()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return "\n".join(self.lines)


class Fleet:
    """Bots of one federation file, each in its own process."""

    def __init__(
        self,
        config: str | Path,
        workdir: str | Path,
        env: Mapping[str, str] | None = None,
        *,
        echo: bool = False,
    ) -> None:
        """echo: print each bot's ready line and its warnings as they come (the demo)."""
        self.config = str(config)
        self.workdir = Path(workdir)
        self.env = {**os.environ, **(env or {})}
        self.echo = echo
        self.bots: dict[str, BotProcess] = {}
        self.earlier: dict[str, list[BotProcess]] = {}
        """Each bot's processes before its latest (restarted after a kill), oldest first."""

    def command(self, name: str) -> list[str]:
        """The bot's command line: `troupe run` with a journal of its own in the workdir."""
        journal = self.workdir / f"{name}.journal.sqlite3"
        cmd = [sys.executable, "-m", "troupe.devkit.botrun", "--config", self.config, "--bot", name]
        return [*cmd, "--journal", str(journal)]

    def start(
        self,
        name: str,
        *,
        timeout: float = 60.0,
        wait: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> BotProcess:
        """Start one bot; with wait, return once it printed its ready line."""
        proc = subprocess.Popen(
            self.command(name),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**self.env, **(env or {}), "PYTHONUNBUFFERED": "1"},
            cwd=self.workdir,
        )
        bot = BotProcess(name, proc)
        if name in self.bots:
            self.earlier.setdefault(name, []).append(self.bots[name])
        threading.Thread(
            target=bot._pump, args=(self.echo,), name=f"pump-{name}", daemon=True
        ).start()
        self.bots[name] = bot
        if wait:
            self.wait_ready(name, timeout)
        return bot

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        bot = self.bots[name]
        deadline = time.monotonic() + timeout
        while not bot.ready.wait(0.1):
            if not bot.alive or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not become ready (exit code {bot.proc.poll()}):\n{bot.output()}"
                )

    def history(self, name: str) -> str:
        """Everything a bot printed over all its runs, so a killed run's last words are kept."""
        runs = [*self.earlier.get(name, []), self.bots[name]]
        if len(runs) == 1:
            return runs[0].output()
        return "\n".join(f"--- run {i} ---\n{bot.output()}" for i, bot in enumerate(runs, 1))

    def start_all(self, names: Sequence[str], timeout: float = 60.0) -> None:
        for name in names:
            self.start(name, wait=False)
        for name in names:
            self.wait_ready(name, timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        bot = self.bots[name]
        if bot.alive:
            bot.proc.send_signal(sig)
        bot.proc.wait(timeout=30)

    def stop_all(self, timeout: float = 20.0) -> None:
        for bot in self.bots.values():
            if bot.alive:
                bot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for bot in self.bots.values():
            try:
                bot.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                bot.proc.kill()
                bot.proc.wait(timeout=5)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
