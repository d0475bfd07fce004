"""The employee on commands that move cash or open the drawer, and the no-sale roles (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kassad.daemon.config import RegisterConfig
from kassad.daemon.contract.commands import COMMAND_PARAMS
from kassad.daemon.contract.errors import CommandRefused, ErrorCode
from kassad.daemon.register.access import AccessPolicy, check_access, moves_cash
from kassad.daemon.register.service import access_policy, count_policy

SEK = {"amount": 1000, "currency": "SEK"}
DOC = {"blocks": [{"type": "text", "text": "hej"}]}

#: One valid ``params`` per command, and whether it moves cash or opens the drawer.
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("session.open", {"starting_float": SEK}, True),
    ("session.adjust", {"direction": "add", "amount": SEK}, True),
    ("session.close", {"counted": SEK, "leave_in_drawer": SEK}, True),
    ("session.correct", {"session_id": "s", "counted": SEK,
                         "approval": {"employee": "mia", "role": "manager", "reason": "why"}},
     True),
    ("payment.record", {"kind": "cash_sale", "tendered": SEK}, True),
    ("payment.record", {"kind": "cash_refund", "amount": SEK}, True),
    ("payment.record", {"kind": "other", "payment_type": "card", "amount": SEK}, False),
    ("drawer.open", {"reason": "sale"}, True),
    ("print.receipt", {"document": DOC, "open_drawer": True}, True),
    ("print.receipt", {"document": DOC}, False),
    ("print.raw", {"data": "G0A="}, True),
    ("cash.transfer_out", {"to": {"kind": "safe", "id": "SAFE1"}, "amount": SEK}, True),
    ("cash.transfer_in", {"from": {"kind": "safe", "id": "SAFE1"}, "amount": SEK}, True),
    ("cash.reconciliation", {"transfer_id": "T1", "status": "reconciled",
                             "by": {"role": "system"}}, False),
    ("session.report", {"kind": "x"}, False),
    ("counter.count", {"device": "coins", "action": "start"}, False),
    ("state.get", {}, False),
    ("cmd.status", {"of_cmd_id": "c1"}, False),
]


def params(name: str, values: dict[str, Any]) -> Any:
    return COMMAND_PARAMS[name].model_validate(values)


def test_every_command_is_classified() -> None:
    assert {name for name, _, _ in CASES} == set(COMMAND_PARAMS)


@pytest.mark.parametrize(("name", "values", "cash"), CASES)
def test_commands_that_move_cash_need_the_employee(name: str, values: dict[str, Any],
                                                   cash: bool) -> None:
    p = params(name, values)
    assert moves_cash(name, p) is cash
    policy = AccessPolicy()
    check_access(policy, name, p, "e17")  # named: always fine
    for missing in (None, "", "  "):
        if cash:
            with pytest.raises(CommandRefused) as refused:
                check_access(policy, name, p, missing)
            assert refused.value.code == ErrorCode.NOT_PERMITTED
            assert refused.value.details == {"field": "employee", "required": True}
            assert "must name the employee" in refused.value.message
        else:
            check_access(policy, name, p, missing)
        check_access(AccessPolicy(require_employee=False), name, p, missing)


def test_no_sale_only_for_the_roles_configured() -> None:
    policy = AccessPolicy(no_sale_roles=frozenset({"manager", "supervisor"}),
                          roles={"manager": frozenset({"mia"}), "supervisor": frozenset({"kim"}),
                                 "cashier": frozenset({"anna", "kim"})})
    no_sale = params("drawer.open", {"reason": "no_sale"})
    check_access(policy, "drawer.open", no_sale, "mia")
    check_access(policy, "drawer.open", no_sale, "kim")
    with pytest.raises(CommandRefused) as refused:
        check_access(policy, "drawer.open", no_sale, "anna")
    assert refused.value.code == ErrorCode.NOT_PERMITTED
    assert refused.value.details == {"field": "employee", "employee": "anna",
                                     "roles": ["cashier"],
                                     "allowed_roles": ["manager", "supervisor"]}
    assert "anna" in refused.value.message and "manager, supervisor" in refused.value.message
    with pytest.raises(CommandRefused) as unknown:
        check_access(policy, "drawer.open", no_sale, "nobody")
    assert unknown.value.details["roles"] == []
    # Other reasons, and no_sale when no roles are configured, are anyone's.
    check_access(policy, "drawer.open", params("drawer.open", {"reason": "sale"}), "anna")
    check_access(AccessPolicy(), "drawer.open", no_sale, "anna")
    # Without require_employee, a no_sale with no employee still needs the role.
    lax = AccessPolicy(require_employee=False, no_sale_roles=frozenset({"manager"}))
    with pytest.raises(CommandRefused):
        check_access(lax, "drawer.open", no_sale, None)


def test_the_configuration_gives_one_roles_table() -> None:
    config = RegisterConfig(
        store="S1", register_id="R1",
        commands={"no_sale_roles": ["manager"]},  # type: ignore[arg-type]
        roles={"manager": ["mia"], "cashier": ["anna"]},
        session={"count_rules": {"managers": ["bo"]}},  # type: ignore[arg-type]
    )
    assert config.commands.require_employee is True  # on by default
    access = access_policy(config)
    assert access.roles["manager"] == frozenset({"mia", "bo"})  # count_rules.managers counts
    assert access.roles_of("bo") == ["manager"]
    assert count_policy(config).managers == frozenset({"mia", "bo"})
    # The old key alone keeps its meaning.
    old = RegisterConfig(store="S1", register_id="R1",
                         session={"count_rules": {"managers": ["bo"]}})  # type: ignore[arg-type]
    assert count_policy(old).managers == frozenset({"bo"})
    assert count_policy(RegisterConfig(store="S1", register_id="R1")).managers == frozenset()
