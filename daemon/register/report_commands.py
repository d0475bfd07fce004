"""Reports and slips the daemon prints from its own journal.

- ``session.report``: the X report (the open session so far) or the Z report (a closed
  session) as data; with ``print: true`` it is printed and a ``report.issued`` event journaled
  (X reports are counted; a Z printed again is a copy, marked KOPIA/COPY and counted: the
  original Z is issued once, by the close).
- ``session.close`` prints the Z report it issued and a slip for the cash removed;
  ``session.adjust`` prints a slip for a change of the float (``reports.slips``).

Printing happens after the command's events are committed (``Outcome.after_commit``), as a
durable print job: a printer out of paper delays the paper, never the close.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from pydantic import BaseModel

from kassad.drivers.escpos.document import ReceiptDocument
from kassad.drivers.escpos.encoder import MODELS, EncodeError, EscposEncoder

from ..config import RegisterConfig
from ..contract.commands import (
    CommandEnvelope,
    SessionAdjustParams,
    SessionCloseParams,
    SessionReportParams,
)
from ..contract.errors import CommandRefused, ErrorCode
from ..contract.events import utc_timestamp
from ..journal.store import PrintJobRecord, SealedEvent
from ..ledger.rules import PlannedEvent
from ..ledger.session import CASH, LedgerState, Session, blind
from .commands import (
    Handler,
    Outcome,
    Plan,
    RegisterView,
    SessionAdjust,
    SessionClose,
    _trial_fold,
)
from .devices import Devices
from .reports import render_report, render_slip

_LOGGER = logging.getLogger(__name__)


class ReportPrinter:
    """Renders reports and slips in the register's language and queues them as print jobs."""

    def __init__(self, config: RegisterConfig) -> None:
        self._config = config
        printer = config.devices.printer
        self._encoder = (EscposEncoder(MODELS[printer.model])
                         if printer is not None and printer.model in MODELS else None)

    def available(self, view: RegisterView) -> bool:
        return self._encoder is not None and _devices(view).jobs is not None

    def _common(self) -> dict[str, Any]:
        c = self._config
        return {"register": c.register_id, "store": c.store, "language": c.reports.language,
                "header": c.reports, "base_currency": c.money.base_currency,
                "timezone": c.session.timezone}

    def report(self, kind: str, summary: dict[str, Any], *, z_number: int | None,
               copy_number: int, x_number: int | None, grand_totals: dict[str, Any],
               chain_head: dict[str, Any]) -> dict[str, Any]:
        return render_report(kind, summary, printed_at=utc_timestamp(),  # type: ignore[arg-type]
                             z_number=z_number, copy_number=copy_number, x_number=x_number,
                             grand_totals=grand_totals, chain_head=chain_head,
                             **self._common())

    def slip(self, kind: str, data: dict[str, Any], *, session: Session, employee: str | None,
             chain_head: dict[str, Any]) -> dict[str, Any]:
        return render_slip(kind, data, session_number=session.number,  # type: ignore[arg-type]
                           employee=employee, ts=utc_timestamp(), training=session.training,
                           chain_head=chain_head, **self._common())

    async def submit(self, view: RegisterView, job_id: str, document: dict[str, Any],
                     cause: dict[str, Any], kind: str) -> None:
        """Queue ``document`` as a durable print job (journaled as accepted at once)."""
        devices = _devices(view)
        assert self._encoder is not None and devices.jobs is not None
        try:
            data = self._encoder.encode(ReceiptDocument.model_validate(document))
        except EncodeError as e:  # our own document: a bug, not the requester's fault
            _LOGGER.error("%s %s could not be encoded: %s", kind, job_id, e)
            return
        job = PrintJobRecord(job_id, "new", None, utc_timestamp(), devices.jobs.expiry_ms(),
                             data, {"kind": kind, "document": document})
        await devices.jobs.submit(job, cause)


def _devices(view: RegisterView) -> Devices:
    devices = getattr(view, "devices", None)
    assert isinstance(devices, Devices)
    return devices


def _head(sealed: list[SealedEvent]) -> dict[str, Any]:
    last = sealed[-1]
    return {"seq": last.seq, "hash": last.hash}


def _cause(envelope: CommandEnvelope) -> dict[str, Any]:
    return {"cmd_id": envelope.cmd_id, "requester": envelope.requester}


class PrintedClose(SessionClose):
    """``session.close``, then its Z report and a slip for the cash removed on paper."""

    groupable = False  # it prints after the commit

    def __init__(self, printer: ReportPrinter, config: RegisterConfig) -> None:
        self._printer = printer
        self._config = config

    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan:
        plan = super().plan(view, params, envelope)
        assert isinstance(params, SessionCloseParams)
        plan.payload = (envelope, view.ledger.grand_totals)
        return plan

    async def execute(self, view: RegisterView, plan: Plan, ts: str,
                      employee: str | None) -> Outcome:
        outcome = await super().execute(view, plan, ts, employee)
        if not self._printer.available(view):
            return outcome
        envelope, _ = plan.payload
        ledger = outcome.ledger
        assert ledger is not None and ledger.last_closed is not None
        session = ledger.last_closed
        grand = copy.deepcopy(ledger.grand_totals)
        reports = self._config.reports

        async def print_them(sealed: list[SealedEvent]) -> None:
            head = _head(sealed)
            summary = session.summary()
            # The slip first: the Z report is the last paper of the session.
            if reports.slips and any((summary.get("removed") or {}).values()):
                document = self._printer.slip("cash_removed", summary, session=session,
                                              employee=employee, chain_head=head)
                await self._printer.submit(view, f"{envelope.cmd_id}.slip", document,
                                           _cause(envelope), "slip")
            if reports.print_z_at_close:
                document = self._printer.report("z", summary, z_number=session.z_number,
                                                copy_number=0, x_number=None,
                                                grand_totals=grand, chain_head=head)
                await self._printer.submit(view, f"{envelope.cmd_id}.z", document,
                                           _cause(envelope), "z_report")

        outcome.after_commit = print_them
        return outcome


