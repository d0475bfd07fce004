"""The register daemon's own costs, next to baselines of the same run: start-up to READY,
memory (RSS), CPU per 1000 events, and a backlog of events drained after a broker outage.

    .venv/bin/python bench/bench_daemon.py            # full run, about 4-5 minutes on 2 cores
    .venv/bin/python bench/bench_daemon.py --quick    # smoke run, about 30 s

All on 127.0.0.1, in a temp dir that is removed afterwards (also on Ctrl-C or SIGTERM). The
daemon is ``kassad run`` as a subprocess with no devices, one configured consumer (``bench``,
acked by this process as the store aggregator acks: cumulative, every 200 events or 50 ms) and
``NOTIFY_SOCKET`` pointing at a datagram socket this process reads, as systemd's would.

1. start-up: ``kassad run`` started → ``READY=1`` on the notify socket (the daemon says it once
   the journal is open and the devices probed; it does not wait for the broker), on an empty
   journal, and again at the end on the journal of phase 3. Baseline: a bare Python process
   that imports aiomqtt and pydantic, opens an fsync'd SQLite file and says ``READY=1``.
2. RSS idle (``VmRSS`` of /proc/<pid>/status, the daemon online and idle 2 s), next to that
   bare process's.
3. load: ``payment.record`` commands (each journals one ``payment.recorded`` event) from 8
   concurrent :class:`KassadClient` senders, 100,000 (``--quick``: 3,000); the RSS every
   10,000 events (1,000) and the daemon's CPU (utime + stime of all its threads, from
   /proc/<pid>/stat) per 1000 events. CPU baseline: a bare aiomqtt echo process answering each
   request with three QoS 1 messages (a command's ack, result and event) plus two bare
   fsync'd commits (a command's intent and result), per 1000.
4. backlog: the consumer goes away, 10,000 (1,000) more commands are journaled and published
   to nobody; the broker is stopped and started again on the same port (no persistence) and
   the consumer comes back. The time runs from the first event the consumer gets after the
   outage until its ack covers the last; the reconnect delay (the daemon's backoff) is shown
   apart. Baseline: the same number of event bodies published by a bare aiomqtt client in its
   own process (QoS 1, 20 awaiting PUBACK, the outbox's ``inflight_window``) to a bare
   subscriber through the same broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from bench_commands import PAYMENT, EchoRequester, run_senders
from bench_commands import RES_TOPIC as ECHO_RES
from bench_commands import SCRIPT as COMMANDS_SCRIPT
from common import (
    DEFAULT_LOG_TYPES,
    HOST,
    REGISTER,
    STORE,
    Row,
    cancel_on_sigterm,
    child,
    cpu_meter,
    cpu_spent,
    filesystem_of,
    machine,
    mqtt_client,
    nearest_rank,
    print_table,
    print_tail,
    register_config,
    run_in_temp_dir,
    stop_process,
    timed_commits,
)

from kassad.daemon.client import KassadClient
from kassad.daemon.config import BrokerConfig
from kassad.simulators.broker import MosquittoBroker

BASE = f"kassad/v1/{STORE}/{REGISTER}"
EVT = f"{BASE}/evt"
CONSUMER = "bench"
ACK_EVERY, ACK_AFTER_S = 200, 0.05  # the aggregator's default batch: 200 events or 50 ms
WINDOW = 20  # the outbox's default inflight_window
BARE_TOPIC, GO_TOPIC = "bench/backlog", "bench/go"
SCRIPT = Path(__file__).resolve()

# The baseline of 1 and 2: what any Python daemon on these libraries does before READY=1.
BARE_START = """
import os, socket, sqlite3, sys
import aiomqtt, pydantic
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS t (x)"); db.execute("INSERT INTO t VALUES (1)")
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"]); s.send(b"READY=1")
sys.stdin.read()
"""


@dataclass
class Counts:
    starts: int
    events: int
    rss_every: int
    backlog: int
    echo: int
    senders: int = 8


FULL = Counts(starts=10, events=100_000, rss_every=10_000, backlog=10_000, echo=5000)
QUICK = Counts(starts=3, events=3_000, rss_every=1_000, backlog=1_000, echo=500)


@dataclass
class Results:
    starts: list[float] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)
    bare_starts: list[float] = field(default_factory=list)
    rss_idle_kib: int = 0
    bare_rss_kib: int = 0
    rss_steps: list[tuple[int, int]] = field(default_factory=list)  # (events, KiB)
    events: int = 0
    load_s: float = 0.0
    cpu_s: float = 0.0
    cpu_parts: dict[str, float] = field(default_factory=dict)
    echo_cpu_per_1000: float = 0.0
    commit_cpu_per_1000: float = 0.0
    backlog: int = 0
    reconnect_s: float = 0.0
    drain_s: float = 0.0
    backlog_notes: list[str] = field(default_factory=list)
    bare_publish_s: float = 0.0
    bare_count: int = 0
    journal_events: int = 0

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s / self.events * 1000 if self.events else float("nan")

    @property
    def rss_after_kib(self) -> int:
        return self.rss_steps[-1][1] if self.rss_steps else 0


# -- /proc -------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- the notify socket -------------------------------------------------------------------------


class NotifySocket:
    """A bound AF_UNIX datagram socket on this event loop: what a service says, when."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setblocking(False)
        self._ready: asyncio.Queue[float] = asyncio.Queue()
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._read)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NOTIFY_SOCKET": str(self.path)}

    def _read(self) -> None:
        at = time.monotonic()  # taken before parsing, as close to arrival as this loop gets
        with contextlib.suppress(BlockingIOError):
            data = self._sock.recv(65536)
            if b"READY=1" in data.splitlines():
                self._ready.put_nowait(at)

    async def ready(self, timeout: float = 30.0) -> float:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            return await self._ready.get()

    def drain(self) -> None:
        while not self._ready.empty():
            self._ready.get_nowait()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()


