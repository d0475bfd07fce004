"""``kassad store``: the aggregator process — MQTT in, storage, the store's view.

It subscribes to the ``evt``, ``status`` and ``state`` topics of its stores (``evt`` through
``$share/{group}/…`` when several instances share the load), hands events to the ingest in
batches, keeps each register's availability and device alarms, announces itself on
``kassad/v1/{store}/_agg/{id}/status`` (retained, with a Will), and asks for gaps.

Under systemd: READY=1 once storage is open and the store view listens, a STATUS= line,
watchdog pings while the storage answers, SIGHUP reloads :data:`RELOADABLE`, STOPPING=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiomqtt

from ..client import KassadClient
from ..contract.events import utc_timestamp
from ..contract.topics import PREFIX, aggregator_status
from ..mqtt.link import MqttLink, cancel_tasks
from ..reload import FAILED_NOTE, Reload, reload_from
from ..systemd import Notifier, run_watchdog, watchdog_interval
from .cashbook import CashBook
from .config import RELOADABLE, StoreConfig
from .http import HttpServer, create_app
from .ingest import BadEvent, Ingest, parse_event
from .storage.base import EventRow, RegisterRow, Storage
from .storage.factory import open_storage

_LOGGER = logging.getLogger(__name__)
#: How often the cash book's statuses are compared with what the registers recorded (seconds)
RETELL_INTERVAL = 30.0


def device_alarms(state: dict[str, Any]) -> list[str]:
    """The alarms a store manager sees, from a register's retained state."""
    devices = state.get("devices") or {}
    alarms: list[str] = []
    printer = devices.get("printer") or {}
    if printer.get("configured"):
        # Offline: gone from its link, or there and saying it is offline with no reason of
        # its own below (taken offline, waiting for online recovery): it prints nothing.
        own_reason = (printer.get("paper") == "out" or printer.get("cover_open")
                      or printer.get("error"))
        if not printer.get("connected", True) or (
                printer.get("state") == "not_ready" and printer.get("online") is False
                and not own_reason):
            alarms.append("printer_offline")
        if printer.get("paper") == "out":
            alarms.append("paper_out")
        elif printer.get("paper") == "near_end":
            alarms.append("paper_near_end")
        if printer.get("cover_open"):
            alarms.append("cover_open")
        if printer.get("error"):
            alarms.append("printer_error")
    drawer = devices.get("drawer") or {}
    if drawer.get("configured") and drawer.get("state") == "open":
        alarms.append("drawer_open")
    # Its interface gone, or its sensor unreadable (a box that does not answer): nobody knows
    # whether the drawer is open, and a kick may not be heard.
    if drawer.get("configured") and (drawer.get("state") == "unknown"
                                     or drawer.get("connected") is False):
        alarms.append("drawer_offline")
    for name, counter in (devices.get("counters") or {}).items():
        if not counter.get("connected", True):
            alarms.append(f"counter_offline:{name}")
        alarms.extend(f"counter_{fault}:{name}" for fault in counter.get("faults") or ())
    return alarms


