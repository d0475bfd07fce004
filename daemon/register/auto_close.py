"""Auto-close: the open session closes by itself at the configured boundary (``session.
auto_close``), as a system close: counted unknown, the expected cash left in the drawer. The
next session opens with that amount when the register is next used (the automatic start of
``payment.record``).

The task also catches up: a session still open from before a boundary that passed while the
daemon was stopped is closed at start-up, with ``due_at`` that boundary (the latest one, when
several passed).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from ..contract.events import utc_timestamp
from ..journal.store import EventDraft, JournalError, SealedEvent
from ..ledger import rules
from ..ledger.calendar import CloseRule, closed_period_date, last_close_due, next_close
from ..ledger.session import LedgerEvent, LedgerState, Session, apply
from .report_commands import ReportPrinter

if TYPE_CHECKING:
    from .dispatch import CommandWorker
    from .service import RegisterService

_LOGGER = logging.getLogger(__name__)

#: The longest single sleep: the wall clock is read again at least this often.
MAX_SLEEP = 60.0
#: After a close the journal refused, how long until it is tried again.
RETRY_AFTER = 60.0

#: Closes the open session as of ``due_at`` (ISO 8601 UTC), or does nothing when none is due.
CloseFn = Callable[[str], Awaitable[None]]


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    """The system's wall clock (UTC), and the event loop's sleep."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


#: The clock :meth:`AutoClose.for_service` gives the task; tests put one of their own here.
default_clock: Clock = WallClock()


def parse_timestamp(value: str) -> datetime:
    """An event's RFC 3339 timestamp (``…Z``) as an aware UTC datetime."""
    return datetime.fromisoformat(value).astimezone(UTC)


class AutoClose:
    """Waits for each boundary of ``rule`` in ``tz`` and calls ``close`` with it.

    The first round is the start-up catch-up: it counts boundaries from the opening of the
    session open at start (``opened_at``), so one that passed while the daemon was stopped is
    due at once. Several boundaries passed at once (a long stop, a clock set forward) make one
    close, at the latest of them.
    """

    def __init__(self, rule: CloseRule, tz: ZoneInfo, close: CloseFn, *,
                 opened_at: Callable[[], datetime | None], clock: Clock | None = None,
                 max_sleep: float = MAX_SLEEP, retry_after: float = RETRY_AFTER) -> None:
        self.rule = rule
        self.tz = tz
        self._close = close
        self._opened_at = opened_at
        self.clock = clock or default_clock
        self._max_sleep = max_sleep
        self._retry_after = retry_after

    @classmethod
    def for_service(cls, service: RegisterService, clock: Clock | None = None) -> AutoClose:
        """The task of a register whose configuration has ``session.auto_close``."""
        config = service.config.session
        if config.auto_close is None:
            raise ValueError("session.auto_close is not configured")

        def opened_at() -> datetime | None:
            session = service.ledger.open_session
            return parse_timestamp(session.opened_at) if session is not None else None

        return cls(config.auto_close, ZoneInfo(config.timezone), partial(system_close, service),
                   opened_at=opened_at, clock=clock)

    def next_due(self, after: datetime) -> datetime:
        return next_close(after, self.rule, self.tz)

    async def run(self) -> None:
        now = self.clock.now()
        opened = self._opened_at()
        after = opened if opened is not None and opened < now else now
        while True:
            now = self.clock.now()
            if now < after:
                after = now  # the clock was set back: its boundaries are due again from here
            due = last_close_due(after, now, self.rule, self.tz)
            if due is None:
                # Slept in short pieces, reading the wall clock each time: asyncio sleeps on
                # the monotonic clock, and the wall clock can be stepped (NTP, a wrong RTC at
                # boot, a suspended VM), which one long sleep would not notice.
                wait = (self.next_due(after) - now).total_seconds()
                await self.clock.sleep(min(self._max_sleep, wait))
            elif await self._fire(due):
                after = due
            else:
                await self.clock.sleep(self._retry_after)

    async def _fire(self, due: datetime) -> bool:
        """Close as of ``due``; False when it should be tried again (the journal refused)."""
        try:
            await self._close(utc_timestamp(due))
        except JournalError as e:
            _LOGGER.error("auto-close due at %s not journaled, tried again in %.0f s: %s",
                          utc_timestamp(due), self._retry_after, e)
            return False
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not take the register down; the session stays open and a person (or
            # the next boundary) closes it.
            _LOGGER.exception("auto-close due at %s failed inside kassad", utc_timestamp(due))
        return True


async def _between_commands(worker: CommandWorker) -> None:
    """Return when no command is in hand or waiting. A session command spans two journal
    transactions (its plan, then its events), with awaits between: a close journaled in
    between would close the session under it, and its events would follow a closed session.
    The worker takes queued commands back to back, so a burst of them delays the close to its
    end (seconds at a register; the close keeps its ``due_at``)."""
    while not (worker.idle.is_set() and worker.queue.empty()):
        await worker.queue.join()


async def system_close(service: RegisterService, due_at: str) -> None:
    """Close the register's open session as of ``due_at`` (a system close), unless none is
    open or it opened at or after ``due_at`` (it belongs to the next period)."""
    worker, journal = service._worker, service._journal
    assert worker is not None and journal is not None
    # In line with commands without going through the worker's queue: wait until the worker
    # is between commands, then plan and hand the write to the journal thread with no await
    # in between. A command arriving after that is planned on the journal thread after the
    # write, and the write sets the ledger there (``_append`` would fold it later, on the
    # loop), so the command sees the session closed: its payment opens the next one.
    await _between_commands(worker)
    state = service.ledger
    session = state.open_session
    if session is None or parse_timestamp(session.opened_at) >= parse_timestamp(due_at):
        return
    config = service.config.session
    period = closed_period_date(parse_timestamp(due_at), ZoneInfo(config.timezone),
                                config.business_day_starts)
    planned = rules.plan_system_close(state, due_at, business_date=period.isoformat())
    if not planned:
        return
    ts = utc_timestamp()
    drafts = [EventDraft(e.type, ts, e.session_id, e.data) for e in planned]
    after = copy.deepcopy(state)
    for e in planned:
        apply(after, LedgerEvent(e.type, e.session_id, ts, None, e.data))

    def write() -> list[SealedEvent]:
        sealed = journal.file.append(drafts)
        service.ledger = after
        return sealed

    sealed = await journal.run(write)
    # The ledger holds these events already (or a command's fold on top of them).
    service._committed(sealed, folded=True)
    closed = after.last_closed
    _LOGGER.info("session %s closed by auto-close due at %s (business day %s): %s left in the "
                 "drawer", session.number, due_at, period.isoformat(),
                 closed.closed.left_in_drawer if closed and closed.closed else {})
    if closed is not None and service.config.reports.print_z_at_close:
        await _print_z(service, closed, after, sealed)


async def _print_z(service: RegisterService, closed: Session, ledger: LedgerState,
                   sealed: list[SealedEvent]) -> None:
    """The Z report of an auto-close on paper, as a close by a person prints it."""
    printer = ReportPrinter(service.config)
    if not printer.available(service):
        return
    document = printer.report("z", closed.summary(), z_number=closed.z_number, copy_number=0,
                              x_number=None, grand_totals=copy.deepcopy(ledger.grand_totals),
                              chain_head={"seq": sealed[-1].seq, "hash": sealed[-1].hash})
    await printer.submit(service, f"auto-close.{closed.session_id}.z", document,
                         {"cmd_id": None, "requester": "auto-close"}, "z_report")
