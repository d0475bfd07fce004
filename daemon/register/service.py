"""The register service: journal, ledger, command worker, outbox and MQTT, wired together.

Start-up: open the journal, turn commands a crash left ``executing`` into ``indeterminate``,
fold the journal into the ledger, journal ``daemon.started``, then run (in one TaskGroup) the
command worker, the MQTT link (which runs the outbox relay and the birth message per
connection), the ack saver and the ``state`` publisher. Sessions, journal and devices carry on
while the broker is away; only replies and events wait for it.

Under systemd it says READY=1 once the journal is open and every device has been probed, keeps
a readable STATUS= line, pings the watchdog from its event loop while the journal answers,
reloads what is safe to reload on SIGHUP (:data:`kassad.daemon.config.RELOADABLE`) and says
STOPPING=1 when asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiomqtt
from pydantic import ValidationError

from .. import __version__
from ..config import RELOADABLE, MoneyConfig, RegisterConfig
from ..contract.commands import QUERY_COMMANDS, CmdStatusParams
from ..contract.errors import CommandRefused, ErrorCode
from ..contract.events import AckMessage, EventType, ResyncRequest, utc_timestamp
from ..contract.replies import error_reply, ok_reply
from ..contract.topics import RegisterTopics
from ..journal.journal import Journal, until_written
from ..journal.store import CommandRecord, EventDraft, JournalError, PrintJobRecord, SealedEvent
from ..ledger.rules import CountPolicy, MoneyPolicy
from ..ledger.session import LedgerEvent, LedgerState, Session, apply, blind, fold
from ..mqtt.link import (
    MqttLink,
    NotConnected,
    PublishFailed,
    cancel_tasks,
    message_properties,
    publish_properties,
    will_properties,
)
from ..reload import FAILED_NOTE, Reload, reload_from
from ..systemd import Notifier, run_watchdog, watchdog_interval
from .access import AccessPolicy
from .auto_close import AutoClose
from .commands import Handler, default_handlers
from .device_commands import device_handlers, job_result
from .devices import Devices
from .dispatch import CommandWorker
from .faults import CrashPoints
from .intake import Command, Rejected, parse_command
from .outbox import Outbox
from .report_commands import report_handlers

_LOGGER = logging.getLogger(__name__)

#: How often the STATUS= line is recomputed when nothing else changed it.
STATUS_REFRESH = 5.0
#: At a stop, how long device commands whose work is done get to journal their results.
BACKGROUND_GRACE = 2.0


def money_policy(money: MoneyConfig) -> MoneyPolicy:
    return MoneyPolicy(money.base_currency, frozenset(money.accepted), money.max_amount,
                       money.denomination_sets(), money.low_change_pieces,
                       money.rounding_rules(), dict(money.exchange_rates))


def all_handlers(config: RegisterConfig) -> dict[str, Handler]:
    """Every command's handler: session commands, devices, and the ones that print."""
    return {**default_handlers(), **device_handlers(config.devices), **report_handlers(config)}


def count_policy(config: RegisterConfig) -> CountPolicy:
    """The count rules; the managers are ``count_rules.managers`` and ``[roles] manager``."""
    rules = config.session.count_rules
    return CountPolicy(rules.blind, dict(rules.max_difference), rules.max_recounts,
                       config.role_members().get("manager", frozenset()),
                       config.session.allow_unreconciled_close)


def access_policy(config: RegisterConfig) -> AccessPolicy:
    return AccessPolicy(config.commands.require_employee,
                        frozenset(config.commands.no_sale_roles), config.role_members())


