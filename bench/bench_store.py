"""The store aggregator: ingest throughput of ``kassad store`` and the store view's query time,
next to baselines from the same run.

    .venv/bin/python bench/bench_store.py            # full run, about 1-2 minutes on 2 cores
    .venv/bin/python bench/bench_store.py --quick    # smoke run, well under a minute

Measures, all on 127.0.0.1, in a temp dir and throwaway PostgreSQL schemas that are removed
afterwards (also on Ctrl-C or SIGTERM):

1. ingest: 20 registers' real, hash-chained event streams (made beforehand with the register's
   own journal, :class:`JournalFile`: one ``session.opened`` then ``payment.recorded`` events)
   are published at full speed as the registers' outboxes publish them (one aiomqtt client per
   register, QoS 1, ``TCP_NODELAY``, at most 20 publishes awaiting their PUBACK, the body plus
   ``"replayed": false``), to ``kassad store`` running as a subprocess. Timed from the first
   publish until every register's ``ack/store-agg`` covers its last seq. Once on SQLite, once
   on PostgreSQL, and with two aggregator processes sharing the streams on PostgreSQL
   (``shared_group``): with the default ``reorder_timeout`` (2 s), and with 30 s, which shows
   what the pair does without the resyncs the default causes. The publishers answer
   ``ctl/resync`` and resend from the ack after 5 s without progress (doubling up to 60 s),
   as a register does; the report counts every resend. ``--runs`` picks the runs.
2. baseline: the same publishers, same broker, drained by a bare aiomqtt subscriber in its own
   process that stores and checks nothing (it acks each register every 200 messages and at
   its last one, so the end is detected the same way).
3. the store view: a month of 20 registers' sessions (30 days, 1-3 sessions a day, each folded
   from realistic events with the register's ledger) upserted into each backend, then
   ``Storage.sessions(["S1"], month start, month end, sort=…)`` for each sort as the store
   view's HTTP API asks for it (``summary_keys``: the summary keys its list views read), median
   of a few runs, next to the same SQL run with the bare driver (no JSON decoding, no thread
   hop). The views of ``kassad.daemon.store.views`` are timed on top. The raw figures add the
   call with the whole summary (no ``summary_keys``), next to its own SQL on the bare driver.

The broker gets the store broker's queue settings (systemd/mosquitto-store.conf:
``max_queued_messages 100000``, ``max_inflight_messages 20``); with mosquitto's default of 1000 a
slow aggregator would lose messages and the run would measure resends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import os
import random
import secrets
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
from common import (
    DEFAULT_LOG_TYPES,
    HOST,
    STORE,
    Meter,
    Row,
    cancel_on_sigterm,
    child,
    cpu_meter,
    cpu_spent,
    filesystem_of,
    machine,
    mqtt_client,
    print_profile,
    print_table,
    print_tail,
    run_in_temp_dir,
)
from common import Sample as BaseSample
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg import sql

from kassad.daemon.contract.topics import PREFIX, aggregator_status
from kassad.daemon.journal.store import EventDraft, JournalFile
from kassad.daemon.ledger.session import LedgerEvent, LedgerState, Session, apply
from kassad.daemon.register.outbox import with_replayed
from kassad.daemon.store.config import StoreConfig
from kassad.daemon.store.ingest import parse_event, session_row
from kassad.daemon.store.storage.base import SessionRow, SessionSort, Storage
from kassad.daemon.store.storage.factory import open_storage
from kassad.daemon.store.storage.schema import POSTGRES, SQLITE, Dialect, sessions_sql
from kassad.daemon.store.views import LIST_SUMMARY_KEYS
from kassad.simulators.broker import MosquittoBroker

SCRIPT = Path(__file__).resolve()
PG_DSN = (os.environ.get("KASSAD_BENCH_POSTGRES") or os.environ.get("KASSAD_TEST_POSTGRES")
          or "postgresql://postgres@127.0.0.1:5432/postgres")
CONSUMER = "store-agg"
WINDOW = 20  # a register's delivery.inflight_window default
RESEND_AFTER = 5.0  # a register's delivery.resend_after default …
RESEND_AFTER_MAX = 60.0  # … doubled after each resend up to resend_after_max
BARE_ACK_EVERY = 200  # the aggregator's default batch
# The store broker's queue settings (systemd/mosquitto-store.conf).
STORE_BROKER = ("max_queued_bytes 268435456\nmax_inflight_messages 20")
SORTS: tuple[SessionSort, ...] = ("start", "end", "discrepancy")
MONTH_START = datetime(2025, 6, 1, tzinfo=UTC)
MONTH_END = datetime(2025, 7, 1, tzinfo=UTC)


@dataclass
class Counts:
    registers: int
    per_register: int
    view_runs: int
    payments: tuple[int, int]  # payments per session in the month of sessions
    cap_s: float  # no ingest run waits longer than this for its last ack


FULL = Counts(registers=20, per_register=2000, view_runs=15, payments=(20, 80), cap_s=30.0)
QUICK = Counts(registers=20, per_register=200, view_runs=3, payments=(5, 20), cap_s=15.0)


@dataclass(frozen=True)
class IngestRun:
    label: str
    postgres: bool
    instances: int
    reorder_timeout: float | None = None  # None: the aggregator's default (2 s)


RUNS = {
    "sqlite": IngestRun("ingest, SQLite", False, 1),
    "pg": IngestRun("ingest, PostgreSQL", True, 1),
    "pg2": IngestRun("ingest, PostgreSQL, 2 instances", True, 2),
    # The same pair with gaps asked for only after 30 s: what the pair does without resyncs.
    "pg2-rt30": IngestRun("ingest, PostgreSQL, 2 inst., reorder_timeout 30", True, 2, 30.0),
}


@dataclass
class Sample(BaseSample):
    """One ingest run (see common.Sample): events acknowledged, from the first publish."""

    unit = "event"
    expected: int = 0
    published_at: float = 0.0  # the last first-time publish's PUBACK, from the first publish
    resent: int = 0
    failed: int = 0
    silence: float = 0.0  # the longest a register waited for ack progress, all published
    error: str = ""  # a subprocess died mid-run
    db: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.count >= self.expected

    def describe(self) -> str:
        end = "" if self.complete else f" (INCOMPLETE: {self.count} of {self.expected} acked)"
        if self.error:
            end += f" ({self.error})"
        return (f"{self.count} in {self.elapsed:.2f} s = {self.rate:,.0f}/s{end}; all published "
                f"(PUBACK) at {self.published_at:.2f} s; then at most {self.silence:.2f} s without "
                f"ack progress; resent {self.resent}, publish failures {self.failed}")


# -- the registers' streams ------------------------------------------------------------------


@dataclass
class Stream:
    register: str
    epoch: int
    bodies: list[str]  # canonical, as journaled (no "replayed")
    payloads: list[bytes]  # as first published: "replayed": false


def payment_data(rng: random.Random) -> dict[str, Any]:
    """A payment.recorded's data as the register's rules write it (daemon/ledger/rules.py)."""
    roll = rng.random()
    if roll < 0.55:
        amount = rng.randrange(500, 60_000, 50)
        tendered = amount if rng.random() < 0.3 else (amount // 10_000 + 1) * 10_000
        return {"kind": "cash_sale", "reference": None, "payment_type": "cash",
                "tendered": {"amount": tendered, "currency": "SEK"},
                "change": {"amount": tendered - amount, "currency": "SEK"},
                "amount": {"amount": amount, "currency": "SEK"}}
    if roll < 0.97:
        kind, payment_type = "other", rng.choice(["card", "card", "card", "swish", "gift_card"])
    else:
        kind, payment_type = "cash_refund", "cash"
    return {"kind": kind, "reference": f"POS-{rng.randrange(10**6):06d}",
            "payment_type": payment_type,
            "amount": {"amount": rng.randrange(500, 20_000, 50), "currency": "SEK"}}


def make_streams(folder: Path, counts: Counts) -> list[Stream]:
    """One journal per simulated register, filled through JournalFile.append (real seq, epoch,
    hash chain), then read back as the outbox reads it."""
    streams: list[Stream] = []
    base = datetime(2025, 6, 2, 7, 0, tzinfo=UTC)
    for r in range(1, counts.registers + 1):
        register = f"R{r}"
        rng = random.Random(r)
        journal = JournalFile(folder / f"{register}.db", STORE, register, f"boot-{register}")
        try:
            session_id = str(uuid.uuid4())
            employee = {"employee": f"E{r:02d}"}

            def draft(n: int, kind: str, data: dict[str, Any], session_id: str = session_id,
                      employee: dict[str, Any] = employee, register: str = register,
                      ) -> EventDraft:
                ts = (base + timedelta(seconds=3 * n)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                return EventDraft(kind, ts, session_id, data,
                                  {"cmd_id": str(uuid.uuid4()), "requester": f"pos-{register}"},
                                  employee)

            drafts = [draft(0, "session.opened", {
                "number": 1, "automatic": False, "starting_float": {"SEK": 200_000},
                "expected_start": None, "note": None})]
            drafts += [draft(n, "payment.recorded", payment_data(rng))
                       for n in range(1, counts.per_register)]
            for i in range(0, len(drafts), 500):
                journal.append(drafts[i:i + 500])
            bodies = [body for _, body in journal.read_events(1, counts.per_register)]
            streams.append(Stream(register, journal.epoch, bodies,
                                  [with_replayed(b, False).encode() for b in bodies]))
        finally:
            journal.close()
    return streams


# -- publishers and the watcher --------------------------------------------------------------


class Publisher:
    """One register's outbox, reduced: publish the stream with a window of ``WINDOW`` unacked
    PUBACKs, go back on ``ctl/resync``, resend from the ack after ``RESEND_AFTER`` without
    progress, doubling that up to ``RESEND_AFTER_MAX`` (as daemon/register/outbox.py does)."""

    def __init__(self, stream: Stream, client: aiomqtt.Client) -> None:
        self.stream = stream
        self.client = client
        self.topic = f"{PREFIX}/{STORE}/{stream.register}/evt"
        self.reset()

    def reset(self) -> None:
        self.acked = 0
        self.progress_at = time.perf_counter()
        # The longest time without ack progress once all was published (a register resends
        # after RESEND_AFTER of it).
        self.silence = 0.0
        self.done_at: float | None = None
        self.published_at: float | None = None
        self.resent = 0
        self.failed = 0
        self._sent_upto = 0
        self._rewind: int | None = None
        self._wake = asyncio.Event()

    @property
    def last(self) -> int:
        return len(self.stream.payloads)

    def on_ack(self, upto_seq: int) -> None:
        if upto_seq > self.acked:
            now = time.perf_counter()
            if self.published_at is not None:  # what a register's resend timer measures
                self.silence = max(self.silence, now - max(self.progress_at, self.published_at))
            self.acked, self.progress_at = upto_seq, now
            if upto_seq >= self.last and self.done_at is None:
                self.done_at = time.perf_counter()
            self._wake.set()

    def on_resync(self, from_seq: int) -> None:
        self._rewind = max(1, from_seq)
        self._wake.set()

    async def run(self) -> None:
        window = asyncio.Semaphore(WINDOW)
        cursor = 1
        resend_after = RESEND_AFTER
        async with asyncio.TaskGroup() as group:
            while self.acked < self.last:
                if self._rewind is not None:
                    cursor, self._rewind = min(cursor, self._rewind), None
                if cursor <= self.last:
                    await window.acquire()
                    group.create_task(self._publish(cursor, window))
                    cursor += 1
                    continue
                mark = self.acked
                try:
                    async with asyncio.timeout(resend_after):
                        while self.acked == mark and self._rewind is None:
                            self._wake.clear()
                            await self._wake.wait()
                    resend_after = RESEND_AFTER
                except TimeoutError:
                    cursor = self.acked + 1
                    resend_after = min(resend_after * 2, RESEND_AFTER_MAX)

    async def _publish(self, seq: int, window: asyncio.Semaphore) -> None:
        try:
            if seq <= self._sent_upto:
                self.resent += 1
                payload = with_replayed(self.stream.bodies[seq - 1], True).encode()
            else:
                self._sent_upto = seq
                payload = self.stream.payloads[seq - 1]
            await self.client.publish(self.topic, payload, qos=1, timeout=10)
            if seq == self.last and self.published_at is None:
                self.published_at = time.perf_counter()
        except aiomqtt.MqttError:
            self.failed += 1  # resent after RESEND_AFTER without ack progress
        finally:
            window.release()


class Watcher:
    """One client that hears the acks, the resync requests and the aggregators' status."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.publishers: dict[str, Publisher] = {}
        self.consumer = CONSUMER
        self.online: dict[str, asyncio.Event] = {}

    async def subscribe(self) -> None:
        for topic in (f"{PREFIX}/{STORE}/+/ack/+", f"{PREFIX}/{STORE}/+/ctl/resync",
                      f"{PREFIX}/{STORE}/_agg/+/status"):
            await self.client.subscribe(topic, qos=1)

    def aggregator(self, agg_id: str) -> asyncio.Event:
        return self.online.setdefault(agg_id, asyncio.Event())

    async def listen(self) -> None:
        async for message in self.client.messages:
            parts = message.topic.value.split("/")
            payload = message.payload
            if not isinstance(payload, bytes) or not payload:
                continue
            body = json.loads(payload)
            if parts[3] == "_agg":
                if body.get("online"):
                    self.aggregator(parts[4]).set()
                continue
            publisher = self.publishers.get(parts[3])
            if publisher is None:
                continue
            if parts[4] == "ack" and parts[5] == self.consumer and not message.retain:
                if body.get("epoch", publisher.stream.epoch) == publisher.stream.epoch:
                    publisher.on_ack(int(body["upto_seq"]))
            elif parts[4] == "ctl":
                publisher.on_resync(int(body["from_seq"]))


