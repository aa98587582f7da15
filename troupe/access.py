"""Who may ask for what, where: the federation file's access rules, decided without I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace


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

    def with_ids(self, ids: Mapping[str, str]) -> Access:
        """The same rules with each '@name' replaced by its user id from `ids`."""

        def swap(refs: frozenset[str]) -> frozenset[str]:
            return frozenset(ids.get(ref, ref) for ref in refs)

        return Access(
            admins=swap(self.admins),
            users=swap(self.users),
            direct=swap(self.direct),
            rules=tuple(replace(rule, users=swap(rule.users)) for rule in self.rules),
        )

    def is_admin(self, user: str | None) -> bool:
        return user is not None and user in self.admins

    def may_command(self, user: str | None) -> bool:
        return user is not None and ("*" in self.users or user in self.users or self.is_admin(user))

    def may_message_directly(self, user: str | None) -> bool:
        return user is not None and ("*" in self.direct or user in self.direct)

    def decide(self, user: str | None, channels: Iterable[str], what: Iterable[str]) -> Decision:
        """Whether `user` may ask for `what` (devices, areas, scenes, a command name) in
        a channel known by `channels` (its id and #name). Admins may do anything."""
        if user is None or not self.may_command(user):
            return Decision(False, "you are not on the list of people who may command the house")
        if self.is_admin(user):
            return Decision(True)
        asked = {w.lower() for w in what}
        where = {c.lower() for c in channels}
        for rule in self.rules:
            if rule.matches(user, where, asked):
                if rule.allow:
                    return Decision(True)
                refused = sorted(asked & rule.what) if "*" not in rule.what else sorted(asked)
                return Decision(False, f"you may not ask for {', '.join(refused)} here")
        return Decision(True)
