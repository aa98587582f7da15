"""Secrets named by reference (env:NAME or file:PATH), read only when used, never shown."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from troupe.errors import TroupeError
from troupe.redact import remember

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SLACK_TOKEN = re.compile(r"^x(ox[a-z]|app)-[0-9A-Za-z-]{6,}$")


def looks_like_slack_token(text: str) -> bool:
    """Whether `text` is shaped like a Slack token (xoxb-, xoxp-, xapp-, ...)."""
    return bool(_SLACK_TOKEN.match(text.strip()))


class SecretError(TroupeError, ValueError):
    """A secret is written wrongly, or cannot be read where it says it lives.

    The message names the variable or the file, never the value.
    """


@dataclass(frozen=True, repr=False)
class Secret:
    """A reference to a secret; `reveal()` reads it, repr and str show only the reference.

    Reading lazily lets one federation file serve every Pi: each Pi only has its own
    tokens, and a rotated token is picked up without reloading the file.
    """

    ref: str

    def __post_init__(self) -> None:
        kind, _, where = self.ref.partition(":")
        if kind == "env" and _ENV_NAME.fullmatch(where):
            return
        if kind == "file" and where.strip():
            return
        if kind == "env":
            raise SecretError(f"{self.ref!r} is not an environment variable name; write env:NAME")
        if kind == "file":
            raise SecretError("file: needs a path; write file:PATH")
        hint = "this looks like a Slack token; " if looks_like_slack_token(self.ref) else ""
        raise SecretError(
            f"{hint}secrets are not written in the federation file: put it in a file or "
            "the environment and write file:PATH or env:NAME"
        )

    @property
    def kind(self) -> str:
        """'env' or 'file'."""
        return self.ref.partition(":")[0]

    @property
    def where(self) -> str:
        """The variable name or the path as written (before `~` expansion)."""
        return self.ref.partition(":")[2]

    @property
    def path(self) -> Path | None:
        """The file a file: secret lives in, `~` expanded; None for env: secrets."""
        return Path(self.where.strip()).expanduser() if self.kind == "file" else None

    def reveal(self) -> str:
        """Read the secret now and register it with the log redactor (a rotated value is
        new to it); SecretError names the variable or file if it cannot be read."""
        value = self._read()
        remember(value)
        return value

    def _read(self) -> str:
        if self.kind == "env":
            value = os.environ.get(self.where)
            if value is None:
                raise SecretError(
                    f"environment variable {self.where} is not set ({self.ref}); set it in the"
                    " bot's environment (the unit's EnvironmentFile) or name a file:PATH instead"
                )
            value = value.rstrip("\r\n")
            if not value:
                raise SecretError(
                    f"environment variable {self.where} is empty ({self.ref}); give it the"
                    " secret's value, or name a file:PATH instead"
                )
            return value
        return _read_file(self.path)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Secret({self.ref!r})"

    __str__ = __repr__

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _coerce, serialization=core_schema.plain_serializer_function_ser_schema(lambda s: s.ref)
        )


def _coerce(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise SecretError("a secret must be written as env:NAME or file:PATH")
    return Secret(value.strip())


def _read_file(path: Path) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist") from None
    except OSError as err:
        raise SecretError(f"cannot read secret file {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"secret file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise SecretError(f"{path} is readable by other users; run chmod 600 {path}")
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as err:
        raise SecretError(f"cannot read secret file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise SecretError(f"secret file {path} is not UTF-8 text") from None
    if not value:
        raise SecretError(f"secret file {path} is empty")
    return value
