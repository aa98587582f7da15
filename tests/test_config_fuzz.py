"""Property tests on federation files: the loader returns a Federation or a ConfigError
listing problems, never an unexpected exception. A short budget; it runs in CI."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_config import EXAMPLE

from troupe.config import ConfigError, Federation, Problem, check, load

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["env:X", "file:/nope", "xoxb-1-2-abc", "on", "off", "light", "hue", "*"])
)
_TOP_KEYS = [
    "federation",
    "slack",
    "bots",
    "devices",
    "areas",
    "scenes",
    "channels",
    "mqtt",
    "hue",
    "slackmq",
    "journal",
    "access",
    "aliases",
    "plugins",
    "language",
    "mode",
    "kind",
    "area",
    "driver",
    "owner",
    "bot_token",
    "app_token",
    "channel",
]
_trees = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10) | st.sampled_from(_TOP_KEYS), inner, max_size=5)
    ),
    max_leaves=25,
)
_YAMLISH = [*"abcdefkmnorstxyz019 :-,{}[]&*!|>'\"#%@`?\t\n\\.", "\n  ", ": ", "- ", "<<: *a"]


def _yamlish(low: int, high: int) -> st.SearchStrategy[str]:
    """Text made of YAML's syntax characters and fragments."""
    return st.lists(st.sampled_from(_YAMLISH), min_size=low, max_size=high).map("".join)


def _lines(text: str) -> list[str]:
    return text.split("\n")


@st.composite
def _mutated_example(draw: st.DrawFn) -> str:
    """The documented example with a few random edits: lines dropped, doubled, swapped,
    re-indented, values replaced, characters inserted."""
    lines = _lines(EXAMPLE)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["drop", "double", "swap", "indent", "value", "insert"]))
        if edit == "drop":
            del lines[i]
        elif edit == "double":
            lines.insert(i, lines[i])
        elif edit == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif edit == "indent":
            lines[i] = draw(st.sampled_from(["", " ", "    ", "\t"])) + lines[i].lstrip()
        elif edit == "value" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            value = draw(
                _scalars | st.sampled_from(["{", "[]", "{}", "&a x", "*a", "!!python/none"])
            )
            lines[i] = f"{key}: {value if isinstance(value, str) else json.dumps(value)}"
        else:
            at = draw(st.integers(0, len(lines[i])))
            junk = draw(_yamlish(1, 4))
            lines[i] = lines[i][:at] + junk + lines[i][at:]
        if not lines:
            lines = [""]
    return "\n".join(lines)


def _dump(tree: Any) -> str:
    try:
        return yaml.safe_dump(tree, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        assume(False)
        raise


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    text=_mutated_example()
    | _trees.map(_dump)
    | _yamlish(0, 120)
    | st.binary(max_size=100).map(lambda b: b.decode("utf-8", "replace"))
)
def test_any_federation_file_loads_or_lists_its_problems(scratch: Path, text: str) -> None:
    path = scratch / "federation.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        federation = load(path)
    except ConfigError as err:
        assert err.problems, "a ConfigError must list at least one problem"
        for problem in err.problems:
            assert isinstance(problem, Problem) and problem.file == str(path)
            assert problem.message
            assert "Traceback" not in str(problem)
        assert check(path) == list(err.problems)
    else:
        assert isinstance(federation, Federation)
        # check also loads the plugins and their drivers' settings: it may find more.
        for problem in check(path):
            assert isinstance(problem, Problem) and problem.file == str(path)
            owned = any(  # a driver's own section (its name may hold a dot: ".  garage-pi")
                problem.key == name or problem.key.startswith(f"{name}.")
                for name in federation.driver_sections
            )
            assert owned or problem.key.startswith(("plugins", "devices", "mqtt")), problem


def test_the_unmutated_example_loads(scratch: Path) -> None:
    path = scratch / "example.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    assert isinstance(load(path), Federation)
