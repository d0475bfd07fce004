"""The command worker: one command at a time, journaled before it is acknowledged.

Per command (mqtt-api.md "Commands"): in one ``BEGIN IMMEDIATE`` transaction a known
``cmd_id`` returns its stored replies (``duplicate: true``, nothing done again); an expired,
invalid or impossible command is stored ``rejected`` with a ``cmd.rejected`` event; otherwise
it is stored ``executing`` (the write-ahead intent). After that commit the ack is published,
the command is carried out, and its result and events are committed in one transaction before
the result is published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..config import CommandsConfig
from ..contract.errors import CommandRefused, ErrorCode
from ..contract.events import EventType, utc_timestamp
from ..contract.replies import ack_reply, error_reply, ok_reply
from ..journal.journal import RETRY_MAX, RETRY_MIN, Journal, until_written
from ..journal.store import CommandRecord, EventDraft, JournalError, SealedEvent
from ..ledger.session import LedgerState
from .access import AccessPolicy, check_access
from .commands import Handler, Outcome, RegisterView
from .intake import Command, Rejected

_LOGGER = logging.getLogger(__name__)

# Sends a reply without waiting for the broker: the outcome is journaled already, and a resend
# of the cmd_id gets it again, so the next command need not wait for this PUBACK.
ReplyFn = Callable[[dict[str, Any], str, bytes | None], None]
CrashPoint = Callable[[str], None]


def _effective_expiry(command: Command, default_ttl: float) -> datetime | None:
    env = command.envelope
    if env.expires_at is not None:
        return env.expires_at
    if env.issued_at is not None:
        try:
            return env.issued_at + timedelta(seconds=default_ttl)
        except OverflowError:  # issued at the end of the calendar: it expires after it
            return None
    return None


def _stamp(moment: datetime) -> str:
    """``utc_timestamp``, or the time as given when UTC would leave the calendar (year 1
    east of Greenwich)."""
    try:
        return utc_timestamp(moment)
    except OverflowError:
        return moment.isoformat()


class CommandWorker:
    def __init__(
        self,
        journal: Journal,
        view: RegisterView,
        handlers: dict[str, Handler],
        config: CommandsConfig,
        reply: ReplyFn,
        on_committed: Callable[[list[SealedEvent], LedgerState | None], None],
        crash_point: CrashPoint,
        *,
        access: AccessPolicy | None = None,
    ) -> None:
        self._journal = journal
        self._access = access if access is not None else AccessPolicy()
        self._view = view
        self._handlers = handlers
        self._config = config
        self._reply = reply
        self._on_committed = on_committed
        self._crash = crash_point
        self.queue: asyncio.Queue[Command | Rejected] = asyncio.Queue()
        self.idle = asyncio.Event()
        self.idle.set()
        #: Set while no command is in hand (queued ones may wait): where a stop may cut in.
        self.between_commands = asyncio.Event()
        self.between_commands.set()
        self.running: set[asyncio.Task[None]] = set()
        self._closing = False

    def reconfigure(self, handlers: dict[str, Handler], config: CommandsConfig,
                    access: AccessPolicy | None = None) -> None:
        """A reload: the next command is planned with these (one in hand keeps its plan)."""
        self._handlers = handlers
        self._config = config
        if access is not None:
            self._access = access

    def stop_taking(self) -> None:
        """A stop: finish the command in hand, start no other. Commands still queued were
        neither journaled nor acknowledged; their requesters resend them to the next start."""
        self._closing = True

    async def run(self) -> None:
        while not self._closing:
            item = await self.queue.get()
            self.idle.clear()
            self.between_commands.clear()
            try:
                await self.handle(item)
            except _LeftExecuting:
                pass  # stopping: its requester's resend gets ``indeterminate`` from the next start
            except JournalError as e:
                # Nothing was acknowledged: the requester's resend will be answered later.
                _LOGGER.error("journal unavailable, command %s not taken: %s", _cmd_id(item), e)
                self._refuse_unjournaled(item, e)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug must not take the register down, nor crash-loop on a resent command.
                _LOGGER.exception("command %s failed inside kassad", getattr(item, "name", None))
                self._answer(item, ErrorCode.INTERNAL_ERROR,
                             "kassad failed on this command (a bug, logged on the register); "
                             "ask cmd.status before sending it again")
            finally:
                self.queue.task_done()
                self.between_commands.set()
                if self.queue.empty():
                    self.idle.set()

    async def handle(self, item: Command | Rejected) -> None:
        if isinstance(item, Rejected):
            await self._reject(item)
        else:
            await self._run_command(item)

    # -- replies ------------------------------------------------------------------------------

    async def _replay(self, stored: CommandRecord, reply_to: str,
                      correlation: bytes | None) -> None:
        for reply in (stored.ack, stored.result):
            if reply is not None:
                self._reply({**reply, "duplicate": True}, reply_to, correlation)

    def _answer(self, item: Command | Rejected, code: ErrorCode, message: str) -> None:
        self._reply(error_reply(_cmd_id(item), item.name, CommandRefused(code, message)),
                    item.reply_to, item.correlation)

    def _refuse_unjournaled(self, item: Command | Rejected, error: Exception) -> None:
        self._answer(item, ErrorCode.JOURNAL_UNAVAILABLE,
                     f"the register cannot write its journal ({error}); nothing was done "
                     "— fix the disk, then send the command again")

    # -- rejected before the intent -----------------------------------------------------------

    def _rejection(self, cmd_id: str, name: str | None, requester: str | None,
                   employee: str | None, reply_to: str, refusal: CommandRefused,
                   ) -> tuple[CommandRecord, list[EventDraft]]:
        now = utc_timestamp()
        result = error_reply(cmd_id, name, refusal)
        record = CommandRecord(cmd_id, name, requester, "rejected", now, now, reply_to, None,
                               result)
        event = EventDraft(
            EventType.CMD_REJECTED, now, self._view.ledger.open_session.session_id
            if self._view.ledger.open_session else None,
            {"command": name, "code": refusal.code.value, "message": refusal.message},
            {"cmd_id": cmd_id, "requester": requester},
            {"employee": employee} if employee else None,
        )
        return record, [event]

    async def _reject(self, item: Rejected) -> None:
        if item.cmd_id is None:
            self._reply(error_reply(None, item.name, item.refusal), item.reply_to,
                              item.correlation)
            return
        cmd_id = item.cmd_id
        probe = CommandRecord(cmd_id, item.name, item.requester, "rejected", "", "", None, None,
                              None)
        stored, existed, sealed = await self._journal.run(
            self._journal.file.start_command, probe,
            lambda: self._rejection(cmd_id, item.name, item.requester, item.employee,
                                    item.reply_to, item.refusal))
        if existed:
            await self._replay(stored, item.reply_to, item.correlation)
            return
        self._on_committed(sealed, None)
        assert stored.result is not None
        self._reply(stored.result, item.reply_to, item.correlation)

    # -- the command path ---------------------------------------------------------------------

    async def _run_command(self, cmd: Command) -> None:
        env = cmd.envelope
        handler = self._handlers[cmd.name]
        plans: list[Any] = []

        def decide() -> tuple[CommandRecord, list[EventDraft]]:
            # Runs on the journal thread inside the transaction; the worker is waiting on it,
            # so the ledger it reads cannot change meanwhile.
            expiry = _effective_expiry(cmd, self._config.default_ttl)
            now = datetime.now(UTC)
            try:
                if expiry is not None and (now - expiry).total_seconds() > self._config.clock_skew:
                    raise CommandRefused(
                        ErrorCode.EXPIRED,
                        f"the command expired at {_stamp(expiry)} (now "
                        f"{utc_timestamp(now)}); nothing was done",
                        {"expires_at": _stamp(expiry)})
                check_access(self._access, cmd.name, cmd.params, env.employee)
                plans.append(handler.plan(self._view, cmd.params, env))
            except CommandRefused as refusal:
                return self._rejection(env.cmd_id, cmd.name, env.requester, env.employee,
                                       cmd.reply_to, refusal)
            stamp = utc_timestamp(now)
            record = CommandRecord(env.cmd_id, cmd.name, env.requester, "executing", stamp,
                                   stamp, cmd.reply_to, ack_reply(env.cmd_id, cmd.name), None)
            return record, []

        probe = CommandRecord(env.cmd_id, cmd.name, env.requester, "", "", "", None, None, None)
        stored, existed, sealed = await self._journal.run(
            self._journal.file.start_command, probe, decide)
        if existed:
            await self._replay(stored, cmd.reply_to, cmd.correlation)
            return
        if stored.status == "rejected":
            self._on_committed(sealed, None)
            assert stored.result is not None
            self._reply(stored.result, cmd.reply_to, cmd.correlation)
            return
        self._crash("after_intent")
        assert stored.ack is not None
        self._reply(stored.ack, cmd.reply_to, cmd.correlation)
        self._crash("after_ack")
        plan = plans[0]
        if getattr(plan, "background", False):
            task = asyncio.get_running_loop().create_task(
                self._execute_logged(cmd, stored, handler, plan), name=f"cmd-{cmd.name}")
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        else:
            await self._execute(cmd, stored, handler, plan)

    async def _execute_logged(self, cmd: Command, stored: CommandRecord, handler: Handler,
                              plan: Any) -> None:
        try:
            await self._execute(cmd, stored, handler, plan, background=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Left ``executing``: the next start makes it indeterminate, never re-runs it.
            _LOGGER.exception("device command %s failed inside kassad", stored.cmd_id)
            self._answer(cmd, ErrorCode.INTERNAL_ERROR,
                         "kassad failed on this command (a bug, logged on the register); "
                         "ask cmd.status before sending it again")

    def resume(self, stored: CommandRecord,
               work: Coroutine[Any, Any, dict[str, Any]]) -> None:
        """Finish a device command found in progress at start-up (a receipt still queued)."""
        async def finish() -> None:
            command = stored.command or ""
            try:
                result = ok_reply(stored.cmd_id, command, await work)
                status = "done"
            except CommandRefused as refusal:
                result = error_reply(stored.cmd_id, command, refusal)
                status = "failed"
            record = replace(stored, status=status, updated_at=utc_timestamp(), result=result)
            sealed = await until_written(
                lambda: self._journal.run(self._journal.file.finish_command, record, []),
                f"the result of {stored.cmd_id} ({command})")
            self._on_committed(sealed, None)
            if stored.response_topic:
                self._reply(result, stored.response_topic, None)

        task = asyncio.get_running_loop().create_task(finish(), name=f"resume-{stored.cmd_id}")
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def stop_background(self, grace: float) -> None:
        """Let device commands whose work is done journal their result (a receipt just
        printed, a kick just confirmed) for up to ``grace`` seconds, then cancel the ones still
        waiting (a receipt waiting for paper): they stay ``executing`` in the journal and are
        resumed, or made indeterminate, at the next start."""
        if self.running:
            await asyncio.wait(set(self.running), timeout=grace)
        for task in self.running:
            task.cancel()
        if self.running:
            await asyncio.wait(set(self.running))

    async def _commit_in_hand(self, cmd: Command, record: CommandRecord,
                              drafts: list[EventDraft]) -> list[SealedEvent]:
        """Journal the result of the command in hand. Its intent is journaled and it was
        acknowledged, so it waits for the journal (a full disk) rather than be dropped: only
        its journaled result may be answered. The ledger moves only with that write, so the
        worker takes no other command meanwhile; the ones that arrive are answered at once —
        from the journal when they were done before (a resend), else ``journal_unavailable``
        with nothing done — so no requester waits without an answer. A stop gives up on it:
        left ``executing``, it is ``indeterminate`` (with no effect) at the next start."""
        delay = RETRY_MIN
        failed = False
        while True:
            try:
                sealed = await self._journal.run(self._journal.file.finish_command, record,
                                                 drafts)
            except JournalError as e:
                if self._closing:
                    _LOGGER.warning("stopping: the result of %s (%s) is not journaled, so it "
                                    "changed nothing; it is indeterminate at the next start",
                                    record.cmd_id, cmd.name)
                    raise _LeftExecuting from e
                if not failed:
                    _LOGGER.error("the result of %s (%s) not journaled, waiting for the journal "
                                  "to take it: %s", record.cmd_id, cmd.name, e)
                failed = True
                await self._refuse_meanwhile(record.cmd_id, delay, e)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if failed:
                _LOGGER.warning("the result of %s (%s) journaled after all", record.cmd_id,
                                cmd.name)
            return sealed

    async def _refuse_meanwhile(self, in_hand: str, seconds: float, error: Exception) -> None:
        """For ``seconds``, answer the commands that arrive without doing any."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0 and not self._closing:
            try:
                async with asyncio.timeout(remaining):
                    item = await self.queue.get()
            except TimeoutError:
                return
            try:
                cmd_id = _cmd_id(item)
                if cmd_id == in_hand:
                    continue  # a resend of the command in hand: its result comes when journaled
                try:
                    stored = (await self._journal.run(self._journal.file.get_command, cmd_id)
                              if cmd_id is not None else None)
                except JournalError:
                    stored = None
                if stored is not None:
                    await self._replay(stored, item.reply_to, item.correlation)
                else:
                    self._refuse_unjournaled(item, error)
            finally:
                self.queue.task_done()

    async def _execute(self, cmd: Command, stored: CommandRecord, handler: Handler,
                       plan: Any, *, background: bool = False) -> None:
        env = cmd.envelope
        ts = utc_timestamp()
        outcome: Outcome | None = None
        try:
            outcome = await handler.execute(self._view, plan, ts, env.employee)
            result = ok_reply(env.cmd_id, cmd.name, outcome.data)
            status = "done"
        except CommandRefused as refusal:
            # Carried out and failed (a device said no): the result says why, no state change.
            result = error_reply(env.cmd_id, cmd.name, refusal)
            status = "failed"
        drafts = self._drafts(cmd, outcome, ts)
        record = replace(stored, status=status, updated_at=ts, result=result)
        if background:
            sealed = await until_written(
                lambda: self._journal.run(self._journal.file.finish_command, record, drafts),
                f"the result of {env.cmd_id} ({cmd.name})")
        else:
            sealed = await self._commit_in_hand(cmd, record, drafts)
        self._on_committed(sealed, outcome.ledger if outcome else None)
        self._crash("after_result_commit")
        self._reply(result, cmd.reply_to, cmd.correlation)
        if outcome is not None and outcome.after_commit is not None:
            try:
                await outcome.after_commit(sealed)
            except Exception:  # the command is done and answered; what follows is extra
                _LOGGER.exception("after %s %s", cmd.name, env.cmd_id)

    def _drafts(self, cmd: Command, outcome: Outcome | None, ts: str) -> list[EventDraft]:
        if outcome is None:
            return []
        env = cmd.envelope
        cause = {"cmd_id": env.cmd_id, "requester": env.requester}
        actor = {"employee": env.employee} if env.employee else None
        return [EventDraft(e.type, ts, e.session_id, e.data, cause, actor)
                for e in outcome.events]


class _LeftExecuting(Exception):
    """A stop came while the result of the command in hand could not be journaled."""


def _cmd_id(item: Command | Rejected) -> str | None:
    return item.envelope.cmd_id if isinstance(item, Command) else item.cmd_id
