"""What names a release and what pins it: release versions, their order, and the lock
file of hashes a release is installed with (pip's `--require-hashes`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from troupe.errors import TroupeError

VERSION = re.compile(
    r"v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|rc)[-_.]?(?P<pre_n>\d+))?"
    r"(?:[-_.]?post[-_.]?(?P<post>\d+))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev>\d+))?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?",
    re.IGNORECASE,
)
"""A release version (PEP 440's public versions, a `v` allowed as in a tag): what may be
named in chat and in a systemd instance name. Branches, HEAD and commits are not: they
move or name no release."""
WHEEL_NAME = re.compile(r"troupe-(?P<version>[A-Za-z0-9._+]+)-py3-none-any\.whl$")
HASH = re.compile(r"--hash[= ](?:sha256|sha384|sha512):[0-9a-f]{64,128}\b")


class LockError(TroupeError, ValueError):
    """A release's lock does not pin every distribution with a hash, or is another's."""


def check_version(version: str) -> str:
    """`version` when it names a release; ValueError with one sentence otherwise."""
    if len(version) <= 64 and VERSION.fullmatch(version):
        return version
    raise ValueError(
        f"{version[:64]!r} is not a release version: name a released version like 0.2.0; "
        "branches, HEAD and commits are refused because they move or name no release"
    )


def version_key(version: str) -> tuple[Any, ...] | None:
    """An order for release versions (PEP 440's, without epochs); None when not one."""
    found = VERSION.fullmatch(version)
    if found is None:
        return None
    release = tuple(int(p) for p in found["release"].split("."))
    release += (0,) * (8 - len(release))
    pre_rank = {"a": 0, "b": 1, "rc": 2}
    pre = (pre_rank[found["pre"].lower()], int(found["pre_n"])) if found["pre"] else (3, 0)
    if found["dev"] and not found["pre"] and not found["post"]:
        pre = (-1, 0)  # 1.0.dev1 comes before 1.0a1
    post = int(found["post"]) if found["post"] else -1
    dev = int(found["dev"]) if found["dev"] else float("inf")
    return (release, pre, post, dev)


def is_older(version: str, than: str | None) -> bool:
    """Whether `version` is an older release than `than` (False when either is no version)."""
    new, old = version_key(version), version_key(than or "")
    return new is not None and old is not None and new < old


def _requirements(text: str) -> list[str]:
    """The requirement lines of a requirements file (continuations joined, comments gone)."""
    joined = re.sub(r"\\\r?\n", " ", text)
    lines = (re.sub(r"(^|\s)#.*$", "", line).split() for line in joined.splitlines())
    return [" ".join(words) for words in lines if words]


def check_lock(text: str, version: str) -> list[str]:
    """The lock's lines when each pins one distribution with `==` and a hash, and troupe
    itself is `troupe==version`; LockError with one sentence otherwise."""
    lines = _requirements(text)
    for line in lines:
        name = re.split(r"[=<>!~;\s\[@]", line, maxsplit=1)[0]
        if line.startswith("-") or "==" not in line or not HASH.search(line):
            raise LockError(
                f"the lock of troupe {version} has a line without a pinned version and hash "
                f"({name or line[:40]}); rebuild it with `python -m troupe.update lock`"
            )
    own = [line for line in lines if re.match(r"troupe\s*==", line, re.IGNORECASE)]
    if len(own) != 1 or not re.match(rf"troupe\s*==\s*{re.escape(version)}\s", own[0] + " "):
        raise LockError(
            f"the lock of troupe {version} does not pin troupe=={version}; it belongs to "
            "another release"
        )
    return lines


def write_lock(wheel: Path, requirements: Path | None = None, out: Path | None = None) -> Path:
    """Write a release's lock: the dependencies' hashed lines (from `requirements`, a
    lock such as `pip-compile --generate-hashes` writes) and troupe's own wheel hash."""
    found = WHEEL_NAME.search(wheel.name)
    if found is None:
        raise LockError(
            f"{wheel.name} is not named like a troupe wheel (troupe-V-py3-none-any.whl)"
        )
    version = check_version(found["version"])
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lines = []
    if requirements is not None:
        for line in _requirements(requirements.read_text(encoding="utf-8")):
            if not re.match(r"troupe\s*[=<>!~@\[;]|troupe$", line, re.IGNORECASE):
                lines.append(line)
    lines.append(f"troupe=={version} --hash=sha256:{digest}")
    check_lock("\n".join(lines), version)
    out = out or wheel.with_name(f"troupe-{version}.lock")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