class StoreService:
    def __init__(self, config: StoreConfig, storage: Storage | None = None, *,
                 notifier: Notifier | None = None,
                 load_config: Callable[[], StoreConfig] | None = None) -> None:
        self.config = config
        self.storage = storage or open_storage(config.database)
        self.ready = asyncio.Event()
        self.notifier = notifier or Notifier.from_env()
        self._load_config = load_config
        self._reloads: set[asyncio.Task[Reload[StoreConfig] | None]] = set()
        self._config_note = ""
        self.ingest: Ingest | None = None
        self._stop = asyncio.Event()
        self._inbox: asyncio.Queue[EventRow] = asyncio.Queue()
        self._registers: dict[tuple[str, str], RegisterRow] = {}
        self._link: MqttLink | None = None
        self.http: HttpServer | None = None
        self.cashbook = CashBook(self.storage, config.safes_by_store(), self._tell_register,
                                 managers=config.managers)
        self._clients: dict[tuple[str, str], KassadClient] = {}
        self._telling: set[asyncio.Task[None]] = set()
        self._in_flight: set[tuple[str, str]] = set()  # (store, transfer_id) being told
        self.retell_interval = RETELL_INTERVAL

    def stop(self) -> None:
        if not self._stop.is_set():
            self.notifier.stopping("stopping: announcing offline, closing storage")
        self._stop.set()

    def _subscriptions(self) -> list[str]:
        topics = []
        for store in self.config.stores:
            evt = f"{PREFIX}/{store}/+/evt"
            if self.config.shared_group:
                evt = f"$share/{self.config.shared_group}/{evt}"
            topics += [evt, f"{PREFIX}/{store}/+/status", f"{PREFIX}/{store}/+/state"]
        return topics

    async def run(self) -> None:
        self.notifier.status("starting: opening storage")
        await self.storage.open()
        try:
            self.notifier.status("starting: reading stored events")
            self.ingest = Ingest(self.storage, consumer=self.config.consumer,
                                 publish=self._publish, clock=time.monotonic,
                                 reorder_timeout=self.config.reorder_timeout,
                                 on_events=self.cashbook.take_events)
            await self.ingest.start()
            for row in await self.storage.registers():
                self._registers[(row.store, row.register)] = row
            self._link = MqttLink(
                self.config.broker,
                client_id=f"kassad-store-{self.config.aggregator_id}",
                subscriptions=self._subscriptions(), on_message=self._on_message,
                on_connected=self._on_connected, will=self._will,
                session_expiry=self.config.broker.session_expiry,
                name=f"aggregator {self.config.aggregator_id}")
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._link.run(), name="store-mqtt"),
                         group.create_task(self._batches(), name="store-ingest"),
                         group.create_task(self._gap_watch(), name="store-gaps"),
                         group.create_task(self._retell(), name="store-retell")]
                if self.config.http is not None:
                    self.http = HttpServer(create_app(self.storage, self.config.stores,
                                                      cashbook=self.cashbook),
                                           self.config.http.host, self.config.http.port)
                    tasks.append(group.create_task(self.http.run(), name="store-http"))
                    await self.http.started.wait()
                    _LOGGER.info("store view on http://%s:%s/", self.config.http.host,
                                 self.http.port)
                interval = watchdog_interval()
                if interval is not None:
                    tasks.append(group.create_task(
                        run_watchdog(self.notifier, interval, self._health), name="watchdog"))
                self.ready.set()
                self.notifier.ready(self.status_line())
                tasks.append(group.create_task(self._report_status(), name="sd-status"))
                await self._stop.wait()
                with contextlib.suppress(ConnectionError):
                    await self._announce(online=False)
                await cancel_tasks([*tasks, *self._telling])
        finally:
            for client in self._clients.values():
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
            await self.storage.close()

    # -- systemd: status line, health, reload ------------------------------------------------

    def status_line(self) -> str:
        online = sum(1 for row in self._registers.values() if row.online)
        parts = [f"{online} of {len(self._registers)} registers online"]
        if self.ingest is not None:
            parts.append(f"{self.ingest.stored} events stored since start")
        if self._link is not None:
            parts.append("broker connected" if self._link.is_connected else "broker unreachable")
        if self.http is not None:
            parts.append(f"store view on http://{self.config.http.host if self.config.http else ''}"
                         f":{self.http.port}/")
        if self._config_note:
            parts.append(self._config_note)
        return "ready: " + ", ".join(parts)

    async def _report_status(self) -> None:
        while True:
            self.notifier.status(self.status_line())  # sent only when the text changed
            await asyncio.sleep(2.0)

    async def _health(self) -> str | None:
        try:
            await self.storage.heads()
        except Exception as e:  # storage that fails must not ping
            return f"storage does not answer: {e}"
        return None

    def request_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> Reload[StoreConfig] | None:
        """SIGHUP: apply the reloadable changes of the configuration file."""
        if not self.ready.is_set() or self._stop.is_set():
            _LOGGER.warning("reload ignored: the aggregator is not running")
            return None
        self.notifier.reloading()
        result = await reload_from(self._load_config, self.config, RELOADABLE)
        if result is None:
            self._config_note = FAILED_NOTE
            self.notifier.ready(self.status_line())
            return None
        self.config = result.config
        logging.getLogger().setLevel(self.config.logging.level)
        if self.ingest is not None:
            self.ingest.reorder_timeout = self.config.reorder_timeout
        self._config_note = result.note
        self.notifier.ready(self.status_line())
        return result

    # -- MQTT ---------------------------------------------------------------------------------

    def _status_topics(self) -> list[str]:
        return [aggregator_status(store, self.config.aggregator_id)
                for store in self.config.stores]

    async def _will(self) -> aiomqtt.Will:
        # One Will topic per connection: the first store's; the others are cleared on stop.
        return aiomqtt.Will(self._status_topics()[0],
                            json.dumps({"online": False, "id": self.config.aggregator_id}),
                            qos=1, retain=True)

    async def _announce(self, online: bool) -> None:
        assert self._link is not None
        body = json.dumps({"online": online, "id": self.config.aggregator_id,
                           "ts": utc_timestamp()})
        for topic in self._status_topics():
            await self._link.publish(topic, body, qos=1, retain=True)

    async def _publish(self, topic: str, body: dict[str, Any], retain: bool) -> None:
        if self._link is None:
            raise ConnectionError("not connected")
        await self._link.publish(topic, json.dumps(body), qos=1, retain=retain)

    async def _on_connected(self, link: MqttLink) -> None:
        assert self.ingest is not None
        with contextlib.suppress(ConnectionError):
            await self._announce(online=True)
            await self.ingest.ack_all()

    async def _on_message(self, message: aiomqtt.Message) -> None:
        parts = message.topic.value.split("/")
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if len(parts) != 5 or parts[3] == "_agg":
            return
        _, _, store, register, kind = parts
        if kind == "evt":
            try:
                self._inbox.put_nowait(parse_event(store, register, payload))
            except BadEvent as e:
                assert self.ingest is not None
                await self.ingest.alarm(store, register, "bad_event", {"error": str(e)})
        elif kind in ("status", "state") and payload:
            try:
                body = json.loads(payload)
            except ValueError:
                return
            if isinstance(body, dict):
                await self._register_message(store, register, kind, body)

    async def _register_message(self, store: str, register: str, kind: str,
                                body: dict[str, Any]) -> None:
        key = (store, register)
        row = self._registers.get(key) or RegisterRow(store, register, False, None)
        if kind == "status":
            last = row.status
            # A Will delivered late (an older connection's) must not mark a live register
            # offline: compare the connection counter, as Sparkplug does with bdSeq.
            if not body.get("online") and last.get("online") and (
                    int(body.get("conn_seq", 0)) < int(last.get("conn_seq", 0))):
                return
            row = RegisterRow(store, register, bool(body.get("online")), utc_timestamp(),
                              body, row.devices, row.alarms)
        else:
            row = RegisterRow(store, register, row.online, utc_timestamp(), row.status,
                              body.get("devices") or {}, device_alarms(body))
        self._registers[key] = row
        await self.storage.upsert_register(row)

    # -- the cash book tells registers (issue 9) ---------------------------------------------

    async def _tell_register(self, store: str, register: str, params: dict[str, Any], *,
                             retell: bool = False) -> None:
        """Send ``cash.reconciliation`` in the background: KassadClient resends it until the
        register answers (its journal makes a resend harmless)."""
        told = (store, str(params.get("transfer_id")))
        if retell and told in self._in_flight:
            return  # under way: its event has not come back yet
        key = (store, register)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = KassadClient(
                self.config.broker, store=store, register=register,
                requester=f"store-agg-{self.config.aggregator_id}",
                client_id=f"kassad-store-{self.config.aggregator_id}-{store}-{register}")
            await client.__aenter__()

        async def send() -> None:
            try:
                # The employee who reconciled (none for the automatic match, role system).
                by = params.get("by")
                employee = by.get("employee") if isinstance(by, dict) else None
                await client.send("cash.reconciliation", params, employee=employee or None)
            except Exception as e:  # the store's book stands; the register is told again
                _LOGGER.error("%s/%s: cash.reconciliation of %s not done: %s", store, register,
                              params.get("transfer_id"), e)
            finally:
                self._in_flight.discard(told)

        self._in_flight.add(told)

        task = asyncio.get_running_loop().create_task(send(), name="tell-register")
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def _retell(self) -> None:
        """Tell registers again what their own events show they do not know yet."""
        while True:
            await asyncio.sleep(self.retell_interval)
            for store in self.config.stores:
                try:
                    untold = await self.cashbook.untold(store)
                except Exception as e:  # storage down: the watchdog reports it
                    _LOGGER.warning("cash book of %s not compared: %s", store, e)
                    continue
                for register, params in untold:
                    await self._tell_register(store, register, params, retell=True)

    # -- ingest loops -------------------------------------------------------------------------

    async def _batches(self) -> None:
        assert self.ingest is not None
        while True:
            batch = [await self._inbox.get()]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.batch_window):
                    while len(batch) < self.config.batch:
                        batch.append(await self._inbox.get())
            await self.ingest.take(batch)

    async def _gap_watch(self) -> None:
        assert self.ingest is not None
        while True:
            await asyncio.sleep(self.config.reorder_timeout / 2)
            await self.ingest.ask_for_gaps()