class PrintedAdjust(SessionAdjust):
    """``session.adjust``, then a slip to sign for the float's change (cash only)."""

    groupable = False  # it prints after the commit

    def __init__(self, printer: ReportPrinter, config: RegisterConfig) -> None:
        self._printer = printer
        self._config = config

    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan:
        plan = super().plan(view, params, envelope)
        assert isinstance(params, SessionAdjustParams)
        wanted = self._config.reports.slips if params.print_slip is None else params.print_slip
        if params.print_slip and not self._printer.available(view):
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE,
                                 "print_slip: no receipt printer is configured on this register "
                                 "(devices.printer)", {"device": "printer"})
        cash = (params.payment_type or CASH) == CASH
        plan.payload = (envelope, wanted and cash and self._printer.available(view))
        return plan

    async def execute(self, view: RegisterView, plan: Plan, ts: str,
                      employee: str | None) -> Outcome:
        outcome = await super().execute(view, plan, ts, employee)
        envelope, wanted = plan.payload
        if not wanted:
            return outcome
        ledger = outcome.ledger
        assert ledger is not None and ledger.open_session is not None
        session = ledger.open_session
        data = plan.events[-1].data

        async def print_slip(sealed: list[SealedEvent]) -> None:
            document = self._printer.slip("adjustment", data, session=session,
                                          employee=employee, chain_head=_head(sealed))
            await self._printer.submit(view, f"{envelope.cmd_id}.slip", document,
                                       _cause(envelope), "slip")

        outcome.after_commit = print_slip
        return outcome


class SessionReport:
    """X report: the open session's figures; Z report: a closed session's (the last one, or
    ``session_id``). ``print``: on paper, journaled as ``report.issued``; a Z on paper again
    is a numbered copy."""

    def __init__(self, printer: ReportPrinter) -> None:
        self._printer = printer

    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan:
        assert isinstance(params, SessionReportParams)
        if params.print and not self._printer.available(view):
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE,
                                 "print: no receipt printer is configured on this register "
                                 "(devices.printer); ask for the report without print",
                                 {"device": "printer"})
        session = _report_session(view, params)
        events: list[PlannedEvent] = []
        if params.print:
            data: dict[str, Any] = {"kind": params.kind, "copy": params.kind == "z",
                                    "number": session.z_number if params.kind == "z" else None,
                                    "copy_number": session.z_copies + 1 if params.kind == "z"
                                    else 0, "training": session.training,
                                    "grand_totals": copy.deepcopy(view.ledger.grand_totals)}
            events.append(PlannedEvent("report.issued", session.session_id, data))
        return Plan(events=events, payload=(params, session.session_id, envelope))

    async def execute(self, view: RegisterView, plan: Plan, ts: str,
                      employee: str | None) -> Outcome:
        params, session_id, envelope = plan.payload
        trial = _trial_fold(view, plan.events, ts, employee)
        session = _find(view, trial, session_id)
        summary = session.summary()
        if params.kind == "x" and view.count_policy.blind:
            summary = blind(summary)
        data = {"report": {"kind": params.kind, "session": summary}}
        outcome = Outcome(plan.events, data, trial)
        if not params.print:
            return outcome
        copy_number = session.z_copies if params.kind == "z" else 0
        grand = copy.deepcopy(trial.grand_totals)

        async def print_it(sealed: list[SealedEvent]) -> None:
            document = self._printer.report(
                params.kind, summary, z_number=session.z_number, copy_number=copy_number,
                x_number=session.x_printed if params.kind == "x" else None,
                grand_totals=grand, chain_head=_head(sealed))
            await self._printer.submit(view, f"{envelope.cmd_id}.{params.kind}", document,
                                       _cause(envelope), f"{params.kind}_report")

        outcome.after_commit = print_it
        return outcome


def _report_session(view: RegisterView, params: SessionReportParams) -> Session:
    if params.kind == "x":
        if view.ledger.open_session is None:
            raise CommandRefused(ErrorCode.SESSION_NOT_OPEN,
                                 "an X report is of the open session, and none is open")
        return view.ledger.open_session
    if params.session_id is not None:
        last = view.ledger.last_closed
        session = (last if last is not None and last.session_id == params.session_id
                   else view.session_history(params.session_id))
        if session is None or session.is_open:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                                 f"params.session_id: no closed session {params.session_id} "
                                 "in this register's journal", {"field": "session_id"})
        if params.print and session is not last:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                                 "print: only the last closed session's Z report can be printed "
                                 "again; older ones are in the journal (kassad journal export)",
                                 {"field": "print"})
        return session
    if view.ledger.last_closed is None:
        raise CommandRefused(ErrorCode.SESSION_NOT_OPEN,
                             "a Z report is of a closed session, and none has closed yet")
    return view.ledger.last_closed


def _find(view: RegisterView, ledger: LedgerState, session_id: str) -> Session:
    for session in (ledger.open_session, ledger.last_closed):
        if session is not None and session.session_id == session_id:
            return session
    found = view.session_history(session_id)
    assert found is not None
    return found


def report_handlers(config: RegisterConfig) -> dict[str, Handler]:
    """The session commands that print: they replace the plain ones of ``default_handlers``."""
    printer = ReportPrinter(config)
    return {"session.close": PrintedClose(printer, config),
            "session.adjust": PrintedAdjust(printer, config),
            "session.report": SessionReport(printer)}
