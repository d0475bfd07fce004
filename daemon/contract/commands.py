"""Command envelope and the ``params`` of every command (pydantic; the JSON Schemas come from here).

Shapes the requester sends on ``kassad/v1/{store}/{reg}/cmd/{name}``. Schema checks are
structural (types, required fields, protocol bounds); what depends on the register's
configuration or session (accepted currencies, open session, drawer contents) is checked by
the register service and answered with its own error code.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from kassad.drivers.escpos.document import ReceiptDocument

# Largest amount the protocol carries: sums of many stay far inside SQLite's and JSON's 2**53.
MAX_AMOUNT = 10**13
CMD_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

Note = Annotated[StrictStr, Field(max_length=500)]
Reference = Annotated[StrictStr, Field(max_length=128)]
CurrencyCode = Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
Amount = Annotated[
    StrictInt, Field(ge=0, le=MAX_AMOUNT, description="integer count of minor units (öre, cent)")
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MoneyIn(_Model):
    """``{"amount": 12550, "currency": "SEK"}`` is 125.50 kr."""

    amount: Amount
    currency: CurrencyCode


DenominationKey = Annotated[StrictStr, Field(pattern=r"^[1-9][0-9]{0,12}$",
                                             description="coin or note value in minor units")]
Pieces = Annotated[StrictInt, Field(ge=0, le=1_000_000)]
Counts = Annotated[dict[DenominationKey, Pieces], Field(max_length=64)]


class CashCount(_Model):
    """Cash of one currency: a total ``amount``, ``counts`` by denomination (``{"10000": 3}``
    is three 100.00 notes), or ``from_counter``: the named counter's last counting run."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

    currency: CurrencyCode
    amount: Amount | None = None
    counts: Counts | None = None
    from_counter: Annotated[StrictStr, Field(pattern=ID_PATTERN)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CashCount:
        if self.from_counter is not None and (self.amount is not None or self.counts):
            raise ValueError("from_counter takes neither amount nor counts")
        if self.from_counter is None and self.amount is None and self.counts is None:
            raise ValueError("give amount, counts or from_counter")
        return self


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


def _unique_currencies(items: list[Any]) -> list[Any]:
    seen = [m.currency for m in items]
    dupes = sorted({c for c in seen if seen.count(c) > 1})
    if dupes:
        raise ValueError(f"currency listed twice: {', '.join(dupes)}")
    return items


# Per-currency amounts: one Money object or a list with each currency at most once.
PerCurrency = Annotated[list[MoneyIn], BeforeValidator(_one_or_many), Field(max_length=16)]
# Per-currency cash, each a total, a count by denomination, or a counter's run.
PerCurrencyCount = Annotated[list[CashCount], BeforeValidator(_one_or_many),
                             Field(max_length=16)]


class DrawerReason(StrEnum):
    SALE = "sale"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"
    NO_SALE = "no_sale"
    COUNT = "count"


class DrawerOpenParams(_Model):
    reason: DrawerReason
    note: Note | None = None


class PrintReceiptParams(_Model):
    """A receipt ``document``, or ``reprint_of`` an earlier job's cmd_id (printed again,
    marked as a copy: the only way a receipt is ever printed twice)."""

    document: ReceiptDocument | None = None
    reprint_of: Annotated[StrictStr, Field(pattern=CMD_ID_PATTERN)] | None = None
    open_drawer: StrictBool = False
    copies: Annotated[StrictInt, Field(ge=1, le=5)] = 1

    @model_validator(mode="after")
    def _one_source(self) -> PrintReceiptParams:
        if (self.document is None) == (self.reprint_of is None):
            raise ValueError("give either document or reprint_of")
        return self


class PrintRawParams(_Model):
    data: Annotated[StrictStr, Field(min_length=1, max_length=1_000_000,
                                     description="base64 ESC/POS bytes")]


class SessionOpenParams(_Model):
    starting_float: PerCurrencyCount
    note: Note | None = None
    training: StrictBool = Field(False, description="a training session: journaled and "
                                 "published, excluded from every total")

    _unique = field_validator("starting_float")(_unique_currencies)


class AdjustDirection(StrEnum):
    ADD = "add"
    REMOVE = "remove"


class SessionAdjustParams(_Model):
    """Cash added to or removed from the drawer (the change fund changes); with a
    ``payment_type`` other than cash, a deposit to or withdrawal from that type's balance."""

    direction: AdjustDirection
    amount: MoneyIn
    note: Note | None = None
    payment_type: Annotated[StrictStr, Field(pattern=ID_PATTERN)] | None = None
    print_slip: StrictBool | None = Field(None, description="default: reports.slips")


class PaymentKind(StrEnum):
    CASH_SALE = "cash_sale"
    CASH_REFUND = "cash_refund"
    OTHER = "other"


class PaymentRecordParams(_Model):
    """A cash sale gives ``tendered`` and ``change`` (``amount``, if given, is checked against
    them); a cash refund and an other payment give ``amount``; ``other`` names its type."""

    kind: PaymentKind
    amount: MoneyIn | None = None
    tendered: MoneyIn | None = None
    change: MoneyIn | None = None
    payment_type: Annotated[StrictStr, Field(pattern=ID_PATTERN)] | None = None
    reference: Reference | None = None
    # By denomination, where the POS knows them: keeps the drawer's inventory exact.
    tendered_counts: Counts | None = None
    change_counts: Counts | None = None
    exchange_rate: Annotated[StrictStr, Field(pattern=r"^[0-9]{1,9}(\.[0-9]{1,8})?$")] | None = (
        Field(None, description="base-currency units for one unit of the tendered foreign "
                                "currency, as a decimal string; default: money.exchange_rates"))


class Approval(_Model):
    """A manager's approval: who, in which role, and why."""

    employee: Annotated[StrictStr, Field(pattern=ID_PATTERN)]
    role: Literal["manager"]
    reason: Annotated[StrictStr, Field(min_length=3, max_length=500)]


class SessionCloseParams(_Model):
    counted: PerCurrencyCount
    leave_in_drawer: PerCurrencyCount
    note: Note | None = None
    approval: Approval | None = Field(None, description="needed when the count is off by "
                                      "more than session.count_rules.max_difference")

    _unique = field_validator("counted", "leave_in_drawer")(_unique_currencies)


class SessionCorrectParams(_Model):
    """A closed session's count corrected (a note found the next morning): a new approved
    event that references the session; the close itself is never changed."""

    session_id: Annotated[StrictStr, Field(max_length=64)]
    counted: PerCurrencyCount
    approval: Approval

    _unique = field_validator("counted")(_unique_currencies)


class Party(_Model):
    """The other side of a cash transfer: one of the store's safes or another register."""

    kind: Literal["safe", "register"]
    id: Annotated[StrictStr, Field(pattern=ID_PATTERN)]


TransferId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.:-]{1,140}$")]
BagId = Annotated[StrictStr, Field(min_length=1, max_length=64)]


