"""The entry points: load() the federation file for a bot, check() it as `troupe check` does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from troupe.config.crosschecks import cross_checks, literal_tokens
from troupe.config.schema import Federation
from troupe.config.sections import prepared, validate_sections
from troupe.config.wording import ConfigError, Loc, Problem, describe, key_of, sentence
from troupe.config.yamlfile import Where, parse
from troupe.secrets import Secret, SecretError


def _analyse(path: str | Path) -> tuple[Federation | None, list[Problem], Where]:
    file = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as err:
        return (
            None,
            [Problem(file, None, "", f"cannot read the federation file: {err.strerror}.")],
            Where(1),
        )
    except UnicodeDecodeError:
        return None, [Problem(file, None, "", "the federation file is not UTF-8 text.")], Where(1)
    data, where, problems = parse(text, file)
    if problems:
        return None, problems, where
    if not isinstance(data, dict):
        message = "the file is empty" if data is None else "the top level must be a mapping of keys"
        return (
            None,
            [
                Problem(
                    file, 1, "", f"{message}; start from the example in docs/federation-file.md."
                )
            ],
            where,
        )

    seen: set[str] = set()

    def report(loc: Loc, message: str) -> None:
        key = key_of(loc)
        if key not in seen:
            seen.add(key)
            problems.append(Problem(file, where.find(loc), key, sentence(message)))

    for loc in literal_tokens(data, ()):
        report(
            loc,
            "this looks like a Slack token; secrets are not written in the federation file: "
            "put it in a file or the environment and write file:PATH or env:NAME",
        )
    data = prepared(data)
    sections = validate_sections(data, report)
    for loc, message in cross_checks(sections):
        report(loc, message)
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        return None, problems, where
    try:
        federation = Federation.model_validate(data)
    except ValidationError as err:
        for error in err.errors(include_url=False):
            report(*describe(error, tuple(error["loc"]), Federation))
        return None, problems, where
    federation._source = file
    federation._where = where
    return federation, [], where


def load(path: str | Path) -> Federation:
    """Read and validate the federation file; ConfigError lists every problem found."""
    federation, problems, _ = _analyse(path)
    if federation is None:
        raise ConfigError(problems)
    return federation


def check(path: str | Path, bot: str | None = None) -> list[Problem]:
    """Every problem in the federation file; with `bot`, also that its secrets resolve here.

    Like a bot, it imports the plugins (each configured one and every entry point) and
    checks each device against its driver's options and each driver's section against the
    driver's model. The file alone cannot tell whether a Pi has its tokens, so
    `troupe check --bot NAME` on the Pi reads each secret that bot will use (without showing it).
    """
    federation, problems, _ = _analyse(path)
    if federation is None:
        return problems
    from troupe.plugincheck import plugin_problems, section_settings  # imports the plugins

    drivers, found = plugin_problems(federation)
    problems += [federation.problem(loc, message) for loc, message in found]
    if bot is None:
        return problems
    try:
        name = federation.resolve_bot_name(bot)
    except ConfigError as err:
        return list(err.problems)
    secrets: list[tuple[Loc, Secret | None]] = []
    if federation.slack.mode == "app-per-bot":
        settings = federation.bots[name]
        secrets += [(("bots", name, "bot_token"), settings.bot_token)]
        secrets += [(("bots", name, "app_token"), settings.app_token)]
    else:
        secrets += [(("slack", "bot_token"), federation.slack.bot_token)]
        secrets += [(("slack", "app_token"), federation.slack.app_token)]
    for section, value in section_settings(federation, drivers).items():
        secrets += [((section, *loc), secret) for loc, secret in secrets_in(value)]
    for loc, secret in secrets:
        if secret is None:
            continue
        try:
            secret.reveal()
        except SecretError as err:
            problems.append(federation.problem(loc, str(err)))
    return problems


def secrets_in(value: object) -> Iterator[tuple[Loc, Secret]]:
    """Every secret a validated section holds, with where it is written."""
    if isinstance(value, Secret):
        yield (), value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            for loc, secret in secrets_in(getattr(value, name)):
                yield (name, *loc), secret
    elif isinstance(value, dict):
        for key, item in value.items():
            for loc, secret in secrets_in(item):
                yield (str(key), *loc), secret