class RegisterService:
    """One register. ``run()`` until ``stop()``; the journal is open only inside ``run()``.

    ``load_config`` reads the configuration again for a reload (SIGHUP); without it a reload
    request is refused with a log line.
    """

    def __init__(self, config: RegisterConfig, *, crash_points: CrashPoints | None = None,
                 usb_backend: Any = None, notifier: Notifier | None = None,
                 load_config: Callable[[], RegisterConfig] | None = None) -> None:
        self.config = config
        self.topics = RegisterTopics(config.store, config.register_id)
        self.boot_id = str(uuid.uuid4())
        self.money = money_policy(config.money)
        self.count_policy = count_policy(config)
        self.ledger = LedgerState()
        self.ready = asyncio.Event()
        self.notifier = notifier or Notifier.from_env()
        self._load_config = load_config
        self._reloads: set[asyncio.Task[Reload[RegisterConfig] | None]] = set()
        self._status_dirty = asyncio.Event()
        self._config_note = ""  # what the last reload left for a restart
        self._stop = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._crash = crash_points or CrashPoints.from_env(os.environ)
        self._conn_seq = 0
        self._journal: Journal | None = None
        self._outbox: Outbox | None = None
        self._worker: CommandWorker | None = None
        self._link: MqttLink | None = None
        self._reply_tasks: set[asyncio.Task[None]] = set()
        self._usb_backend = usb_backend
        self.devices: Devices | None = None
        self._resumable: list[tuple[CommandRecord, PrintJobRecord]] = []

    # -- RegisterView ---------------------------------------------------------------------------

    def session_history(self, session_id: str) -> Session | None:
        """A session folded from its own events (called on the journal thread, in a plan)."""
        assert self._journal is not None
        bodies = self._journal.file.session_bodies(session_id)
        if not bodies:
            return None
        state = fold(LedgerEvent.from_envelope(json.loads(b)) for b in bodies)
        return state.last_closed or state.open_session

    @property
    def register_id(self) -> str:
        return self.config.register_id

    def _open_session_id(self) -> str | None:
        return self.ledger.open_session.session_id if self.ledger.open_session else None

    def print_job(self, job_id: str) -> PrintJobRecord | None:
        """A print job of the journal (called on the journal thread, in a plan)."""
        assert self._journal is not None
        return self._journal.file.get_job(job_id)

    # -- life cycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        if not self._stop.is_set():
            self.notifier.stopping("stopping: finishing the command in hand and any receipt "
                                   "being printed")
        self._stop.set()

    async def run(self) -> None:
        self.notifier.status(f"starting: opening the journal {self.config.journal.path}")
        journal = await Journal.open(self.config.journal.path, self.config.store,
                                     self.config.register_id, self.boot_id)
        self._journal = journal
        try:
            self.notifier.status(f"starting: reading the journal (epoch {journal.epoch}, "
                                 f"{journal.last_seq} events)")
            await self._recover(journal)
            self._outbox = Outbox(journal, self.topics, self.config.delivery,
                                  await journal.run(journal.file.load_acks))
            self.devices = Devices(self.config.devices, emit=self._append,
                                   save_job=self._save_job, usb_backend=self._usb_backend,
                                   crash_point=self._crash.hit,
                                   session_id=self._open_session_id)
            handlers = all_handlers(self.config)
            self._worker = CommandWorker(journal, self, handlers, self.config.commands,
                                         self._reply_soon, self._committed, self._crash.hit,
                                         access=access_policy(self.config))
            self._link = MqttLink(
                self.config.broker, client_id=self.topics.client_id,
                subscriptions=[self.topics.cmd_filter, self.topics.ack_filter,
                               self.topics.resync],
                on_message=self._on_message, on_connected=self._on_connected,
                will=self._will, name=f"register {self.topics.client_id}")
            await self._append([EventDraft(EventType.DAEMON_STARTED, utc_timestamp(), data={
                "version": __version__, "boot_id": self.boot_id, "epoch": journal.epoch,
                "journal_created": journal.file.created})])
            _LOGGER.info("register %s/%s ready: epoch %s, seq %s, session %s",
                         self.config.store, self.config.register_id, journal.epoch,
                         journal.last_seq,
                         self.ledger.open_session.number if self.ledger.open_session else "none")
            await self._serve()
        finally:
            self._journal = None
            await journal.close()

    async def _serve(self) -> None:
        assert self._worker and self._link and self._outbox
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._worker.run(), name="commands"),
                group.create_task(self._link.run(), name="mqtt"),
                group.create_task(self._outbox.save_acks(), name="ack-saver"),
                group.create_task(self._publish_state_on_change(), name="state"),
            ]
            if self.config.session.auto_close is not None:  # catches up first, then waits
                tasks.append(group.create_task(AutoClose.for_service(self).run(),
                                               name="auto-close"))
            assert self.devices is not None
            tasks.append(group.create_task(self.devices.run(), name="devices"))
            self.notifier.status("starting: probing " + (self.devices.describe() or "devices"))
            await self.devices.wait_probed()
            self._resume_print_jobs()
            self.ready.set()
            self.notifier.ready(self.status_line())
            interval = watchdog_interval()
            if interval is not None:  # systemd's watchdog counts from READY=1
                tasks.append(group.create_task(
                    run_watchdog(self.notifier, interval, self._health), name="watchdog"))
            tasks.append(group.create_task(self._report_status(), name="sd-status"))
            await self._stop.wait()
            await self._shutdown(tasks)

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        """Finish the command in hand, journal ``daemon.stopped``, say offline, disconnect."""
        assert self._worker and self._link
        self._worker.stop_taking()  # under a steady stream of commands the queue never empties
        try:
            async with asyncio.timeout(10):
                await self._worker.between_commands.wait()
        except TimeoutError:
            _LOGGER.warning("a command is still running at shutdown; stopping anyway")
        tasks[0].cancel()
        self.notifier.status("stopping: waiting for the receipt being printed or the drawer "
                             "being opened")
        if self.devices is not None and not await self.devices.quiesce(timeout=20):
            _LOGGER.warning("a receipt or a kick was still in progress at shutdown: it will be "
                            "indeterminate at the next start")
        await self._worker.stop_background(grace=BACKGROUND_GRACE)
        try:
            await self._append([EventDraft(EventType.DAEMON_STOPPED, utc_timestamp(),
                                           data={"boot_id": self.boot_id})])
        except JournalError as e:  # a full disk must not turn a stop into a crash
            _LOGGER.error("daemon.stopped not journaled (the next daemon.started shows the "
                          "restart): %s", e)
        if self._link.is_connected:
            try:
                await self._publish_status(online=False)
            except (NotConnected, PublishFailed) as e:
                _LOGGER.warning("could not publish offline status: %s", e)
        self._state_changed.set()
        await cancel_tasks(tasks[1:])

    # -- systemd: status line, health, reload --------------------------------------------------

    def status_line(self) -> str:
        """What ``systemctl status`` shows: session, devices, broker and delivery, one line."""
        session = self.ledger.open_session
        parts = [f"session {session.number} open" if session else "no session open"]
        if self.devices is not None:
            parts += self.devices.status_words()
        if self._link is not None:
            parts.append("broker connected" if self._link.is_connected
                         else "broker unreachable, working offline")
        if self._outbox is not None and self._outbox.pending:
            parts.append(f"{self._outbox.pending} events awaiting delivery")
        if self._config_note:
            parts.append(self._config_note)
        return "ready: " + ", ".join(parts)

    async def _report_status(self) -> None:
        while not self._stop.is_set():
            self._status_dirty.clear()
            self.notifier.status(self.status_line())  # sent only when the text changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATUS_REFRESH):
                    await self._status_dirty.wait()
            await asyncio.sleep(0.2)  # a burst of events makes one update, not hundreds

    async def _health(self) -> str | None:
        """None when the journal thread answers; it is where every command and event goes."""
        journal = self._journal
        if journal is None:
            return None  # stopping: systemd stops the watchdog with the unit
        try:
            await journal.run(_noop)
        except Exception as e:  # a dead journal thread must not ping
            return f"the journal does not answer: {e}"
        return None

    def request_reload(self) -> None:
        """SIGHUP: read the configuration again and apply what can change while running."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> Reload[RegisterConfig] | None:
        """Apply the reloadable changes of the configuration file; journal what changed."""
        if not self.ready.is_set() or self._stop.is_set():
            _LOGGER.warning("reload ignored: the register is %s",
                            "stopping" if self._stop.is_set() else "still starting")
            return None
        self.notifier.reloading()
        result = await reload_from(self._load_config, self.config, RELOADABLE)
        if result is None:
            self._config_note = FAILED_NOTE
            self.notifier.ready(self.status_line())
            return None
        self._apply_config(result.config)
        if result.applied or result.needs_restart:
            try:
                await self._append([EventDraft(EventType.DAEMON_RELOADED, utc_timestamp(), data={
                    "boot_id": self.boot_id, "applied": list(result.applied),
                    "needs_restart": list(result.needs_restart)})])
            except JournalError as e:
                _LOGGER.error("reload applied, daemon.reloaded not journaled: %s", e)
        self._config_note = result.note
        self.notifier.ready(self.status_line())
        return result

    def _apply_config(self, config: RegisterConfig) -> None:
        self.config = config
        logging.getLogger().setLevel(config.logging.level)
        self.money = money_policy(config.money)
        self.count_policy = count_policy(config)
        if self._worker is not None:
            self._worker.reconfigure(all_handlers(config), config.commands,
                                     access_policy(config))
        if self._outbox is not None:
            self._outbox.reconfigure(config.delivery)
        if self.devices is not None:
            self.devices.reconfigure(config.devices)

    async def _recover(self, journal: Journal) -> None:
        """Fold the journal; mark commands a crash interrupted as indeterminate."""
        def load() -> LedgerState:
            return fold(LedgerEvent.from_envelope(json.loads(b))
                        for b in journal.file.iter_bodies())

        self.ledger = await journal.run(load)
        for record in await journal.run(journal.file.interrupted_commands):
            now = utc_timestamp()
            job = (await journal.run(journal.file.get_job, record.cmd_id)
                   if record.command in ("print.receipt", "print.raw") else None)
            if job is not None and job.state in ("accepted", "waiting"):
                self._resumable.append((record, job))  # not started: it prints when it can
                continue
            if job is not None:  # it was being sent: part of it may be on paper
                await journal.run(journal.file.put_job, replace(
                    job, state="indeterminate", reason="the daemon stopped while sending it"),
                    [EventDraft("print.job", now, data={
                        "job_id": job.job_id, "state": "indeterminate",
                        "reason": "the daemon stopped while sending it"})])
            refusal = CommandRefused(ErrorCode.INDETERMINATE, *_interrupted(record.command, job))
            result = error_reply(record.cmd_id, record.command, refusal)
            draft = EventDraft(
                EventType.CMD_INDETERMINATE, now,
                self.ledger.open_session.session_id if self.ledger.open_session else None,
                {"command": record.command, "received_at": record.received_at,
                 **refusal.details, "devices": self._device_state()},
                {"cmd_id": record.cmd_id, "requester": record.requester})
            await journal.run(journal.file.finish_command,
                              replace(record, status="indeterminate", updated_at=now,
                                      result=result), [draft])
            _LOGGER.warning("command %s (%s) was interrupted by a restart: indeterminate",
                            record.cmd_id, record.command)

    # -- journal → ledger, outbox, state --------------------------------------------------------

    async def _append(self, drafts: list[EventDraft]) -> None:
        """Journal events that come from no command (devices, life cycle) and fold them."""
        assert self._journal is not None
        sealed = await self._journal.run(self._journal.file.append, drafts)
        self._committed(sealed)

    def _committed(self, sealed: list[SealedEvent], *, folded: bool = False) -> None:
        """Journaled events: fold them into the ledger (unless ``folded``: auto-close sets the
        ledger itself) and hand them to the outbox. Folded from what was journaled, in journal
        order — not replaced by a command's own fold, which would drop a device's event
        journaled between that command's intent and its result."""
        if not folded:
            for event in sealed:
                apply(self.ledger, LedgerEvent.from_envelope(json.loads(event.body)))
        if sealed and self._outbox is not None:
            self._outbox.notify(sealed[-1].seq, ((e.seq, e.body) for e in sealed))
            self._state_changed.set()
            self._status_dirty.set()

    # -- MQTT -----------------------------------------------------------------------------------

    async def _will(self) -> aiomqtt.Will:
        assert self._journal is not None
        try:
            self._conn_seq = await self._journal.run(self._journal.file.next_conn_seq,
                                                     self._conn_seq)
        except JournalError as e:
            # Connect all the same (the POS must hear journal_unavailable): numbered in memory,
            # still above every connection of this boot; the journal catches up later.
            self._conn_seq += 1
            _LOGGER.error("connection counter not journaled, this connection is %s: %s",
                          self._conn_seq, e)
        return aiomqtt.Will(self.topics.status, json.dumps(self._status(online=False)), qos=1,
                            retain=True, properties=will_properties(self.config.broker.will_delay))

    def _status(self, online: bool) -> dict[str, Any]:
        assert self._journal is not None
        return {"online": online, "conn_seq": self._conn_seq, "boot_id": self.boot_id,
                "epoch": self._journal.epoch, "last_seq": self._journal.last_seq,
                "version": __version__, "ts": utc_timestamp()}

    async def _publish_status(self, online: bool) -> None:
        assert self._link is not None
        await self._link.publish(self.topics.status, json.dumps(self._status(online)), qos=1,
                                 retain=True)

    def _device_state(self) -> dict[str, Any]:
        if self.devices is not None:
            return self.devices.snapshot()
        unavailable = {"configured": False, "state": "unavailable"}
        return {"drawer": dict(unavailable), "printer": dict(unavailable), "counters": {}}

    async def _save_job(self, job: PrintJobRecord, drafts: list[EventDraft]) -> None:
        """A print job's new state: it happened at the printer, so it waits for the journal."""
        journal = self._journal
        assert journal is not None
        sealed = await until_written(lambda: journal.run(journal.file.put_job, job, drafts),
                                     f"print job {job.job_id} {job.state}")
        self._committed(sealed)

    def _resume_print_jobs(self) -> None:
        """Receipts accepted before a restart and not yet started print now (if not expired)."""
        assert self.devices is not None and self._worker is not None
        devices = self.devices
        for record, job in self._resumable:
            if devices.jobs is None:
                continue  # the printer was removed from the configuration: stays executing
            devices.jobs.requeue(job)
            self._worker.resume(record, job_result(devices, job.job_id))
            _LOGGER.info("print job %s resumed after the restart", job.job_id)
        self._resumable.clear()

    def state_snapshot(self) -> dict[str, Any]:
        assert self._journal is not None and self._outbox is not None
        session = self.ledger.open_session
        last = self.ledger.last_closed
        return {
            "v": 1, "store": self.config.store, "register": self.config.register_id,
            "epoch": self._journal.epoch, "last_seq": self._journal.last_seq,
            "boot_id": self.boot_id, "ts": utc_timestamp(),
            "session": (None if session is None else blind(session.summary())
                        if self.count_policy.blind else session.summary()),
            "last_closed": None if last is None else {
                "session_id": last.session_id, "number": last.number,
                "closed_at": last.closed.closed_at if last.closed else None,
                "left_in_drawer": last.closed.left_in_drawer if last.closed else {}},
            "devices": self._device_state(),
            "delivery": {"consumers": dict(self._outbox.acked), "pending": self._outbox.pending},
        }

    async def _publish_state(self) -> None:
        assert self._link is not None
        await self._link.publish(self.topics.state, json.dumps(self.state_snapshot()), qos=1,
                                 retain=True)

    async def _publish_state_on_change(self) -> None:
        assert self._link is not None
        # Stops on the stop flag too: Python 3.11's wait_for (inside aiomqtt's publish) can
        # swallow a cancellation that races with the PUBACK.
        while not self._stop.is_set():
            await self._state_changed.wait()
            await self._link.connected.wait()
            if self._stop.is_set():
                return
            self._state_changed.clear()
            try:
                await self._publish_state()
            except (NotConnected, PublishFailed):
                self._state_changed.set()  # published again on the next connection
            # Changes during a burst are folded into one snapshot per interval.
            await asyncio.sleep(self.config.delivery.state_interval)

    async def _on_connected(self, link: MqttLink) -> None:
        assert self._outbox is not None
        self._status_dirty.set()
        try:
            await self._publish_status(online=True)
            await self._publish_state()
        except (NotConnected, PublishFailed) as e:
            _LOGGER.warning("birth messages not published: %s", e)
        await self._outbox.relay(link)

    def _reply_soon(self, reply: dict[str, Any], topic: str, correlation: bytes | None) -> None:
        # Tasks start in creation order and aiomqtt hands the packet to paho before its first
        # await, so an ack still leaves before its result.
        task = asyncio.get_running_loop().create_task(
            self._send_reply(reply, topic, correlation))
        self._reply_tasks.add(task)
        task.add_done_callback(self._reply_tasks.discard)

    async def _send_reply(self, reply: dict[str, Any], topic: str,
                          correlation: bytes | None) -> None:
        if self._link is None:
            return
        try:
            await self._link.publish(topic, json.dumps(reply, ensure_ascii=False), qos=1,
                                     properties=publish_properties(correlation=correlation))
        except (NotConnected, PublishFailed) as e:
            # The command's outcome is journaled; a resend of the cmd_id gets it again.
            _LOGGER.info("reply for %s not delivered: %s", reply.get("cmd_id"), e)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else str(
            message.payload).encode()
        name = self.topics.command_name(topic)
        if name is not None:
            await self._on_command(name, payload, message)
        elif (consumer := self.topics.consumer_of_ack(topic)) is not None:
            self._on_ack(consumer, payload)
        elif topic == self.topics.resync:
            self._on_resync(payload)

    async def _on_command(self, name: str, payload: bytes, message: aiomqtt.Message) -> None:
        assert self._worker is not None
        response_topic, correlation = message_properties(message)
        item = parse_command(self.topics, name, payload, response_topic, correlation,
                             self.config.commands.max_payload_bytes)
        if isinstance(item, Command) and item.name in QUERY_COMMANDS:
            await self._answer_query(item)
        elif isinstance(item, Rejected) and item.cmd_id is None:
            await self._worker.handle(item)  # answered only, nothing journaled
        else:
            self._worker.queue.put_nowait(item)

    async def _answer_query(self, cmd: Command) -> None:
        assert self._journal is not None
        env = cmd.envelope
        if isinstance(cmd.params, CmdStatusParams):
            record = await self._journal.run(self._journal.file.get_command,
                                             cmd.params.of_cmd_id)
            if record is None:
                reply = error_reply(env.cmd_id, cmd.name, CommandRefused(
                    ErrorCode.UNKNOWN_CMD_ID,
                    f"no command {cmd.params.of_cmd_id} has reached this register",
                    {"of_cmd_id": cmd.params.of_cmd_id}))
            else:
                reply = ok_reply(env.cmd_id, cmd.name, {"command": record.as_json()})
        else:
            reply = ok_reply(env.cmd_id, cmd.name, {"state": self.state_snapshot()})
        # Not awaited here, in the message loop: a publish caught by a dropped connection
        # waits for its PUBACK until the timeout (aiomqtt does not fail it), and the loop
        # would not see the drop — nor take any command — for that long.
        self._reply_soon(reply, cmd.reply_to, cmd.correlation)

    def _on_ack(self, consumer: str, payload: bytes) -> None:
        assert self._outbox is not None
        if not payload:
            return  # a cleared retained ack
        try:
            ack = AckMessage.model_validate_json(payload)
        except ValidationError as e:
            _LOGGER.warning("unreadable ack from %s ignored: %s", consumer, e.errors()[:1])
            return
        if self._outbox.on_ack(consumer, ack.epoch, ack.upto_seq):
            self._state_changed.set()

    def _on_resync(self, payload: bytes) -> None:
        assert self._outbox is not None
        try:
            request = ResyncRequest.model_validate_json(payload)
        except ValidationError as e:
            _LOGGER.warning("unreadable resync request ignored: %s", e.errors()[:1])
            return
        _LOGGER.info("resync requested from seq %s", request.from_seq)
        self._outbox.resync(request.from_seq)
        self._state_changed.set()


def _interrupted(command: str | None, job: PrintJobRecord | None) -> tuple[str, dict[str, Any]]:
    """What a person must know of a command a restart interrupted."""
    if command == "drawer.open":
        return ("drawer.open was interrupted by a daemon restart: the drawer may or may not "
                "have been kicked (see the drawer's state). It is never kicked again by "
                "itself; send a new cmd_id if it must open.", {"device": "drawer"})
    if command == "counter.count":
        return ("counter.count was interrupted by a daemon restart: the counting run is lost. "
                "The cash is still in hand: count it again.", {"device": "counter"})
    if command in ("print.receipt", "print.raw"):
        return (f"{command} was interrupted by a daemon restart while it was being sent: part "
                "of it may have printed. It is never printed again by itself; send "
                "print.receipt with reprint_of to print a copy.",
                {"device": "printer", "job_state": job.state if job else None})
    return (f"{command} was interrupted by a daemon restart before its result was journaled. "
            "Session commands are all-or-nothing: the session was not changed. Check the state "
            "and send a new cmd_id if it is still wanted.", {"journal_effect": "none"})


def _noop() -> None:
    """Run on the journal thread by the health check: it answers, or it is stuck."""