class CashTransferOutParams(_Model):
    """Tender removal / safe drop: cash leaves the drawer for a safe or another register."""

    to: Party
    amount: PerCurrency
    bag: BagId | None = Field(None, description="the bag the cash travels in")
    seal: BagId | None = Field(None, description="the bag's seal number")
    note: Note | None = None

    _unique = field_validator("amount")(_unique_currencies)


class CashTransferInParams(_Model):
    """Float entry / receipt: cash comes into the drawer from a safe or another register;
    ``of_transfer`` names the sender's transfer when the cashier knows it (it then reconciles
    by itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: Party = Field(alias="from")
    amount: PerCurrency
    of_transfer: TransferId | None = None
    note: Note | None = None

    _unique = field_validator("amount")(_unique_currencies)


class ReconciledBy(_Model):
    employee: Annotated[StrictStr, Field(pattern=ID_PATTERN)] | None = None
    role: Literal["manager", "system"]


class CashReconciliationParams(_Model):
    """Sent by the store aggregator: a transfer of this register reconciled (or no longer)."""

    transfer_id: TransferId
    status: Literal["reconciled", "unreconciled"]
    counterpart: TransferId | None = None
    by: ReconciledBy
    reason: Note | None = None


class SessionReportParams(_Model):
    kind: Literal["x", "z"]
    print: StrictBool = False
    session_id: Annotated[StrictStr, Field(max_length=64)] | None = None


class CounterCountParams(_Model):
    device: Annotated[StrictStr, Field(pattern=ID_PATTERN)]
    action: Literal["start", "stop"]


class CmdStatusParams(_Model):
    of_cmd_id: Annotated[StrictStr, Field(pattern=CMD_ID_PATTERN)]


class StateGetParams(_Model):
    pass


COMMAND_PARAMS: dict[str, type[_Model]] = {
    "drawer.open": DrawerOpenParams,
    "print.receipt": PrintReceiptParams,
    "print.raw": PrintRawParams,
    "session.open": SessionOpenParams,
    "session.adjust": SessionAdjustParams,
    "payment.record": PaymentRecordParams,
    "session.close": SessionCloseParams,
    "session.correct": SessionCorrectParams,
    "session.report": SessionReportParams,
    "cash.transfer_out": CashTransferOutParams,
    "cash.transfer_in": CashTransferInParams,
    "cash.reconciliation": CashReconciliationParams,
    "counter.count": CounterCountParams,
    "cmd.status": CmdStatusParams,
    "state.get": StateGetParams,
}

# Read-only queries: answered at once, never journaled (a POS may poll them).
QUERY_COMMANDS = frozenset({"cmd.status", "state.get"})


class CommandEnvelope(_Model):
    v: Literal[1]
    cmd_id: Annotated[StrictStr, Field(pattern=CMD_ID_PATTERN)]
    issued_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    requester: Annotated[StrictStr, Field(pattern=ID_PATTERN)]
    employee: Annotated[StrictStr, Field(max_length=64)] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


def expires_before(envelope: CommandEnvelope, now: datetime, skew_s: float) -> bool:
    """True when the command's ``expires_at`` (plus the allowed clock skew) has passed."""
    if envelope.expires_at is None:
        return False
    return (now - envelope.expires_at).total_seconds() > skew_s
