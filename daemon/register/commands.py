"""What each command does, once the dispatcher has parsed it and checked its ``cmd_id``.

A handler has two steps, matching the journal's two transactions: ``plan`` decides against the
current state (raising :class:`CommandRefused` makes the command ``rejected``) and ``execute``
carries it out and says which events and result data follow. Session commands touch no
hardware: their ``execute`` only folds the planned events into a copy of the ledger, which
becomes the register's ledger once the journal has committed them.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from ..contract.commands import (
    CashReconciliationParams,
    CashTransferInParams,
    CashTransferOutParams,
    CommandEnvelope,
    PaymentRecordParams,
    SessionAdjustParams,
    SessionCloseParams,
    SessionCorrectParams,
    SessionOpenParams,
)
from ..contract.errors import CommandRefused, ErrorCode
from ..journal.store import SealedEvent
from ..ledger import rules
from ..ledger.rules import CountPolicy, MoneyPolicy, PlannedEvent
from ..ledger.session import LedgerEvent, LedgerState, Session, apply, blind


@dataclass
class Plan:
    """A command accepted by ``plan``: what ``execute`` will carry out."""

    events: list[PlannedEvent] = field(default_factory=list)
    payload: Any = None
    # Device commands run beside the worker (a receipt waiting for paper must not hold up
    # payments); session commands run in line, in the order they came.
    background: bool = False


@dataclass
class Outcome:
    """What ``execute`` did: events to journal, the result ``data``, the ledger after it."""

    events: list[PlannedEvent]
    data: dict[str, Any]
    ledger: LedgerState | None = None
    # Run once the events are committed and the result sent (a Z report to print): its
    # failure is logged, never turned into the command's result.
    after_commit: Callable[[list[SealedEvent]], Awaitable[None]] | None = None


class RegisterView(Protocol):
    """What handlers may read of the register."""

    @property
    def ledger(self) -> LedgerState: ...

    @property
    def money(self) -> MoneyPolicy: ...

    @property
    def count_policy(self) -> CountPolicy: ...

    @property
    def register_id(self) -> str: ...

    def session_history(self, session_id: str) -> Session | None: ...


class Handler(Protocol):
    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan: ...

    async def execute(self, view: RegisterView, plan: Plan, ts: str,
                      employee: str | None) -> Outcome: ...


class GroupableHandler(Handler, Protocol):
    """A handler whose execution is a fold in memory (``groupable`` True): the worker calls
    ``settle`` instead of ``execute`` and may settle several commands in one group."""

    groupable: ClassVar[bool]

    def settle(self, view: RegisterView, plan: Plan, ts: str,
               employee: str | None) -> Outcome: ...


def _trial_fold(view: RegisterView, events: list[PlannedEvent], ts: str,
                employee: str | None) -> LedgerState:
    trial = copy.deepcopy(view.ledger)
    for e in events:
        apply(trial, LedgerEvent(e.type, e.session_id, ts, employee, e.data))
    return trial


class _LedgerHandler:
    """Base of the session commands: plan with the ledger rules, execute by folding."""

    #: Its execution is :meth:`settle` alone: a fold in memory, no device, nothing after the
    #: commit. The worker may then settle several such commands together (group commit: one
    #: commit for their intents, one for their results). A subclass that overrides
    #: ``execute`` must set it False.
    groupable: ClassVar[bool] = True

    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan:
        return Plan(events=self.plan_events(view, params))

    def plan_events(self, view: RegisterView, params: BaseModel) -> list[PlannedEvent]:
        raise NotImplementedError

    async def execute(self, view: RegisterView, plan: Plan, ts: str,
                      employee: str | None) -> Outcome:
        return self.settle(view, plan, ts, employee)

    def settle(self, view: RegisterView, plan: Plan, ts: str, employee: str | None) -> Outcome:
        """The execution, synchronous: the events folded into a copy of the ledger."""
        trial = _trial_fold(view, plan.events, ts, employee)
        data = self.result(trial, plan)
        if view.count_policy.blind and isinstance(data.get("session"), dict):
            data["session"] = blind(data["session"])
        return Outcome(plan.events, data, trial)

    def result(self, ledger: LedgerState, plan: Plan) -> dict[str, Any]:
        session = ledger.open_session or ledger.last_closed
        return {"session": session.summary() if session else None}


def _new_session_id() -> str:
    return str(uuid.uuid4())


class SessionOpen(_LedgerHandler):
    def plan_events(self, view: RegisterView, params: BaseModel) -> list[PlannedEvent]:
        assert isinstance(params, SessionOpenParams)
        return rules.plan_open(view.ledger, view.money, params, _new_session_id())


class PaymentRecord(_LedgerHandler):
    def plan_events(self, view: RegisterView, params: BaseModel) -> list[PlannedEvent]:
        assert isinstance(params, PaymentRecordParams)
        return rules.plan_payment(view.ledger, view.money, params, _new_session_id(),
                                  view.count_policy.blind)

    def result(self, ledger: LedgerState, plan: Plan) -> dict[str, Any]:
        out = super().result(ledger, plan)
        out["session_opened_automatically"] = plan.events[0].type == "session.opened"
        out["payment"] = plan.events[-1].data
        return out


class SessionAdjust(_LedgerHandler):
    def plan_events(self, view: RegisterView, params: BaseModel) -> list[PlannedEvent]:
        assert isinstance(params, SessionAdjustParams)
        return rules.plan_adjust(view.ledger, view.money, params, view.count_policy.blind)


class SessionClose(_LedgerHandler):
    def plan_events(self, view: RegisterView, params: BaseModel) -> list[PlannedEvent]:
        assert isinstance(params, SessionCloseParams)
        return rules.plan_close(view.ledger, view.money, params, view.count_policy)


class SessionCorrect(_LedgerHandler):
    def plan_events(self, view: RegisterView, params: BaseModel) -> list[PlannedEvent]:
        assert isinstance(params, SessionCorrectParams)
        return rules.plan_correct(view.ledger, view.money, params, view.count_policy)

    def result(self, ledger: LedgerState, plan: Plan) -> dict[str, Any]:
        return {"session": ledger.last_closed.summary() if ledger.last_closed else None}


class DeviceUnavailable:
    """A device command on a register where that device is not configured."""

    def __init__(self, device: str, config_key: str) -> None:
        self._device = device
        self._key = config_key

    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan:
        raise CommandRefused(
            ErrorCode.DEVICE_UNAVAILABLE,
            f"no {self._device} is configured on this register ({self._key})",
            {"device": self._device},
        )

    async def execute(self, view: RegisterView, plan: Plan, ts: str,
                      employee: str | None) -> Outcome:  # pragma: no cover - plan refuses
        raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE, f"no {self._device}")


class CashTransferOut(_LedgerHandler):
    def plan_events(self, view: RegisterView, params: BaseModel) -> list[PlannedEvent]:
        assert isinstance(params, CashTransferOutParams)
        return rules.plan_transfer_out(view.ledger, view.money, params, view.register_id,
                                       view.count_policy.blind)

    def result(self, ledger: LedgerState, plan: Plan) -> dict[str, Any]:
        return {**super().result(ledger, plan), "transfer": plan.events[-1].data}


class CashTransferIn(_LedgerHandler):
    def plan_events(self, view: RegisterView, params: BaseModel) -> list[PlannedEvent]:
        assert isinstance(params, CashTransferInParams)
        return rules.plan_transfer_in(view.ledger, view.money, params, view.register_id)

    def result(self, ledger: LedgerState, plan: Plan) -> dict[str, Any]:
        return {**super().result(ledger, plan), "transfer": plan.events[-1].data}


class CashReconciliation(_LedgerHandler):
    def plan_events(self, view: RegisterView, params: BaseModel) -> list[PlannedEvent]:
        assert isinstance(params, CashReconciliationParams)
        return rules.plan_reconciliation(view.ledger, params)


def default_handlers() -> dict[str, Handler]:
    drawer = DeviceUnavailable("cash drawer", "devices.drawer")
    printer = DeviceUnavailable("receipt printer", "devices.printer")
    factories: dict[str, Callable[[], Handler]] = {
        "session.open": SessionOpen,
        "payment.record": PaymentRecord,
        "session.adjust": SessionAdjust,
        "session.close": SessionClose,
        "session.correct": SessionCorrect,
        "cash.transfer_out": CashTransferOut,
        "cash.transfer_in": CashTransferIn,
        "cash.reconciliation": CashReconciliation,
    }
    handlers = {name: make() for name, make in factories.items()}
    handlers["drawer.open"] = drawer
    handlers["print.receipt"] = printer
    handlers["print.raw"] = printer
    handlers["counter.count"] = DeviceUnavailable("coin or note counter", "devices.counters")
    return handlers