async def drive(watcher: Watcher, publishers: list[Publisher], consumer: str, cap_s: float,
                procs: list[asyncio.subprocess.Process], meter: Meter) -> Sample:
    """Publish every stream at once; until every register is acked (or ``cap_s``, or a
    subprocess died)."""
    watcher.consumer = consumer
    for p in publishers:
        p.reset()
    before = meter()
    start = time.perf_counter()
    for p in publishers:
        p.progress_at = start
    task = asyncio.gather(*(p.run() for p in publishers))
    error = ""
    try:
        deadline = start + cap_s
        while not task.done() and time.perf_counter() < deadline:
            await asyncio.wait([task], timeout=0.25)
            dead = [p for p in procs if p.returncode is not None]
            if dead:
                error = (f"subprocess {dead[0].pid} exited with {dead[0].returncode} at "
                         f"{time.perf_counter() - start:.1f} s")
                break
        if task.done():
            task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    now = time.perf_counter()
    after = meter()
    done = [p.done_at for p in publishers if p.done_at is not None]
    end = max(done) if len(done) == len(publishers) else now
    published = [p.published_at for p in publishers if p.published_at is not None]
    return Sample(count=sum(min(p.acked, p.last) for p in publishers), elapsed=end - start,
                  cpu=fold_postgres(cpu_spent(before, after)),
                  expected=sum(p.last for p in publishers),
                  published_at=(max(published) - start) if published else float("nan"),
                  resent=sum(p.resent for p in publishers),
                  failed=sum(p.failed for p in publishers),
                  silence=max(p.silence for p in publishers), error=error)