# -- the daemon --------------------------------------------------------------------------------


def write_config(path: Path, port: int, journal: Path) -> Path:
    text = register_config(port, journal).replace("consumers = []",
                                                  f'consumers = ["{CONSUMER}"]')
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def started(argv: list[str], log: Path, notify: NotifySocket,
                  ) -> AsyncIterator[tuple[asyncio.subprocess.Process, float]]:
    """A process started with NOTIFY_SOCKET; yields it and its exec → READY=1 time."""
    notify.drain()
    with log.open("ab") as out:
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                    stdout=out, stderr=out, env=notify.env)
    try:
        try:
            took = await notify.ready() - t0
        except TimeoutError:
            print_tail(log)
            raise
        yield proc, took
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        await stop_process(proc, 20)


def daemon_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "kassad.daemon", "--log-level", "INFO", "run", "--config",
            str(config)]


def journal_head(journal: Path) -> int:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
    finally:
        db.close()


async def wait_online(port: int, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Until the register's retained status says online (it is subscribed by then)."""
    async with asyncio.timeout(timeout), mqtt_client(port, "bench-status") as client:
        await client.subscribe(f"{BASE}/status", qos=1)
        async for message in client.messages:
            if json.loads(bytes(message.payload)).get("online"):  # type: ignore[arg-type]
                return


class Consumer:
    """The configured consumer: counts ``evt`` and acks cumulatively as the aggregator does
    (every ``ACK_EVERY`` events or ``ACK_AFTER_S``), retained."""

    def __init__(self, client: aiomqtt.Client, topic: str = EVT, ack: bool = True) -> None:
        self.client, self.topic, self.ack = client, topic, ack
        self.epoch = 0
        self.upto = 0  # highest contiguous seq received
        self.acked = 0
        self.received = 0
        self.first_at: float | None = None
        self.first_seq: int | None = None
        self.last_at = 0.0
        self._moved = asyncio.Event()

    def start_at(self, mark: int) -> None:
        self.upto = self.acked = mark

    async def listen(self) -> None:
        await self.client.subscribe(self.topic, qos=1)
        async for message in self.client.messages:
            now = time.monotonic()
            self.received += 1
            self.last_at = now
            if not self.ack:
                self._moved.set()
                continue
            body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            if self.first_at is None:
                self.first_at, self.first_seq = now, int(body["seq"])
            self.epoch = int(body["epoch"])
            if int(body["seq"]) == self.upto + 1:
                self.upto += 1
                if self.upto - self.acked >= ACK_EVERY:
                    await self._ack()
            self._moved.set()

    async def ack_timer(self) -> None:
        while True:
            await asyncio.sleep(ACK_AFTER_S)
            if self.ack and self.upto > self.acked:
                await self._ack()

    async def _ack(self) -> None:
        self.acked = self.upto
        await self.client.publish(f"{BASE}/ack/{CONSUMER}",
                                  json.dumps({"epoch": self.epoch, "upto_seq": self.upto}),
                                  qos=1, retain=True)
        self._moved.set()

    async def until(self, done: Any, timeout: float) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not done():
                self._moved.clear()
                await self._moved.wait()


@contextlib.asynccontextmanager
async def consuming(port: int, name: str, topic: str = EVT, ack: bool = True,
                    ) -> AsyncIterator[Consumer]:
    async with mqtt_client(port, name) as client:
        consumer = Consumer(client, topic, ack)
        tasks = [asyncio.create_task(consumer.listen()), asyncio.create_task(consumer.ack_timer())]
        try:
            yield consumer
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task


# -- the phases --------------------------------------------------------------------------------


async def bench_bare_starts(work: Path, notify: NotifySocket, counts: Counts, r: Results) -> None:
    for i in range(counts.starts):
        argv = [sys.executable, "-c", BARE_START, str(work / f"bare-start-{i}.db")]
        async with started(argv, work / "bare-start.log", notify) as (proc, took):
            r.bare_starts.append(took)
            await asyncio.sleep(0.2)  # imports settle before its RSS is read
            r.bare_rss_kib = rss_kib(proc.pid)


async def bench_starts(work: Path, port: int, notify: NotifySocket, journal: Path | None,
                       count: int) -> list[float]:
    """``count`` starts to READY=1 on ``journal`` (else on a fresh one each time)."""
    times: list[float] = []
    for i in range(count):
        path = journal or work / f"start-{i}.db"
        config = write_config(work / f"start-{i}.toml", port, path)
        async with started(daemon_argv(config), work / "starts.log", notify) as (_, took):
            times.append(took)
    return times


async def send_commands(port: int, count: int, senders: int, on_progress: Any = None) -> float:
    """``count`` payment.record commands from ``senders`` concurrent senders; elapsed s."""
    broker = BrokerConfig(host=HOST, port=port)
    async with KassadClient(broker, store=STORE, register=REGISTER, requester="bench",
                            employee="bench", ttl=300, retry_interval=60,
                            result_retry_interval=60) as client:
        await client.wait_connected()
        left, done = count, 0
        start = time.perf_counter()

        async def sender() -> None:
            nonlocal left, done
            while left > 0:
                left -= 1
                await client.send("payment.record", PAYMENT)
                done += 1
                if on_progress is not None:
                    on_progress(done)

        await asyncio.gather(*(sender() for _ in range(senders)))
        return time.perf_counter() - start


async def bench_load(port: int, proc: asyncio.subprocess.Process, journal: Path, counts: Counts,
                     r: Results) -> None:
    broker = BrokerConfig(host=HOST, port=port)
    async with KassadClient(broker, store=STORE, register=REGISTER, requester="bench",
                            employee="bench", ttl=120) as client:
        await client.wait_connected()
        await client.send("session.open",
                          {"starting_float": {"amount": 100000, "currency": "SEK"}})
    head = journal_head(journal)
    meter = cpu_meter(daemon=proc.pid)
    r.rss_steps.append((0, rss_kib(proc.pid)))

    def progress(done: int) -> None:
        if done % counts.rss_every == 0:
            r.rss_steps.append((done, rss_kib(proc.pid)))

    before = meter()
    r.load_s = await send_commands(port, counts.events, counts.senders, progress)
    spent = cpu_spent(before, meter())
    r.cpu_parts = spent
    r.cpu_s = sum(spent.values())
    r.events = journal_head(journal) - head


async def bench_cpu_floor(work: Path, broker: MosquittoBroker, counts: Counts,
                          r: Results) -> None:
    """The floor of a command's CPU: three QoS 1 messages out per request in a bare aiomqtt
    process (bench_commands' echo server), and two bare fsync'd commits."""
    argv = [sys.executable, str(COMMANDS_SCRIPT), "--echo-server", str(broker.port)]
    async with (child(argv, work / "echo.log", ready_line=b"ready") as echo,
                mqtt_client(broker.port, "bench-requester") as client):
        await client.subscribe(ECHO_RES, qos=1)
        requester = EchoRequester(client)
        listener = asyncio.create_task(requester.listen())
        try:
            meter = cpu_meter(echo=echo.pid)
            sample = await run_senders(lambda: requester.request(3), counts.echo,
                                       counts.senders, 120, meter)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    r.echo_cpu_per_1000 = sample.cpu["echo"] / sample.count * 1000
    t0 = time.process_time()
    latencies, _ = timed_commits(work, 2 * counts.echo)
    r.commit_cpu_per_1000 = (time.process_time() - t0) / len(latencies) * 2 * 1000


async def bench_backlog(broker: MosquittoBroker, journal: Path, counts: Counts,
                        r: Results) -> None:
    """With the consumer gone: commands journaled, a broker outage, the consumer back."""
    port = broker.port
    mark = journal_head(journal)
    await send_commands(port, counts.backlog, counts.senders)
    broker.stop()
    await asyncio.sleep(1.0)
    target = journal_head(journal)  # a disconnect may journal nothing; read after it
    r.backlog = target - mark
    broker.start()
    back = time.monotonic()
    async with consuming(port, "bench-consumer-2") as again:
        again.start_at(mark)
        await again.until(lambda: again.acked >= target, timeout=300)
    assert again.first_at is not None
    r.reconnect_s = again.first_at - back
    r.drain_s = again.last_at - again.first_at
    if again.first_seq != mark + 1:
        r.backlog_notes.append(f"first event after the outage was seq {again.first_seq}, "
                               f"not {mark + 1}")
    r.journal_events = target


async def bare_publisher(port: int, count: int, body: bytes) -> None:
    """The backlog's baseline (own process): ``count`` QoS 1 publishes, ``WINDOW`` at a time,
    once told to go."""
    async with mqtt_client(port, "bench-bare-pub") as client:
        await client.subscribe(GO_TOPIC, qos=1)
        print("ready", flush=True)
        async for _ in client.messages:
            break
        window = asyncio.Semaphore(WINDOW)

        async def one() -> None:
            try:
                await client.publish(BARE_TOPIC, body, qos=1)
            finally:
                window.release()

        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                await window.acquire()
                group.create_task(one())


async def bench_bare_backlog(work: Path, broker: MosquittoBroker, journal: Path,
                             counts: Counts, r: Results) -> None:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT body FROM events WHERE type = 'payment.recorded' "
                         "ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        db.close()
    body_file = work / "event-body.json"
    body_file.write_text(row[0][:-1] + ',"replayed":true}', encoding="utf-8")
    argv = [sys.executable, str(SCRIPT), "--bare-publisher", str(broker.port),
            str(counts.backlog), str(body_file)]
    async with (child(argv, work / "bare-pub.log", ready_line=b"ready"),
                consuming(broker.port, "bench-bare-sub", BARE_TOPIC, ack=False) as sub,
                mqtt_client(broker.port, "bench-go") as go):
        await asyncio.sleep(0.2)  # the subscription is in place
        t0 = time.monotonic()
        await go.publish(GO_TOPIC, b"go", qos=1)
        await sub.until(lambda: sub.received >= counts.backlog, timeout=120)
        r.bare_publish_s = sub.last_at - t0
        r.bare_count = sub.received


async def bench(counts: Counts, work: Path) -> Results:
    cancel_on_sigterm()
    r = Results()
    notify = NotifySocket(work / "notify.sock")
    try:
        # The store broker's queue (systemd/mosquitto-store.conf): with mosquitto's default of
        # 1000 the bare baseline's subscriber, which has no ack window, would lose messages.
        with MosquittoBroker(work / "broker", max_queued_messages=100_000,
                             extra_config=DEFAULT_LOG_TYPES) as broker:
            port = broker.port
            print(f"1: {counts.starts} starts to READY=1, bare process then kassad run …",
                  flush=True)
            await bench_bare_starts(work, notify, counts, r)
            r.starts = await bench_starts(work, port, notify, None, counts.starts)
            journal = work / "journal.db"
            config = write_config(work / "register.toml", port, journal)
            async with contextlib.AsyncExitStack() as stack:
                # The consumer listens before the daemon starts: it misses no event.
                alone = contextlib.AsyncExitStack()  # closed mid-way: the consumer leaves
                stack.push_async_callback(alone.aclose)
                consumer = await alone.enter_async_context(consuming(port, "bench-consumer"))
                proc, _ = await stack.enter_async_context(
                    started(daemon_argv(config), work / "daemon.log", notify))
                await wait_online(port)
                await asyncio.sleep(2.0)
                print("2: RSS idle …", flush=True)
                r.rss_idle_kib = rss_kib(proc.pid)
                print(f"3: {counts.events} payment.record, {counts.senders} senders …",
                      flush=True)
                await bench_load(port, proc, journal, counts, r)
                await consumer.until(lambda: consumer.acked >= journal_head(journal), 60)
                await alone.aclose()
                print(f"4: backlog of {counts.backlog} events after a broker outage …",
                      flush=True)
                await bench_backlog(broker, journal, counts, r)
                if proc.returncode is not None:
                    raise RuntimeError(f"the daemon exited with {proc.returncode}")
            print("4: baseline, bare aiomqtt publishes …", flush=True)
            await bench_bare_backlog(work, broker, journal, counts, r)
            print("3: CPU floor, bare echo + commits …", flush=True)
            await bench_cpu_floor(work, broker, counts, r)
            print(f"1: {counts.starts} starts on the loaded journal …", flush=True)
            r.restarts = await bench_starts(work, port, notify, journal, counts.starts)
    except Exception:
        log = work / "daemon.log"
        if log.exists():
            print_tail(log)
        raise
    finally:
        notify.close()
    return r


# -- report ------------------------------------------------------------------------------------


def ms(values: list[float], p: float) -> float:
    return nearest_rank(values, p) * 1000


def rows(r: Results) -> list[Row]:
    """The table's rows of this benchmark (also used by the suite, ``python -m bench``)."""
    n = len(r.starts)
    bare50, bare99 = ms(r.bare_starts, 50), ms(r.bare_starts, 99)
    cpu_floor = r.echo_cpu_per_1000 + r.commit_cpu_per_1000
    bare_rate = r.bare_count / r.bare_publish_s if r.bare_publish_s else float("nan")
    drain_rate = r.backlog / r.drain_s if r.drain_s else float("nan")
    out: list[Row] = [
        (f"start → READY=1 p50 / p99, empty journal (n={n})",
         f"{ms(r.starts, 50):.0f} / {ms(r.starts, 99):.0f} ms",
         f"bare Python + aiomqtt, pydantic, SQLite {bare50:.0f} / {bare99:.0f} ms",
         ms(r.starts, 50) / bare50),
        (f"start → READY=1 p50 / p99, {r.journal_events:,} events (n={len(r.restarts)})",
         f"{ms(r.restarts, 50):.0f} / {ms(r.restarts, 99):.0f} ms",
         f"the same on an empty journal {ms(r.starts, 50):.0f} ms",
         ms(r.restarts, 50) / ms(r.starts, 50)),
        ("daemon RSS, idle", f"{r.rss_idle_kib / 1024:.1f} MiB",
         f"that bare process {r.bare_rss_kib / 1024:.1f} MiB", r.rss_idle_kib / r.bare_rss_kib),
        (f"daemon RSS after {r.events:,} events", f"{r.rss_after_kib / 1024:.1f} MiB",
         f"idle {r.rss_idle_kib / 1024:.1f} MiB", r.rss_after_kib / r.rss_idle_kib),
        (f"daemon CPU per 1000 events ({r.events:,} commands)", f"{r.cpu_per_1000:.2f} s",
         f"bare echo, 3 msgs + 2 commits {cpu_floor:.2f} s", r.cpu_per_1000 / cpu_floor),
        (f"backlog of {r.backlog:,} events after a broker outage", f"{r.drain_s:.2f} s",
         f"bare aiomqtt QoS 1 publishes {r.bare_publish_s:.2f} s",
         r.drain_s / r.bare_publish_s if r.bare_publish_s else float("nan")),
        ("", f"{drain_rate:,.0f}/s", f"{bare_rate:,.0f}/s", drain_rate / bare_rate),
    ]
    return out


def details(r: Results) -> list[str]:
    steps = ", ".join(f"{n:,}: {kib / 1024:.1f}" for n, kib in r.rss_steps)
    # After the first step: its jump is the first use's allocations, not growth per event.
    first, last = r.rss_steps[min(1, len(r.rss_steps) - 1)], r.rss_steps[-1]
    growth = (last[1] - first[1]) / (last[0] - first[0]) * 10_000 if last[0] > first[0] else 0
    cpu = ", ".join(f"{k} {v / r.events * 1000:.2f} s" for k, v in r.cpu_parts.items())
    out = [
        f"start → READY=1, empty journal (ms): {', '.join(f'{t * 1000:.0f}' for t in r.starts)}",
        f"start → READY=1, loaded journal (ms): "
        f"{', '.join(f'{t * 1000:.0f}' for t in r.restarts)}",
        f"bare process start (ms): {', '.join(f'{t * 1000:.0f}' for t in r.bare_starts)}",
        f"RSS (MiB) by events journaled under load: {steps}; after the "
        f"first step {growth / 1024:.2f} MiB per 10,000 events",
        f"load: {r.events:,} events in {r.load_s:.1f} s = {r.events / r.load_s:,.0f}/s; "
        f"daemon CPU per 1000 events: {cpu}",
        f"CPU floor per 1000: bare echo (1 in, 3 out, QoS 1) {r.echo_cpu_per_1000:.2f} s, "
        f"2 bare fsync'd commits {r.commit_cpu_per_1000:.2f} s",
        f"backlog: the daemon reconnected and published its first event {r.reconnect_s:.2f} s "
        f"after the broker was back (reconnect_min 0.5 s, doubling); drained in "
        f"{r.drain_s:.2f} s; bare: {r.bare_count:,} in {r.bare_publish_s:.2f} s",
        *r.backlog_notes,
    ]
    return out


def report(r: Results, work: Path, quick: bool) -> None:
    print()
    note = " (--quick: counts cut, not representative)" if quick else ""
    print(f"kassad daemon start-up, memory, CPU and backlog benchmark{note}")
    print(machine(with_cpu_model=True))
    print(f"temp dir {work}: {filesystem_of(work)}")
    print()
    print_table(rows(r), (52, 16, 48), 6)
    print()
    print("ratio = value / baseline.")
    for line in details(r):
        print(f"  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="cut counts for a smoke run")
    parser.add_argument("--dir", type=Path, default=None, help="make the temp dir here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--bare-publisher", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_publisher is not None:
        port, count, body = args.bare_publisher
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(bare_publisher(int(port), int(count), Path(body).read_bytes()))
        return 0
    counts = QUICK if args.quick else FULL

    def run(work: Path) -> None:
        results = asyncio.run(bench(counts, work))
        report(results, work, args.quick)

    return run_in_temp_dir("kassad-bench-daemon-", args.dir, args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
