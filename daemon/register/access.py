"""Who may ask for what: the employee on commands that move cash or open the drawer, and the
roles that may open the drawer without a sale. Pure: the command worker calls
:func:`check_access` inside the command's transaction, before the handler plans, so a refusal
is journaled as ``rejected`` (a ``cmd.rejected`` event) with nothing else changed.

Both refusals are ``not_permitted``: the command is well-formed (the contract makes
``employee`` optional), it is this register's configuration that does not allow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from ..contract.commands import (
    DrawerOpenParams,
    DrawerReason,
    PaymentKind,
    PaymentRecordParams,
    PrintReceiptParams,
)
from ..contract.errors import CommandRefused, ErrorCode

#: Commands that always move cash or change what the drawer should hold. ``print.raw`` is
#: here because its bytes may hold a drawer kick (ESC p, DLE DC4) that kassad passes through.
CASH_COMMANDS = frozenset({
    "session.open", "session.adjust", "session.close", "session.correct",
    "cash.transfer_out", "cash.transfer_in", "drawer.open", "print.raw",
})


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """``commands.require_employee``, ``commands.no_sale_roles`` and ``[roles]``."""

    require_employee: bool = True
    no_sale_roles: frozenset[str] = frozenset()  # empty: anyone may open for no sale
    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)  # role → employee ids

    def roles_of(self, employee: str) -> list[str]:
        return sorted(role for role, ids in self.roles.items() if employee in ids)


def moves_cash(name: str, params: BaseModel) -> bool:
    """Whether the command moves cash or opens the drawer (then it must name the employee)."""
    if name in CASH_COMMANDS:
        return True
    if name == "payment.record" and isinstance(params, PaymentRecordParams):
        return params.kind in (PaymentKind.CASH_SALE, PaymentKind.CASH_REFUND)
    if name == "print.receipt" and isinstance(params, PrintReceiptParams):
        return params.open_drawer
    return False


def check_access(policy: AccessPolicy, name: str, params: BaseModel,
                 employee: str | None) -> None:
    """Raise ``not_permitted`` when the policy does not allow this command from ``employee``."""
    who = employee.strip() if employee else ""
    if policy.require_employee and not who and moves_cash(name, params):
        raise CommandRefused(
            ErrorCode.NOT_PERMITTED,
            f"{name} moves cash or opens the drawer: the command must name the employee "
            "(envelope field \"employee\"); nothing was done",
            {"field": "employee", "required": True})
    if (name == "drawer.open" and isinstance(params, DrawerOpenParams)
            and params.reason == DrawerReason.NO_SALE and policy.no_sale_roles):
        held = policy.roles_of(who) if who else []
        if not set(held) & policy.no_sale_roles:
            allowed = sorted(policy.no_sale_roles)
            raise CommandRefused(
                ErrorCode.NOT_PERMITTED,
                f"drawer.open for no_sale: employee {who or '(none)'} has "
                f"{'role ' + ', '.join(held) if held else 'no role'} on this register; "
                f"only {', '.join(allowed)} may open the drawer without a sale "
                "(commands.no_sale_roles); the drawer stays closed",
                {"field": "employee", "employee": who or None, "roles": held,
                 "allowed_roles": allowed})
