"""An MQTT broker on 127.0.0.1 for tests and the demo: mosquitto, else an embedded amqtt.

mosquitto is what homes run, so tests use it (MQTT 5 and 3.1.1, TLS, passwords). Where it
is not installed, `make demo` still works on amqtt, a pure-Python broker (MQTT 3.1.1 only),
run as a child process so that stop() and restart() drop every connection just as a
broker crash does.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from troupe.errors import TroupeError

HOST = "127.0.0.1"
MOSQUITTO_PATHS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)
Kind = Literal["mosquitto", "amqtt"]


class BrokerError(TroupeError, RuntimeError):
    """The broker could not be started (the message ends with the tail of its log)."""


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key (PEM); `cafile` asks clients for certificates too."""

    certfile: Path
    keyfile: Path
    cafile: Path | None = None


def find_mosquitto() -> str | None:
    """The mosquitto binary: $TROUPE_MOSQUITTO, the PATH, then the usual sbin places."""
    configured = os.environ.get("TROUPE_MOSQUITTO")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def mosquitto_hash(password: str) -> str:
    """A password file entry as mosquitto_passwd writes it ($7$: PBKDF2-SHA512, 101 rounds)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class Broker:
    """A broker process on 127.0.0.1; stop() and restart() keep the port."""

    def __init__(
        self,
        kind: Kind,
        port: int,
        *,
        users: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
        mosquitto: str | None = None,
        timeout: float = 10.0,
        acl: Path | None = None,
    ) -> None:
        self.kind: Kind = kind
        self.host = HOST
        self.port = port
        self.users = dict(users or {})
        self.acl = acl
        """A mosquitto acl_file (deploy/mosquitto.acl), used with `users`."""
        self.tls = tls
        self.timeout = timeout
        self._mosquitto = mosquitto
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log = b""
        self._lock = threading.Lock()

    @property
    def mqtt5(self) -> bool:
        """Whether clients may speak MQTT 5 (amqtt speaks only 3.1.1)."""
        return self.kind == "mosquitto"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def output(self) -> str:
        """What the broker logged, for failure messages."""
        log = self._workdir / "broker.log" if self._workdir else None
        if log is not None and log.exists():
            return log.read_text(errors="replace")
        return self._log.decode(errors="replace")

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker and wait (bounded) until it accepts connections."""
        with self._lock:
            if self.running:
                return
            self._workdir = Path(tempfile.mkdtemp(prefix="troupe-broker-"))
            command = self._command(self._workdir)
            with open(self._workdir / "broker.log", "wb") as log:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                self._wait_ready()
            except BrokerError:
                self._halt()
                raise

    def stop(self) -> None:
        """Stop the broker: every client sees the connection drop."""
        with self._lock:
            self._halt()

    def kill(self) -> None:
        """Crash the broker (SIGKILL): unlike stop(), it sends no last wills on the way."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
                self._process.wait(timeout=5)
            self._halt()

    def restart(self) -> None:
        """Stop and start again on the same port (retained messages are lost, as
        with a broker that has no persistence)."""
        self.stop()
        self.start()

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Broker {self.kind} {self.address} {state}>"

    def _halt(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._workdir is not None:
            log = self._workdir / "broker.log"
            if log.exists():
                self._log = log.read_bytes()
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerError(
                    f"the {self.kind} broker exited with code {self._process.returncode} "
                    f"before listening on {self.address}:\n{self.output()[-2000:]}"
                )
            try:
                if self.kind == "mosquitto" and not self._mosquitto_running():
                    raise OSError("not listening yet")
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"the {self.kind} broker did not listen on {self.address} within "
                        f"{self.timeout:.0f} s:\n{self.output()[-2000:]}"
                    ) from None
                time.sleep(0.05)
                continue
            # Something answers on the port: make sure it is this broker, not a process that
            # took the free port meanwhile while ours is about to fail on its config.
            time.sleep(0.2)
            if self._process.poll() is None:
                return

    def _mosquitto_running(self) -> bool:
        """mosquitto says it listens on our port, then that it runs: only then is whatever
        answers on the port this broker (another test's broker may have taken the same
        free port first, and ours is about to exit on "Address already in use")."""
        log = self.output()
        return f"listen socket on port {self.port}." in log and " running" in log

    # configuration --------------------------------------------------------------------

    def _command(self, workdir: Path) -> list[str]:
        if self.kind == "mosquitto":
            config = workdir / "mosquitto.conf"
            config.write_text(self._mosquitto_config(workdir))
            assert self._mosquitto is not None
            return [self._mosquitto, "-c", str(config)]
        config = workdir / "amqtt.json"
        config.write_text(json.dumps(self._amqtt_config(workdir)))
        return [sys.executable, "-m", "troupe.hardware.broker", "--serve-embedded", str(config)]

    def _mosquitto_config(self, workdir: Path) -> str:
        lines = []
        if os.geteuid() == 0:
            # Run as root, mosquitto would switch to the user `mosquitto`, who cannot read
            # a root-owned temporary directory.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        lines += ["persistence false", f"listener {self.port} {self.host}"]
        if self.tls is not None:
            lines += [f"certfile {self.tls.certfile}", f"keyfile {self.tls.keyfile}"]
            if self.tls.cafile is not None:
                lines += [f"cafile {self.tls.cafile}", "require_certificate true"]
        if self.users:
            passwords = workdir / "passwords"
            passwords.write_text(
                "".join(f"{user}:{mosquitto_hash(pw)}\n" for user, pw in self.users.items())
            )
            passwords.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
            if self.acl is not None:
                lines.append(f"acl_file {self.acl}")
        else:
            lines.append("allow_anonymous true")
        return "\n".join(lines) + "\n"

    def _amqtt_config(self, workdir: Path) -> dict[str, Any]:
        listener: dict[str, Any] = {"type": "tcp", "bind": f"{self.host}:{self.port}"}
        if self.tls is not None:
            listener.update(
                ssl=True, certfile=str(self.tls.certfile), keyfile=str(self.tls.keyfile)
            )
            if self.tls.cafile is not None:
                listener["cafile"] = str(self.tls.cafile)
        plugins: dict[str, Any] = {}
        if self.users:
            from pwdlib.hashers.argon2 import Argon2Hasher

            hasher = Argon2Hasher()
            passwords = workdir / "passwords"
            passwords.write_text(
                "".join(f"{user}:{hasher.hash(pw)}\n" for user, pw in self.users.items())
            )
            passwords.chmod(0o600)
            plugins["amqtt.plugins.authentication.FileAuthPlugin"] = {
                "password_file": str(passwords)
            }
        else:
            plugins["amqtt.plugins.authentication.AnonymousAuthPlugin"] = {"allow_anonymous": True}
        return {"listeners": {"default": listener}, "plugins": plugins}


def start_broker(
    port: int = 0,
    *,
    users: Mapping[str, str] | None = None,
    tls: TlsFiles | None = None,
    embedded: bool | None = None,
    timeout: float = 10.0,
    acl: Path | None = None,
) -> Broker:
    """Start a broker on 127.0.0.1 and `port` (0: a free one) and wait until it listens.

    `users` (name -> password) turns anonymous access off; `embedded=None` uses mosquitto
    when installed and amqtt otherwise, True forces amqtt, False requires mosquitto.
    """
    mosquitto = None if embedded else find_mosquitto()
    if mosquitto is None and embedded is False:
        raise BrokerError(
            "mosquitto is not installed (apt-get install mosquitto, or set TROUPE_MOSQUITTO)"
        )
    kind: Kind = "mosquitto" if mosquitto else "amqtt"
    if kind == "amqtt":
        _require_amqtt()
    attempts = 1 if port else 3
    for attempt in range(attempts):
        broker = Broker(
            kind,
            port or free_port(),
            users=users,
            tls=tls,
            mosquitto=mosquitto,
            timeout=timeout,
            acl=acl,
        )
        try:
            broker.start()
        except BrokerError:
            if attempt + 1 == attempts:
                raise
            continue  # another process took the free port between the probe and the start
        return broker
    raise AssertionError("unreachable")


def _require_amqtt() -> None:
    try:
        import amqtt  # noqa: F401
    except ImportError:
        raise BrokerError(
            "neither mosquitto nor amqtt is installed: apt-get install mosquitto, "
            "or install troupe's demo extra (pip install 'troupe[demo]')"
        ) from None


# the embedded broker's process -----------------------------------------------------------


def _serve_embedded(config_path: str) -> int:
    """Run amqtt with the given JSON config until SIGTERM or SIGINT."""
    import asyncio

    _require_amqtt()
    from amqtt.broker import Broker as AmqttBroker

    config = json.loads(Path(config_path).read_text())

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        broker = AmqttBroker(config)
        await broker.start()
        print(f"amqtt listening on {config['listeners']['default']['bind']}", flush=True)
        await stop.wait()
        await broker.shutdown()

    asyncio.run(serve())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`troupe-dev hardware broker [--port N] [--embedded]`: a broker until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="troupe-dev hardware broker",
        description="Run an MQTT broker on 127.0.0.1 (mosquitto, or amqtt if it is absent).",
    )
    parser.add_argument("--port", type=int, default=1883, help="0 picks a free port")
    parser.add_argument(
        "--embedded", action="store_true", help="use amqtt even if mosquitto is here"
    )
    parser.add_argument("--serve-embedded", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_embedded:
        return _serve_embedded(args.serve_embedded)
    try:
        broker = start_broker(args.port, embedded=True if args.embedded else None)
    except BrokerError as err:
        print(f"troupe-dev hardware broker: {err}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"MQTT broker ready at {broker.address} ({broker.kind})", flush=True)
    with broker:
        while not stop.wait(1.0):
            if not broker.running:
                print(broker.output()[-2000:], file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
