"""Who may ask for what, where: the federation file's access rules, decided without I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

OUTSIDER = (
    "guests and people of other Slack workspaces may command the house only when the "
    "federation file lists them by user id"
)


@dataclass(frozen=True)
class Person:
    """A Slack user as access decisions need them (troupe.people finds these facts)."""

    id: str
    guest: bool = False
    """A multi- or single-channel guest (Slack's is_restricted / is_ultra_restricted)."""
    team: str | None = None
    """The user's own team (workspace); another than the bots' means Slack Connect."""


Who = Person | str | None
"""A Person, or a bare user id for a member of the bots' own team who is no guest."""


def _person(who: Who) -> Person | None:
    return Person(who) if isinstance(who, str) else who


@dataclass(frozen=True)
class Rule:
    users: frozenset[str]
    channels: frozenset[str]
    what: frozenset[str]
    allow: bool

    def matches(self, user: str, channels: set[str], what: set[str]) -> bool:
        return (
            ("*" in self.users or user in self.users)
            and ("*" in self.channels or bool(self.channels & channels))
            and ("*" in self.what or bool(self.what & what))
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class Access:
    """The access section, ready to decide. Names are compared lower-case."""

    admins: frozenset[str]
    users: frozenset[str]
    direct: frozenset[str]
    rules: tuple[Rule, ...] = ()
    team: str | None = field(default=None)
    """The bots' own team id (auth.test's team_id); None until known."""

    @classmethod
    def build(
        cls,
        admins: Iterable[str],
        users: Iterable[str] = ("*",),
        direct: Iterable[str] | None = None,
        rules: Sequence[object] = (),
    ) -> Access:
        admins = frozenset(admins)
        return cls(
            admins=admins,
            users=frozenset(users),
            direct=admins if direct is None else frozenset(direct),
            rules=tuple(
                Rule(
                    frozenset(getattr(r, "users", ("*",))),
                    frozenset(c.lower() for c in getattr(r, "channels", ("*",))),
                    frozenset(w.lower() for w in getattr(r, "what", ("*",))),
                    bool(getattr(r, "allow", True)),
                )
                for r in rules
            ),
        )

    def names(self) -> set[str]:
        """The '@name' entries, which `with_ids` must turn into user ids before deciding."""
        refs = self.admins | self.users | self.direct
        refs = refs.union(*(rule.users for rule in self.rules))
        return {ref for ref in refs if ref.startswith("@")}

    def warnings(self) -> list[str]:
        """What to warn about at start: admins named by handle (before `with_ids`)."""
        handles = sorted(ref for ref in self.admins if ref.startswith("@"))
        if not handles:
            return []
        return [
            f"access.admins names {', '.join(handles)} by handle: whoever takes that handle "
            "later becomes an admin; write their user ids (U012ABC) instead"
        ]

    def with_ids(self, ids: Mapping[str, str]) -> Access:
        """The same rules with each '@name' replaced by its user id from `ids`."""

        def swap(refs: frozenset[str]) -> frozenset[str]:
            return frozenset(ids.get(ref, ref) for ref in refs)

        return replace(
            self,
            admins=swap(self.admins),
            users=swap(self.users),
            direct=swap(self.direct),
            rules=tuple(replace(rule, users=swap(rule.users)) for rule in self.rules),
        )

    def for_team(self, team: str | None) -> Access:
        """The same rules, knowing the bots' own team (people of others are outsiders)."""
        return replace(self, team=team or None)

    def outsider(self, who: Who) -> bool:
        """A guest, or someone of another team: let in only where listed by id."""
        person = _person(who)
        if person is None:
            return True
        other_team = bool(self.team and person.team and person.team != self.team)
        return person.guest or other_team

    def is_admin(self, who: Who) -> bool:
        person = _person(who)
        return person is not None and person.id in self.admins

    def may_command(self, who: Who) -> bool:
        person = _person(who)
        if person is None:
            return False
        if person.id in self.users or self.is_admin(person):
            return True
        return "*" in self.users and not self.outsider(person)

    def may_message_directly(self, who: Who) -> bool:
        person = _person(who)
        if person is None:
            return False
        return person.id in self.direct or ("*" in self.direct and not self.outsider(person))

    def refusal(self, who: Who) -> str:
        """Why `who` may not command at all (for the answer in Slack)."""
        if self.outsider(who) and "*" in self.users and _person(who) is not None:
            return OUTSIDER
        return "you are not on the list of people who may command the house"

    def decide(self, who: Who, channels: Iterable[str], what: Iterable[str]) -> Decision:
        """Whether `who` may ask for `what` (devices, areas, scenes, a command name) in
        a channel known by `channels` (its id and #name). Admins may do anything.

        A guest or someone of another team passes a `users: ["*"]` only if listed by id;
        a rule naming everyone ('*') applies to them as to anyone."""
        person = _person(who)
        if person is None or not self.may_command(person):
            return Decision(False, self.refusal(person))
        if self.is_admin(person):
            return Decision(True)
        user = person.id
        asked = {w.lower() for w in what}
        where = {c.lower() for c in channels}
        for rule in self.rules:
            if rule.matches(user, where, asked):
                if rule.allow:
                    return Decision(True)
                refused = sorted(asked & rule.what) if "*" not in rule.what else sorted(asked)
                return Decision(False, f"you may not ask for {', '.join(refused)} here")
        return Decision(True)
