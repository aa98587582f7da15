"""Access control: who may command what, where; each refusal answered once and logged."""

from __future__ import annotations

from types import SimpleNamespace

from troupe.access import OUTSIDER, Access, Person

RULES = [
    SimpleNamespace(users=("U0BOB",), channels=("*",), what=("garage",), allow=False),
    SimpleNamespace(users=("*",), channels=("#kitchen",), what=("hall light",), allow=False),
]


def test_first_matching_rule_decides_and_admins_may_do_anything():
    access = Access.build(admins=["U0ALICE"], users=["U0ALICE", "U0BOB"], rules=RULES)
    home = {"C0HOME", "#home"}
    assert access.decide("U0BOB", home, {"garage light", "garage"}).allowed is False
    assert "garage" in access.decide("U0BOB", home, {"garage light", "garage"}).reason
    assert access.decide("U0BOB", home, {"hall light", "hall"}).allowed is True
    assert access.decide("U0BOB", {"C0KITCHEN", "#kitchen"}, {"hall light"}).allowed is False
    assert access.decide("U0ALICE", home, {"garage"}).allowed is True
    assert access.decide("U0CAROL", home, {"hall light"}).allowed is False
    assert access.decide(None, home, {"help"}).allowed is False
    assert access.may_message_directly("U0ALICE") and not access.may_message_directly("U0BOB")


def test_names_become_ids_before_anything_is_decided():
    rule = SimpleNamespace(users=("@bob",), channels=("*",), what=("garage",), allow=False)
    named = Access.build(admins=["@alice"], users=["@alice", "U0BOB"], rules=[rule])
    assert named.names() == {"@alice", "@bob"}
    assert named.decide("U0ALICE", {"#home"}, {"garage"}).allowed is False
    access = named.with_ids({"@alice": "U0ALICE", "@bob": "U0BOB"})
    assert access.names() == set()
    assert access.is_admin("U0ALICE") and access.may_message_directly("U0ALICE")
    assert access.decide("U0BOB", {"#home"}, {"garage"}).allowed is False
    assert access.decide("U0BOB", {"#home"}, {"hall light"}).allowed is True


def test_guests_and_other_teams_need_to_be_listed_by_id_even_with_a_star():
    access = Access.build(admins=["U0ALICE"], users=["*", "U0LENA"]).for_team("T0HOME")
    home = {"C0HOME", "#home"}
    gwen = Person("U0GWEN", guest=True, team="T0HOME")
    olaf = Person("U0OLAF", team="T0OTHER")
    lena = Person("U0LENA", guest=True, team="T0HOME")
    bob = Person("U0BOB", team="T0HOME")
    for outsider in (gwen, olaf):
        assert not access.may_command(outsider)
        assert access.decide(outsider, home, {"hall light"}) == access.decide(
            outsider, home, {"help"}
        )
        assert access.decide(outsider, home, {"hall light"}).reason == OUTSIDER
        assert access.refusal(outsider) == OUTSIDER
    assert access.may_command(lena) and access.decide(lena, home, {"hall light"}).allowed
    assert access.may_command(bob) and access.decide(bob, home, {"hall light"}).allowed
    assert access.is_admin(Person("U0ALICE", guest=True))  # an admin is listed by id
    # direct messages: '*' lets in members only, too
    direct = Access.build(admins=[], direct=["*", "U0LENA"]).for_team("T0HOME")
    assert direct.may_message_directly(bob) and direct.may_message_directly(lena)
    assert not direct.may_message_directly(gwen) and not direct.may_message_directly(olaf)
    # before the team is known, only guests stand out
    assert Access.build(admins=[]).may_command(olaf)
    assert not Access.build(admins=[]).may_command(gwen)


def test_admins_named_by_handle_are_warned_about():
    named = Access.build(admins=["@alice", "U0ROOT"])
    [warning] = named.warnings()
    assert "@alice" in warning and "U0ROOT" not in warning and "user ids" in warning
    assert Access.build(admins=["U0ALICE"]).warnings() == []
    assert named.with_ids({"@alice": "U0ALICE"}).warnings() == []