# -- CPU of the processes --------------------------------------------------------------------


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process (postmaster, backends, background workers)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def process_meter(broker: MosquittoBroker, aggregators: dict[str, int], postgres: bool,
                  **others: int) -> Meter:
    """CPU of this process (publishers, watcher), the broker, each aggregator (its event loop
    and its other threads apart: SQLite's), other subprocesses and, if asked, all of
    PostgreSQL's processes."""
    base = cpu_meter(bench=os.getpid(), broker=broker.pid, **others)
    each = {name: cpu_meter(daemon=pid) for name, pid in aggregators.items()}
    pg = cpu_meter(**{f"pg:{pid}": pid for pid in postgres_pids()}) if postgres else None

    def read() -> dict[str, float]:
        out = base()
        for name, meter in each.items():
            parts = meter()
            if postgres:  # no storage thread: psycopg runs in the event loop
                out[name] = sum(parts.values())
            else:
                out[f"{name} loop"] = parts["daemon loop"]
                out[f"{name} threads"] = parts["daemon journal+other"]
        if pg is not None:
            out.update(pg())
        return out

    return read


def fold_postgres(spent: dict[str, float]) -> dict[str, float]:
    """The per-process PostgreSQL figures summed into one; a process that exited meanwhile
    reads as 0 and would subtract, so only growth counts."""
    out = {k: v for k, v in spent.items() if not k.startswith("pg:")}
    pg = [v for k, v in spent.items() if k.startswith("pg:")]
    if pg:
        out["postgres"] = sum(max(0.0, v) for v in pg)
    return out


