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
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from ..config import CommandsConfig
from ..contract.errors import CommandRefused, ErrorCode
from ..contract.events import EventType, utc_timestamp
from ..contract.replies import ack_reply, error_reply, ok_reply
from ..journal.journal import RETRY_MAX, RETRY_MIN, Journal, until_written
from ..journal.store import CommandRecord, EventDraft, JournalError, SealedEvent
from ..ledger.rules import CountPolicy, MoneyPolicy
from ..ledger.session import LedgerState, Session
from .access import AccessPolicy, check_access
from .commands import GroupableHandler, Handler, Outcome, RegisterView
from .intake import Command, Rejected

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

#: At most this many queued session commands are settled together; a bigger group would
#: only hold back the first one's answer.
GROUP_MAX = 32

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
        on_committed: Callable[[list[SealedEvent]], None],
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
            items = [await self.queue.get()]
            # Session commands queued together are settled together (group commit); the first
            # other command taken ends the batch and is handled after them, in its turn.
            while (len(items) < GROUP_MAX and self._groupable(items[-1])
                   and not self.queue.empty()):
                items.append(self.queue.get_nowait())
            self.idle.clear()
            self.between_commands.clear()
            try:
                await self._handle_batch(items)
            finally:
                for _ in items:
                    self.queue.task_done()
                self.between_commands.set()
                if self.queue.empty():
                    self.idle.set()

    async def _handle_batch(self, items: list[Command | Rejected]) -> None:
        while items:
            count = 0
            while count < len(items) and self._groupable(items[count]):
                count += 1
            if count:
                group = [item for item in items[:count] if isinstance(item, Command)]
                taken = await self._guarded(group, self._run_group(group))
            else:
                taken = await self._guarded(items[:1], self.handle(items[0]))
            items = items[taken:]
            if self._closing:
                return  # the rest were neither journaled nor acknowledged: they are resent

    async def _guarded(self, items: list[Any], work: Coroutine[Any, Any, int | None]) -> int:
        """Run ``work`` for ``items``, answering them if it fails; how many items it took."""
        try:
            taken = await work
        except _LeftExecuting:
            pass  # stopping: the requesters' resends get ``indeterminate`` from the next start
        except JournalError as e:
            # Nothing was acknowledged: the requesters' resends will be answered later.
            for item in items:
                _LOGGER.error("journal unavailable, command %s not taken: %s", _cmd_id(item), e)
                self._refuse_unjournaled(item, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not take the register down, nor crash-loop on a resent command.
            _LOGGER.exception("command(s) %s failed inside kassad",
                              ", ".join(str(getattr(item, "name", None)) for item in items))
            for item in items:
                self._answer(item, ErrorCode.INTERNAL_ERROR,
                             "kassad failed on this command (a bug, logged on the register); "
                             "ask cmd.status before sending it again")
        else:
            return len(items) if taken is None else taken
        return len(items)

    def _groupable(self, item: Command | Rejected) -> bool:
        return isinstance(item, Command) and getattr(self._handlers.get(item.name),
                                                     "groupable", False)

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
                   ledger: LedgerState | None = None) -> tuple[CommandRecord, list[EventDraft]]:
        now = utc_timestamp()
        result = error_reply(cmd_id, name, refusal)
        record = CommandRecord(cmd_id, name, requester, "rejected", now, now, reply_to, None,
                               result)
        session = (ledger or self._view.ledger).open_session
        event = EventDraft(
            EventType.CMD_REJECTED, now, session.session_id if session else None,
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
        self._on_committed(sealed)
        assert stored.result is not None
        self._reply(stored.result, item.reply_to, item.correlation)

    # -- the command path ---------------------------------------------------------------------

    def _admit(self, cmd: Command, view: RegisterView, now: datetime) -> Any:
        """The command's plan, or the refusal (expired, not permitted, impossible now) that
        is journaled as its rejection before any intent."""
        env = cmd.envelope
        expiry = _effective_expiry(cmd, self._config.default_ttl)
        if expiry is not None and (now - expiry).total_seconds() > self._config.clock_skew:
            raise CommandRefused(
                ErrorCode.EXPIRED,
                f"the command expired at {_stamp(expiry)} (now {utc_timestamp(now)}); nothing "
                "was done", {"expires_at": _stamp(expiry)})
        check_access(self._access, cmd.name, cmd.params, env.employee)
        return self._handlers[cmd.name].plan(view, cmd.params, env)

    @staticmethod
    def _intent(cmd: Command, stamp: str) -> CommandRecord:
        env = cmd.envelope
        return CommandRecord(env.cmd_id, cmd.name, env.requester, "executing", stamp, stamp,
                             cmd.reply_to, ack_reply(env.cmd_id, cmd.name), None)

    @staticmethod
    def _probe(cmd: Command) -> CommandRecord:
        env = cmd.envelope
        return CommandRecord(env.cmd_id, cmd.name, env.requester, "", "", "", None, None, None)

    # -- session commands: settled in groups --------------------------------------------------

    async def _run_group(self, group: list[Command]) -> int:
        """Session commands (``groupable`` handlers), in order, with two commits for all of
        them: their intents, then their results with their events — the contract's sequence
        for each (intent committed, ack, carried out, result committed, result published),
        with one fsync per step for the group. Each is planned and folded against the ledger
        as the ones before it in the group leave it; the fold is in memory, so it runs inside
        the intents' transaction. A command refused there ends the group before it, unless it
        is the first: it is then journaled as rejected, alone, so the journal keeps the order
        in which things happened. Returns how many commands of ``group`` it took."""
        view = _GroupView(self._view)
        settled: dict[int, tuple[Outcome, str]] = {}

        def decide(i: int) -> tuple[CommandRecord, list[EventDraft]] | None:
            # On the journal thread inside the transaction; the worker waits on it, so the
            # ledger cannot change meanwhile.
            if decided_rejection:
                return None  # a rejection is journaled alone: the next group starts here
            cmd = group[i]
            env = cmd.envelope
            now = datetime.now(UTC)
            stamp = utc_timestamp(now)
            try:
                plan = self._admit(cmd, view, now)
                handler = cast(GroupableHandler, self._handlers[cmd.name])
                outcome = handler.settle(view, plan, stamp, env.employee)
            except CommandRefused as refusal:
                if settled:
                    return None  # decided again first in the next group, after these results
                decided_rejection.append(i)
                return self._rejection(env.cmd_id, cmd.name, env.requester, env.employee,
                                       cmd.reply_to, refusal, view.ledger)
            assert outcome.ledger is not None and outcome.after_commit is None
            view.settled = outcome.ledger
            settled[i] = (outcome, stamp)
            return self._intent(cmd, stamp), []

        decided_rejection: list[int] = []
        taken = await self._journal.run(self._journal.file.start_commands,
                                        [self._probe(cmd) for cmd in group], decide)
        results: list[tuple[Command, CommandRecord, list[EventDraft]]] = []
        resends: list[Command] = []  # of a command earlier in this group: answered after it
        for i, (stored, existed, sealed) in enumerate(taken):
            cmd = group[i]
            if existed and any(group[j].envelope.cmd_id == stored.cmd_id for j in settled):
                resends.append(cmd)
            elif existed:
                await self._replay(stored, cmd.reply_to, cmd.correlation)
            elif stored.status == "rejected":
                self._on_committed(sealed)
                assert stored.result is not None
                self._reply(stored.result, cmd.reply_to, cmd.correlation)
            else:
                self._crash("after_intent")
                assert stored.ack is not None
                self._reply(stored.ack, cmd.reply_to, cmd.correlation)
                self._crash("after_ack")
                outcome, stamp = settled[i]
                result = ok_reply(cmd.envelope.cmd_id, cmd.name, outcome.data)
                results.append((cmd, replace(stored, status="done", updated_at=stamp,
                                             result=result), self._drafts(cmd, outcome, stamp)))
        if results:
            what = ", ".join(f"{record.cmd_id} ({cmd.name})" for cmd, record, _ in results)
            sealed_each = await self._commit_in_hand(
                lambda: self._journal.run(self._journal.file.finish_commands,
                                          [(record, drafts) for _, record, drafts in results]),
                {record.cmd_id for _, record, _ in results}, what)
            self._on_committed([e for events in sealed_each for e in events])
            for cmd, record, _ in results:
                self._crash("after_result_commit")
                assert record.result is not None
                self._reply(record.result, cmd.reply_to, cmd.correlation)
            done = {record.cmd_id: record for _, record, _ in results}
            for cmd in resends:
                await self._replay(done[cmd.envelope.cmd_id], cmd.reply_to, cmd.correlation)
        return len(taken)

    # -- one command at a time: devices, reports ----------------------------------------------

    async def _run_command(self, cmd: Command) -> None:
        env = cmd.envelope
        handler = self._handlers[cmd.name]
        plans: list[Any] = []

        def decide() -> tuple[CommandRecord, list[EventDraft]]:
            # Runs on the journal thread inside the transaction; the worker is waiting on it,
            # so the ledger it reads cannot change meanwhile.
            now = datetime.now(UTC)
            try:
                plans.append(self._admit(cmd, self._view, now))
            except CommandRefused as refusal:
                return self._rejection(env.cmd_id, cmd.name, env.requester, env.employee,
                                       cmd.reply_to, refusal)
            return self._intent(cmd, utc_timestamp(now)), []

        stored, existed, sealed = await self._journal.run(
            self._journal.file.start_command, self._probe(cmd), decide)
        if existed:
            await self._replay(stored, cmd.reply_to, cmd.correlation)
            return
        if stored.status == "rejected":
            self._on_committed(sealed)
            assert stored.result is not None
            self._reply(stored.result, cmd.reply_to, cmd.correlation)
            return
        self._crash("after_intent")
        assert stored.ack is not None
        plan = plans[0]
        if getattr(plan, "background", False):
            # The device's task is created before the ack's, so it runs first up to its first
            # wait: a kick's bytes reach the transport, then the ack is published right
            # behind them (~0.2 ms a publish takes, off the kick's latency). The ack still
            # precedes the result, which waits for a journal commit.
            task = asyncio.get_running_loop().create_task(
                self._execute_logged(cmd, stored, handler, plan), name=f"cmd-{cmd.name}")
            self.running.add(task)
            task.add_done_callback(self.running.discard)
            self._reply(stored.ack, cmd.reply_to, cmd.correlation)
            self._crash("after_ack")
        else:
            self._reply(stored.ack, cmd.reply_to, cmd.correlation)
            self._crash("after_ack")
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
            self._on_committed(sealed)
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

    async def _commit_in_hand(self, write: Callable[[], Awaitable[T]], in_hand: set[str],
                              what: str) -> T:
        """Journal the result of the command(s) in hand. The intent is journaled and was
        acknowledged, so it waits for the journal (a full disk) rather than be dropped: only
        a journaled result may be answered. The ledger moves only with that write, so the
        worker takes no other command meanwhile; the ones that arrive are answered at once —
        from the journal when they were done before (a resend), else ``journal_unavailable``
        with nothing done — so no requester waits without an answer. A stop gives up on it:
        left ``executing``, it is ``indeterminate`` (with no effect) at the next start."""
        delay = RETRY_MIN
        failed = False
        while True:
            try:
                written = await write()
            except JournalError as e:
                if self._closing:
                    _LOGGER.warning("stopping: the result of %s is not journaled, so it changed "
                                    "nothing; it is indeterminate at the next start", what)
                    raise _LeftExecuting from e
                if not failed:
                    _LOGGER.error("the result of %s not journaled, waiting for the journal "
                                  "to take it: %s", what, e)
                failed = True
                await self._refuse_meanwhile(in_hand, delay, e)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if failed:
                _LOGGER.warning("the result of %s journaled after all", what)
            return written

    async def _refuse_meanwhile(self, in_hand: set[str], seconds: float,
                                error: Exception) -> None:
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
                if cmd_id in in_hand:
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
            sealed = await self._commit_in_hand(
                lambda: self._journal.run(self._journal.file.finish_command, record, drafts),
                {record.cmd_id}, f"{record.cmd_id} ({cmd.name})")
        self._on_committed(sealed)
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


class _GroupView:
    """The register as a command of a group sees it: the ledger as the commands before it in
    the group leave it (their results are not journaled yet); the rest is the register's."""

    def __init__(self, view: RegisterView) -> None:
        self._view = view
        self.settled: LedgerState | None = None  # after the group's commands so far

    @property
    def ledger(self) -> LedgerState:
        # Read when planning, on the journal thread: an auto-close written just before the
        # group's transaction has set the register's ledger there.
        return self.settled if self.settled is not None else self._view.ledger

    @property
    def money(self) -> MoneyPolicy:
        return self._view.money

    @property
    def count_policy(self) -> CountPolicy:
        return self._view.count_policy

    @property
    def register_id(self) -> str:
        return self._view.register_id

    def session_history(self, session_id: str) -> Session | None:
        return self._view.session_history(session_id)


class _LeftExecuting(Exception):
    """A stop came while the result of the command in hand could not be journaled."""


def _cmd_id(item: Command | Rejected) -> str | None:
    return item.envelope.cmd_id if isinstance(item, Command) else item.cmd_id