# -- the bare subscriber (baseline, own process) ---------------------------------------------


async def bare_subscriber(port: int, per_register: int) -> None:
    counts: dict[str, int] = {}
    async with mqtt_client(port, "bench-bare") as client:
        await client.subscribe(f"{PREFIX}/{STORE}/+/evt", qos=1)
        print("ready", flush=True)
        async for message in client.messages:
            register = message.topic.value.split("/")[3]
            n = counts[register] = counts.get(register, 0) + 1
            if n % BARE_ACK_EVERY == 0 or n == per_register:
                await client.publish(f"{PREFIX}/{STORE}/{register}/ack/bare",
                                     json.dumps({"upto_seq": n}), qos=1)




# -- the aggregator runs ---------------------------------------------------------------------


def aggregator_config(path: Path, port: int, agg_id: str, database: str,
                      shared_group: str | None, reorder_timeout: float | None) -> Path:
    """The TOML of one aggregator: the defaults but for the ids, database and broker."""
    lines = [f'stores = ["{STORE}"]', f'consumer = "{CONSUMER}"', f'aggregator_id = "{agg_id}"',
             f"database = {json.dumps(database)}"]
    if shared_group:
        lines.append(f'shared_group = "{shared_group}"')
    if reorder_timeout is not None:
        lines.append(f"reorder_timeout = {reorder_timeout}")
    lines += ["", "[broker]", f'host = "{HOST}"', f"port = {port}"]
    if "http" in StoreConfig.model_fields:  # the store view (if this kassad has it): any port
        lines += ["", "[http]", f'host = "{HOST}"', "port = 0"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def forget(port: int, agg_ids: list[str], registers: list[str]) -> None:
    """What an aggregator run leaves in the broker, so the next run starts alike: its
    persistent session (it would queue every later event), its retained status, the retained
    acks."""
    for agg_id in agg_ids:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        async with aiomqtt.Client(HOST, port, identifier=f"kassad-store-{agg_id}",
                                  protocol=aiomqtt.ProtocolVersion.V5, clean_start=True,
                                  properties=props):
            pass
    async with mqtt_client(port, "bench-forget") as client:
        for agg_id in agg_ids:
            await client.publish(aggregator_status(STORE, agg_id), b"", qos=1, retain=True)
        for register in registers:
            await client.publish(f"{PREFIX}/{STORE}/{register}/ack/{CONSUMER}", b"", qos=1,
                                 retain=True)


def stored_summary(database: str) -> str:
    """What the store database holds after a run (a check that nothing was lost or doubled)."""
    query = ("SELECT (SELECT count(*) FROM events), (SELECT count(DISTINCT register) FROM "
             "events), (SELECT count(*) FROM sessions), (SELECT count(*) FROM alarms)")
    if database.startswith("sqlite:"):
        db = sqlite3.connect(f"file:{database.removeprefix('sqlite://')}?mode=ro", uri=True)
        try:
            row = db.execute(query).fetchone()
        finally:
            db.close()
    else:
        dsn, _, schema = database.partition("?schema=")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            row = conn.execute(query).fetchone()
    assert row is not None
    return f"{row[0]} events of {row[1]} registers, {row[2]} sessions, {row[3]} alarms"


async def ingest_run(label: str, broker: MosquittoBroker, work: Path, watcher: Watcher,
                     publishers: list[Publisher], database: str, instances: int, cap_s: float,
                     profile: Path | None = None, reorder_timeout: float | None = None,
                     ) -> Sample:
    """``instances`` aggregators on ``database`` (sharing the streams if more than one)."""
    ids = [f"{label}-{n}" for n in range(1, instances + 1)]
    group = "bench" if instances > 1 else None
    logs = [work / f"{agg_id}.log" for agg_id in ids]
    try:
        async with contextlib.AsyncExitStack() as stack:
            procs: dict[str, asyncio.subprocess.Process] = {}
            for agg_id, log in zip(ids, logs, strict=True):
                config = aggregator_config(work / f"{agg_id}.toml", broker.port, agg_id,
                                           database, group, reorder_timeout)
                prefix = [sys.executable]
                if profile is not None:
                    prefix += ["-m", "cProfile", "-o", str(profile)]
                argv = [*prefix, "-m", "kassad.daemon", "--log-level", "INFO", "store",
                        "--config", str(config)]
                procs[agg_id] = await stack.enter_async_context(child(argv, log))
            for agg_id in ids:
                async with asyncio.timeout(30):
                    await watcher.aggregator(agg_id).wait()
            names = {("agg" if instances == 1 else f"agg{n}"): proc.pid
                     for n, proc in enumerate(procs.values(), 1)}
            meter = process_meter(broker, names, postgres=not database.startswith("sqlite:"))
            sample = await drive(watcher, publishers, CONSUMER, cap_s, list(procs.values()),
                                 meter)
            for agg_id, proc in procs.items():
                if proc.returncode is not None:
                    log = work / f"{agg_id}.log"
                    last = [line for line in log.read_text(errors="replace").splitlines()
                            if "Error" in line][-1:]
                    sample.error += f"; {agg_id}: {last[0].strip() if last else '?'}"
    except Exception:
        for log in logs:
            if log.exists():
                print_tail(log)
        raise
    finally:
        await forget(broker.port, ids, [p.stream.register for p in publishers])
    sample.db = stored_summary(database)
    return sample


async def bare_run(broker: MosquittoBroker, work: Path, watcher: Watcher,
                   publishers: list[Publisher], per_register: int, cap_s: float) -> Sample:
    argv = [sys.executable, str(SCRIPT), "--bare-subscriber", str(broker.port),
            str(per_register)]
    async with child(argv, work / "bare.log", ready_line=b"ready") as proc:
        meter = process_meter(broker, {}, postgres=False, bare=proc.pid)
        return await drive(watcher, publishers, "bare", cap_s, [proc], meter)


# -- the store view ---------------------------------------------------------------------------


def month_sessions(counts: Counts) -> tuple[list[SessionRow], int]:
    """A month of sessions of every register, folded from realistic events with the ledger:
    cash sales with change, card and swish payments, refunds, removals, drawer openings,
    closes with small discrepancies now and then; each register's last session still open.
    Returns the rows and the number of events folded."""
    rows: list[SessionRow] = []
    events = 0
    for r in range(1, counts.registers + 1):
        register = f"R{r}"
        rng = random.Random(1000 + r)
        state = LedgerState()
        left: dict[str, int] | None = None

        def feed(kind: str, session_id: str, ts: datetime, data: dict[str, Any],
                 state: LedgerState = state, rng: random.Random = rng) -> None:
            nonlocal events
            events += 1
            apply(state, LedgerEvent(kind, session_id, ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                                     f"E{rng.randrange(1, 9)}", data))

        for day in range(30):
            per_day = rng.randint(1, 3)
            length = timedelta(hours=14) / per_day
            for k in range(per_day):
                opened = MONTH_START + timedelta(days=day, hours=7) + k * length
                sid = str(uuid.UUID(int=rng.getrandbits(128)))
                start_float = dict(left) if left and rng.random() < 0.85 else {"SEK": 200_000}
                feed("session.opened", sid, opened, {
                    "number": state.sessions_opened + 1, "automatic": False,
                    "starting_float": start_float, "expected_start": left, "note": None})
                n = rng.randint(*counts.payments)
                step = (length - timedelta(minutes=10)) / (n + 2)
                for i in range(n):
                    at = opened + (i + 1) * step
                    data = payment_data(rng)
                    feed("payment.recorded", sid, at, data)
                    if data["payment_type"] == "cash":
                        feed("drawer.opened", sid, at, {"cause": "sale"})
                session = state.open_session
                assert session is not None
                if rng.random() < 0.1:
                    feed("session.adjusted", sid, opened + length / 2, {
                        "direction": "remove", "amount": {"amount": 100_000, "currency": "SEK"},
                        "note": "to the safe"})
                last = day == 29 and k == per_day - 1
                if last:  # still open: the view shows it as ending last
                    rows.append(session_row(STORE, register, session))
                    continue
                expected = session.expected_cash().get("SEK", 0)
                off = 0 if rng.random() < 0.8 else rng.choice([-5000, -1000, -500, 100, 2000])
                counted = max(0, expected + off)
                keep = min(counted, 200_000)
                feed("session.closed", sid, opened + length - timedelta(minutes=5), {
                    "counted": {"SEK": counted}, "left_in_drawer": {"SEK": keep}, "note": None})
                closed: Session | None = state.last_closed
                assert closed is not None
                rows.append(session_row(STORE, register, closed))
                left = {"SEK": keep}
    return rows, events


@dataclass
class ViewTimes:
    backend: str
    filled: int = 0
    fill_s: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    storage_ms: dict[str, float] = field(default_factory=dict)  # as the HTTP API asks
    raw_ms: dict[str, float] = field(default_factory=dict)
    whole_ms: float = 0.0  # sort=start with the whole summary (no summary_keys)
    whole_raw_ms: float = 0.0
    views_ms: dict[str, float] = field(default_factory=dict)  # query + view function
    views_alone_ms: dict[str, float] = field(default_factory=dict)
    views_note: str = ""


async def median_ms(fn: Callable[[], Any], runs: int) -> float:
    """Median wall time of ``fn()`` (awaited if it gives an awaitable), after one warm-up run
    (statement caches, the OS page cache)."""
    async def once() -> float:
        t0 = time.perf_counter()
        result = fn()
        if inspect.isawaitable(result):
            await result
        return time.perf_counter() - t0

    await once()
    return statistics.median([await once() for _ in range(runs)]) * 1000


# (label, view function, reordering function or None), as daemon/store/http.py calls them.
VIEWS = (("discrepancy summary", "discrepancy_summary", None),
         ("cash summary", "cash_summary", None),
         ("session list, sort=start", "session_list", None),
         ("session list, sort=discrepancy", "session_list", "order_by_discrepancy"))


async def time_views(storage: Storage, runs: int, times: ViewTimes) -> None:
    """The store view functions of kassad.daemon.store.views (if that module exists), each on
    top of the query that feeds it: ``sessions(sort="start")``, reordered in Python for the
    discrepancy sort, as the HTTP API does; and the view function alone."""
    try:
        views = importlib.import_module("kassad.daemon.store.views")
    except ModuleNotFoundError:
        times.views_note = "kassad.daemon.store.views does not exist (yet): not timed"
        return
    missing: list[str] = []
    for label, name, reorder in VIEWS:
        view = getattr(views, name, None)
        order = getattr(views, reorder, None) if reorder else None
        if view is None or (reorder and order is None):
            missing.append(label)
            continue

        async def query() -> list[SessionRow]:
            return await storage.sessions([STORE], MONTH_START, MONTH_END, "start",
                                          summary_keys=LIST_SUMMARY_KEYS)

        def shape(rows: list[SessionRow], view: Any = view, order: Any = order) -> Any:
            return view(order(rows, False) if order else rows)

        async def both(query: Any = query, shape: Any = shape) -> Any:
            return shape(await query())

        try:
            rows = await query()
            times.views_ms[label] = await median_ms(both, runs)
            times.views_alone_ms[label] = await median_ms(
                lambda shape=shape, rows=rows: shape(rows), runs)
        except Exception as e:  # the module is young: say what did not fit, go on
            missing.append(f"{label} ({type(e).__name__}: {e})")
    if missing:
        times.views_note = f"views not timed: {', '.join(missing)}"


async def view_bench(backend: str, database: str, rows: list[SessionRow], runs: int,
                     raw: Callable[[str, list[Any]], Any], dialect: Dialect) -> ViewTimes:
    times = ViewTimes(backend)
    storage = open_storage(database)
    await storage.open()
    try:
        t0 = time.perf_counter()
        for row in rows:
            await storage.upsert_session(row)
        times.fill_s, times.filled = time.perf_counter() - t0, len(rows)
        for sort in SORTS:
            got = await storage.sessions([STORE], MONTH_START, MONTH_END, sort=sort,
                                         summary_keys=LIST_SUMMARY_KEYS)
            times.rows[sort] = len(got)
            times.storage_ms[sort] = await median_ms(
                lambda sort=sort: storage.sessions([STORE], MONTH_START, MONTH_END, sort=sort,
                                                   summary_keys=LIST_SUMMARY_KEYS),
                runs)
            query, args = sessions_sql(dialect, [STORE], MONTH_START, MONTH_END, sort, False,
                                       10_000, LIST_SUMMARY_KEYS)

            times.raw_ms[sort] = await median_ms(
                lambda query=query, args=args: raw(query, args), runs)
        times.whole_ms = await median_ms(
            lambda: storage.sessions([STORE], MONTH_START, MONTH_END, sort="start"), runs)
        query, args = sessions_sql(dialect, [STORE], MONTH_START, MONTH_END, "start", False,
                                   10_000)
        times.whole_raw_ms = await median_ms(lambda: raw(query, args), runs)
        await time_views(storage, runs, times)
    finally:
        await storage.close()
    return times


async def views_sqlite(work: Path, rows: list[SessionRow], runs: int) -> ViewTimes:
    path = work / "view.db"
    db: list[sqlite3.Connection] = []  # opened once the storage has made the file

    def raw(query: str, args: list[Any]) -> Any:
        if not db:
            db.append(sqlite3.connect(f"file:{path}?mode=ro", uri=True))
        return db[0].execute(query, args).fetchall()

    try:
        return await view_bench("SQLite", f"sqlite://{path}", rows, runs, raw, SQLITE)
    finally:
        for conn in db:
            conn.close()


async def views_postgres(schema: str, rows: list[SessionRow], runs: int) -> ViewTimes:
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
        # The schema need not exist yet: the storage makes it before the first bare query.
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))

        def raw(query: str, args: list[Any]) -> Any:
            return conn.execute(query, args).fetchall()

        return await view_bench("PostgreSQL", f"{PG_DSN}?schema={schema}", rows, runs, raw,
                                POSTGRES)


# -- PostgreSQL schemas -----------------------------------------------------------------------


class Schemas:
    """Throwaway schemas (the storage creates them), dropped at the end whatever happens."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def new(self, what: str) -> str:
        name = f"kassad_bench_{what}_{secrets.token_hex(4)}"
        self.made.append(name)
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(name)))
        if name in self.made:
            self.made.remove(name)

    def drop_all(self) -> None:
        for name in list(self.made):
            try:
                self.drop(name)
            except psycopg.Error as e:
                print(f"could not drop schema {name}: {e}", file=sys.stderr)


def postgres_reachable() -> str | None:
    """None if PostgreSQL answers at PG_DSN, else why not."""
    try:
        with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        return str(e).strip()
    return None


def postgres_version() -> str:
    with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    assert row and sync and fsync
    return f"PostgreSQL {row[0]} (synchronous_commit {sync[0]}, fsync {fsync[0]})"


# -- CPU floor of the per-event work ----------------------------------------------------------


def per_event_floor(streams: list[Stream]) -> dict[str, float]:
    """Microseconds per event, in this process, of what the aggregator does in Python with
    each event besides storage: parse_event (JSON, the hash, the canonical body) and the fold
    (JSON again, the ledger)."""
    payloads = [(s.register, p) for s in streams for p in s.payloads[:2000]]
    t0 = time.perf_counter()
    rows = [parse_event(STORE, register, p) for register, p in payloads]
    parse = (time.perf_counter() - t0) / len(payloads)
    t0 = time.perf_counter()
    states: dict[str, LedgerState] = {}
    for row in rows:
        apply(states.setdefault(row.register, LedgerState()),
              LedgerEvent.from_envelope(json.loads(row.body)))
    fold = (time.perf_counter() - t0) / len(rows)
    return {"parse_event": parse * 1e6, "fold": fold * 1e6}


# -- report -----------------------------------------------------------------------------------


def report(results: dict[str, Any], counts: Counts, work: Path, quick: bool) -> None:
    bare: list[Sample] = results["bare"]
    base = max(bare, key=lambda s: s.rate)
    ingest: dict[str, Sample] = results["ingest"]
    views: list[ViewTimes] = results["views"]
    total = counts.registers * counts.per_register
    rows: list[Row] = []
    for key, sample in ingest.items():
        mark = " (died)" if sample.error else "" if sample.complete else " (!)"
        rows.append((f"{RUNS[key].label} (events/s)", f"{sample.rate:,.0f}/s{mark}",
                     f"bare subscriber {base.rate:,.0f} msg/s", sample.rate / base.rate))
    for v in views:
        for sort in SORTS:
            rows.append((f"month view {v.backend}, sort={sort} ({v.rows[sort]} rows)",
                         f"{v.storage_ms[sort]:.1f} ms",
                         f"same SQL, bare driver {v.raw_ms[sort]:.1f} ms",
                         v.storage_ms[sort] / v.raw_ms[sort]))
        for name, ms in v.views_ms.items():
            rows.append((f"{name} view {v.backend}", f"{ms:.1f} ms",
                         f"its query alone {v.storage_ms['start']:.1f} ms",
                         ms / v.storage_ms["start"]))
    print()
    note = " (--quick: counts cut, not representative)" if quick else ""
    print(f"kassad store aggregator benchmark{note}")
    print(machine(with_cpu_model=True))
    print(f"temp dir {work}: {filesystem_of(work)}; {results['postgres']}")
    print(f"{counts.registers} registers x {counts.per_register} events = {total} events "
          f"({results['body_bytes']:.0f} bytes each on the wire); publishers: one aiomqtt "
          f"client per register, QoS 1, window {WINDOW}; aggregator: `kassad store` "
          "subprocess(es), default batch 200 / 50 ms")
    print()
    print_table(rows, (58, 13, 42), 6)
    print()
    print("ratio = value / baseline. Ingest: from the first publish until every register's "
          "ack/store-agg covers its")
    print("last seq; baseline: the same publishers drained by a bare subscriber process (the "
          "better of two runs).")
    print("Month view: Storage.sessions(['S1'], June, sort, summary_keys=the list views' keys) "
          "returning every session,")
    print("as the store view's HTTP API calls it; baseline: the same SQL")
    print(f"through the bare driver (sqlite3 / psycopg, no JSON decoding). Median of "
          f"{counts.view_runs} runs after one warm-up.")
    print()
    print("raw figures:")
    print(f"  events made with JournalFile: {total} in {results['gen_s']:.1f} s")
    for n, sample in enumerate(bare, 1):
        print(f"  bare subscriber, run {n}: {sample.describe()}")
    for key, sample in ingest.items():
        print(f"  {RUNS[key].label}: {sample.describe()}")
        print(f"    stored: {sample.db}")
    floor = results["floor"]
    print(f"  per-event Python work of the aggregator, one core, in this process: parse_event "
          f"{floor['parse_event']:.0f} us, fold {floor['fold']:.0f} us "
          f"(= {1e6 / (floor['parse_event'] + floor['fold']):,.0f} events/s at most)")
    for v in views:
        print(f"  {v.backend}: {v.filled} sessions upserted one by one in {v.fill_s:.2f} s "
              f"({v.filled / v.fill_s:,.0f}/s, {results['month_events']} events folded "
              "with the ledger to make them)")
        print(f"    sessions() with the whole summary (no summary_keys), sort=start: "
              f"{v.whole_ms:.1f} ms; its SQL through the bare driver {v.whole_raw_ms:.1f} ms")
        if v.views_alone_ms:
            print("    view functions alone (no query): " + ", ".join(
                f"{name} {ms:.1f} ms" for name, ms in v.views_alone_ms.items()))
        if v.views_note:
            print(f"    {v.views_note}")
    print("where the time goes (CPU per event, from /proc; 'agg loop' is the aggregator's event "
          "loop, 'agg threads' its")
    print(f"other threads (SQLite's); this machine has {os.cpu_count()} cores for everything):")
    for n, sample in enumerate(bare, 1):
        print(f"  {'bare ' + str(n):<10} {sample.cpu_per_op()}")
    for key, sample in ingest.items():
        print(f"  {key:<10} {sample.cpu_per_op()}")


# -- main -------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, counts: Counts, work: Path, streams: list[Stream],
                schemas: Schemas, pg_error: str | None) -> dict[str, Any]:
    cancel_on_sigterm()
    results: dict[str, Any] = {"bare": [], "ingest": {}, "views": []}
    extra = f"{DEFAULT_LOG_TYPES}\n{STORE_BROKER}"
    with MosquittoBroker(work / "broker", max_queued_messages=100_000,
                         extra_config=extra) as broker:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(mqtt_client(broker.port,
                                                                   f"bench-{s.register}"))
                       for s in streams]
            publishers = [Publisher(s, c) for s, c in zip(streams, clients, strict=True)]
            watcher = Watcher(await stack.enter_async_context(mqtt_client(broker.port,
                                                                          "bench-watcher")))
            watcher.publishers = {p.stream.register: p for p in publishers}
            await watcher.subscribe()
            listener = asyncio.create_task(watcher.listen())
            try:
                print(f"2: bare subscriber through mosquitto on {HOST}:{broker.port} …",
                      flush=True)
                results["bare"].append(await bare_run(broker, work, watcher, publishers,
                                                      counts.per_register, counts.cap_s))
                for key in args.runs:
                    run = RUNS[key]
                    if run.postgres and pg_error is not None:
                        continue
                    print(f"1: {run.label} …", flush=True)
                    schema = schemas.new(key.replace("-", "_")) if run.postgres else ""
                    database = (f"{PG_DSN}?schema={schema}" if run.postgres
                                else f"sqlite://{work / f'{key}.db'}")
                    try:
                        results["ingest"][key] = await ingest_run(
                            key, broker, work, watcher, publishers, database, run.instances,
                            counts.cap_s, args.profile_aggregator if key == "sqlite" else None,
                            run.reorder_timeout)
                    finally:
                        if run.postgres:
                            schemas.drop(schema)
                print("2: bare subscriber again …", flush=True)
                results["bare"].append(await bare_run(broker, work, watcher, publishers,
                                                      counts.per_register, counts.cap_s))
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
    print("3: the store view of a month …", flush=True)
    rows, results["month_events"] = month_sessions(counts)
    results["views"].append(await views_sqlite(work, rows, counts.view_runs))
    if pg_error is None:
        schema = schemas.new("view")
        try:
            results["views"].append(await views_postgres(schema, rows, counts.view_runs))
        finally:
            schemas.drop(schema)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="cut counts for a smoke run")
    parser.add_argument("--per-register", type=int, default=None,
                        help="events per register (default 2000, --quick 200)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="make the temp dir here (default: the system temp dir); the "
                             "SQLite store database is in it")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--runs", default=",".join(RUNS), type=lambda v: v.split(","),
                        help=f"the ingest runs, comma separated (default {','.join(RUNS)})")
    parser.add_argument("--profile-aggregator", type=Path, default=None, metavar="FILE",
                        help="run the SQLite aggregator under cProfile (its event loop only); "
                             "that run's figures are not representative")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--bare-subscriber", nargs=2, type=int, default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.bare_subscriber is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(bare_subscriber(*args.bare_subscriber))
        return 0

    unknown = set(args.runs) - set(RUNS)
    if unknown:
        parser.error(f"--runs: unknown {', '.join(sorted(unknown))}; known: {', '.join(RUNS)}")
    counts = QUICK if args.quick else FULL
    if args.per_register:
        counts.per_register = args.per_register
    if args.profile_aggregator is not None:
        args.profile_aggregator = args.profile_aggregator.resolve()
    pg_error = "--no-postgres" if args.no_postgres else postgres_reachable()
    if pg_error is not None and not args.no_postgres:
        print(f"PostgreSQL at {PG_DSN} unreachable, SQLite only: {pg_error}", file=sys.stderr)
    schemas = Schemas()

    def run(work: Path) -> None:
        try:
            print(f"making {counts.registers} x {counts.per_register} events with JournalFile …",
                  flush=True)
            t0 = time.perf_counter()
            streams = make_streams(work / "journals", counts)
            gen_s = time.perf_counter() - t0
            results = asyncio.run(bench(args, counts, work, streams, schemas, pg_error))
        finally:
            schemas.drop_all()
        results["gen_s"] = gen_s
        results["floor"] = per_event_floor(streams)
        results["body_bytes"] = statistics.mean(len(p) for s in streams for p in s.payloads)
        results["postgres"] = (postgres_version() if pg_error is None
                               else f"no PostgreSQL: {pg_error}")
        report(results, counts, work, args.quick)
        if args.profile_aggregator is not None:
            print_profile(args.profile_aggregator)

    return run_in_temp_dir("kassad-bench-store-", args.dir, args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
