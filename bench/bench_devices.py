"""Drawer kick and receipt latency through the register daemon, next to baselines of the same run.

    .venv/bin/python bench/bench_devices.py            # full run, about a minute on 2 cores
    .venv/bin/python bench/bench_devices.py --quick    # smoke run, about 15 s

All on 127.0.0.1, in a temp dir that is removed afterwards. This process runs mosquitto (a
subprocess), the printer simulator (in this process, on this event loop, so the arrival time of
the kick's bytes, ``Kick.at``, is ``time.monotonic()`` of the same clock as the sender's ``t0``)
and ``kassad run`` as a subprocess driving that printer and its drawer:

1. command → kick: ``t0`` is taken right before a ``drawer.open`` command is published; the
   figure is the arrival of the DLE DC4 kick bytes at the simulator. Commands are published by
   a bare aiomqtt client (the contract's JSON envelope, Response Topic, Correlation Data, QoS 1,
   no resends), not through KassadClient, so no client machinery sits in the interval. After
   each kick (outside the interval) the result is awaited, the simulated drawer is closed and
   the bench waits for the daemon's ``drawer.closed`` event on ``evt``.
2. the same while a background loop prints 20 KiB ``print.raw`` jobs through the daemon over
   the same printer link (the real-time kick must not wait behind print data).
   2w. the same again, with a second daemon whose serial line is a pty relay that hands the
   bytes to the simulator at the configured baud rate (a pty alone has no baud rate: it moves
   bytes as fast as both ends go, so print data never queues in phase 2).
3. baseline: a bare MQTT publish → a subscriber's receipt (two aiomqtt clients in this process,
   QoS 1, TCP_NODELAY) through the same broker; and a bare fsync'd SQLite commit in the temp dir
   (the daemon journals the command's intent, one commit, before it kicks).
4. a 2 KiB receipt (``print.raw`` of 2048 bytes): ``print.raw`` published → the job's last byte
   at the simulator (and → the ``printed`` result), next to the time 2048 bytes need on the wire
   at 19200 and 115200 baud (10 bits a byte: 8N1).

The transport is the simulator's pty (``kind = "serial"``, 115200 baud) by default, or its TCP
listener (``--transport tcp``; no 2w then). The simulator ignores a DLE DC4 pulse on a pin that
is still pulsing (on + off time, 200 ms for the daemon's 100 ms pulse), as Epson printers do;
the bench clears that pin timer between iterations, outside the measured interval, so that 1000
kicks fit in seconds (``ignored kicks`` in the report must stay 0).

``--profile-daemon FILE`` runs the daemon under cProfile (its event-loop thread) and prints its
top functions; the figures of such a run are not representative.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import tty
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import aiomqtt
from common import (
    DEFAULT_LOG_TYPES,
    HOST,
    REGISTER,
    STORE,
    Meter,
    Row,
    bare_commit,
    bare_db,
    cancel_on_sigterm,
    cpu_meter,
    cpu_spent,
    filesystem_of,
    machine,
    mqtt_client,
    nearest_rank,
    print_profile,
    print_table,
    print_tail,
    register_config,
    run_in_temp_dir,
    stop_process,
    timed_commits,
)
from common import Sample as BaseSample
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.common import open_raw_pty
from kassad.simulators.printer.device import PrinterSimulator
from kassad.simulators.printer.faces import Link

BASE = f"kassad/v1/{STORE}/{REGISTER}"
EVT = f"{BASE}/evt"
PING_TOPIC = "bench/ping"
WIRE_BAUDS = (19200, 115200)


@dataclass
class Counts:
    kicks: int
    loaded_kicks: int
    wire_kicks: int
    pings: int
    receipts: int
    wire_receipts: int
    commits: int
    warmup: int
    cap_s: float  # no phase runs longer than this, whatever its count


FULL = Counts(kicks=1000, loaded_kicks=1000, wire_kicks=12, pings=1000, receipts=50,
              wire_receipts=5, commits=500, warmup=20, cap_s=25.0)
QUICK = Counts(kicks=100, loaded_kicks=100, wire_kicks=4, pings=100, receipts=10,
               wire_receipts=2, commits=100, warmup=5, cap_s=8.0)


@dataclass
class Sample(BaseSample):
    """One measured phase (see common.Sample), with notes on what went unusually."""

    unit: ClassVar[str] = "iteration"

    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{len(self.latencies)} in {self.elapsed:.2f} s; p50 {self.pct(50):.2f} ms, "
                f"p99 {self.pct(99):.2f} ms, max {self.pct(100):.2f} ms")


# -- the simulated printer, timed ------------------------------------------------------------


class TimedPrinter(PrinterSimulator):
    """The simulator, plus where in the byte stream each kick came and when a watched marker
    arrived (``time.monotonic()`` taken before the bytes are parsed, as ``Kick.at`` is)."""

    def __init__(self) -> None:
        super().__init__()
        self.kick_offsets: list[int] = []  # len(received) after the read that held each kick
        self._marker: bytes | None = None
        self._marker_from = 0
        self._marker_seen: asyncio.Future[float] | None = None

    def _receive(self, link: Link, data: bytes) -> None:
        at = time.monotonic()
        kicks = len(self.kicks)
        super()._receive(link, data)
        self.kick_offsets.extend([len(self.received)] * (len(self.kicks) - kicks))
        seen = self._marker_seen
        if (seen is not None and not seen.done() and self._marker is not None
                and self.received.find(self._marker, self._marker_from) >= 0):
            seen.set_result(at)

    def watch(self, marker: bytes) -> asyncio.Future[float]:
        """A future for the arrival time of the read that completes ``marker``."""
        self._marker, self._marker_from = marker, max(0, len(self.received) - len(marker))
        self._marker_seen = asyncio.get_running_loop().create_future()
        return self._marker_seen

    def pulse_done(self) -> None:
        """Forget that the drawer pin is still pulsing (see the module docstring)."""
        self._pin_busy_until.clear()


class WireRelay:
    """A serial cable of ``baud`` between the daemon and the simulator's pty.

    The daemon opens the slave of a pty made here; what it writes is read from the master at
    most ``baud / 10`` bytes a second (token bucket, 1 ms steps) and written into the
    simulator's pty. Replies go back unpaced (they are a few bytes)."""

    TICK_S = 0.001

    def __init__(self, sim_path: str, baud: int) -> None:
        self.rate = baud / 10
        # Keep the slave open: no EIO on the master.
        self._master, self._slave, self.path = open_raw_pty()
        self._sim = os.open(sim_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._sim)
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WireRelay:
        loop = asyncio.get_running_loop()
        loop.add_reader(self._sim, self._reply)
        self._task = loop.create_task(self._forward(), name="wire-relay")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for fd in (self._sim, self._master):
            loop.remove_reader(fd)
        for fd in (self._sim, self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _reply(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            data = os.read(self._sim, 4096)
            if data:
                _write_all(self._master, data)

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self._master, wake)
        try:
            await ready
        finally:
            loop.remove_reader(self._master)

    async def _forward(self) -> None:
        budget, last = 0.0, time.monotonic()
        burst = max(1.0, self.rate * self.TICK_S * 2)
        while True:
            now = time.monotonic()
            budget, last = min(burst, budget + (now - last) * self.rate), now
            if budget >= 1:
                try:
                    data = os.read(self._master, int(budget))
                except BlockingIOError:
                    await self._readable()
                    budget, last = 0.0, time.monotonic()
                    continue
                except OSError:  # the daemon closed the port (EIO): wait for it again
                    await asyncio.sleep(0.01)
                    continue
                budget -= len(data)
                _write_all(self._sim, data)
                self.delivered += len(data)
            await asyncio.sleep(self.TICK_S)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + 1.0
    while view and time.monotonic() < deadline:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            time.sleep(0.0005)


# -- MQTT: a bare POS, and the bare baseline -------------------------------------------------


@dataclass
class Prepared:
    cmd_id: str
    topic: str
    payload: str
    properties: Properties
    result: asyncio.Future[dict[str, Any]]


class Pos:
    """A POS on a bare aiomqtt client: the contract's envelope with Response Topic and
    Correlation Data, one publish, no resends. It also counts events on ``evt``."""

    def __init__(self, client: aiomqtt.Client, requester: str) -> None:
        self.client = client
        self.requester = requester
        self.reply_topic = f"{BASE}/res/{requester}"
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.events: Counter[str] = Counter()
        self._event = asyncio.Event()

    async def start(self, events: bool = False) -> None:
        await self.client.subscribe(self.reply_topic, qos=1)
        if events:
            await self.client.subscribe(EVT, qos=1)

    async def listen(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            body = json.loads(payload if isinstance(payload, bytes) else str(payload))
            if message.topic.value == EVT:
                self.events[body.get("type", "?")] += 1
                self._event.set()
                continue
            future = self._pending.get(str(body.get("cmd_id")))
            if future is not None and body.get("phase") == "result" and not future.done():
                future.set_result(body)

    def prepare(self, command: str, params: dict[str, Any], ttl: float = 30.0) -> Prepared:
        cmd_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        body = {"v": 1, "cmd_id": cmd_id, "issued_at": _stamp(now),
                "expires_at": _stamp(now + timedelta(seconds=ttl)),
                "requester": self.requester, "employee": "bench", "params": params}
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = cmd_id.encode()
        props.MessageExpiryInterval = int(ttl) + 1
        future = asyncio.get_running_loop().create_future()
        self._pending[cmd_id] = future
        return Prepared(cmd_id, f"{BASE}/cmd/{command}", json.dumps(body), props, future)

    async def publish(self, p: Prepared) -> None:
        await self.client.publish(p.topic, p.payload, qos=1, properties=p.properties)

    async def result(self, p: Prepared, timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                return await p.result
        finally:
            self._pending.pop(p.cmd_id, None)

    async def call(self, command: str, params: dict[str, Any],
                   timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        p = self.prepare(command, params)
        await self.publish(p)
        return await self.result(p, timeout)

    async def wait_event(self, kind: str, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while self.events[kind] < count:
                self._event.clear()
                await self._event.wait()


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@contextlib.asynccontextmanager
async def listening(pos: Pos) -> AsyncIterator[Pos]:
    task = asyncio.create_task(pos.listen(), name=f"listen-{pos.requester}")
    try:
        yield pos
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task


async def bench_bare_publish(port: int, counts: Counts, meter: Meter) -> Sample:
    """Publish (QoS 1) → a subscriber's receipt, one at a time, both clients in this process."""
    return await _pings(port, counts, meter, "bench", on_receipt=None)


async def bench_floor(port: int, folder: Path, counts: Counts, meter: Meter) -> Sample:
    """The kick's floor, each sample whole: publish (QoS 1) → a subscriber's receipt, which
    then makes one fsync'd commit (the daemon journals the intent before it kicks); the end
    is taken after the commit. Both clients in this process, one at a time."""
    db = bare_db(folder / "floor.db")
    try:
        # bare_commit blocks the loop, as nothing else waits meanwhile.
        return await _pings(port, counts, meter, "bench-floor", on_receipt=lambda: bare_commit(db))
    finally:
        db.close()


async def _pings(port: int, counts: Counts, meter: Meter, name: str,
                 on_receipt: Callable[[], object] | None) -> Sample:
    """One publish at a time to a subscriber in this process; a sample ends at its receipt
    (after ``on_receipt``, when given)."""
    async with mqtt_client(port, f"{name}-pub") as pub, mqtt_client(port, f"{name}-sub") as sub:
        await sub.subscribe(PING_TOPIC, qos=1)
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def receive() -> None:
            async for _ in sub.messages:
                if on_receipt is not None:
                    on_receipt()
                arrived.put_nowait(time.monotonic())

        task = asyncio.create_task(receive())
        sample = Sample()
        try:
            deadline = time.monotonic() + counts.cap_s
            before, start = meter(), time.monotonic()
            for i in range(counts.warmup + counts.pings):
                if time.monotonic() > deadline:
                    break
                t0 = time.monotonic()
                await pub.publish(PING_TOPIC, b'{"ping":1}', qos=1)
                async with asyncio.timeout(10):
                    t1 = await arrived.get()
                if i >= counts.warmup:
                    sample.latencies.append(t1 - t0)
            sample.elapsed = time.monotonic() - start
            after = meter()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
    sample.count = len(sample.latencies)
    sample.cpu = cpu_spent(before, after)
    return sample


def bench_commits(folder: Path, counts: Counts) -> Sample:
    """Bare fsync'd SQLite commits (WAL, synchronous=FULL), as the journal makes them."""
    latencies, elapsed = timed_commits(folder, counts.commits)
    return Sample(len(latencies), elapsed, latencies)


# -- the daemon ------------------------------------------------------------------------------


def write_register_config(path: Path, port: int, journal: Path, transport: dict[str, Any],
                          slow_line: bool = False) -> Path:
    """The register with a TM-T20II and its drawer (open level high: the simulator's default).

    ``slow_line``: a kick or a status reply may wait behind a whole receipt on the wire, so
    the drawer's open timeout and the status timeout are long enough not to resend the kick
    or call the printer offline meanwhile."""
    kind = transport["kind"]
    where = (f'kind = "serial", path = {json.dumps(transport["path"])}, '
             f'baudrate = {transport["baudrate"]}' if kind == "serial"
             else f'kind = "tcp", host = "{HOST}", port = {transport["port"]}')
    timeout = 5.0 if slow_line else 1.0
    broker = "reconnect_min = 0.05\nreconnect_max = 0.5\n"
    path.write_text(register_config(port, journal, broker) + f"""
[devices.printer]
model = "TM-T20II"
transport = {{ {where} }}
status_interval = 0.05
status_timeout = {timeout}
reconnect_min = 0.05
reconnect_max = 0.5
completion_timeout = 30.0
receipt_expiry = 120.0

[devices.drawer]
open_level = "high"
open_timeout = {timeout + 0.5}
kick_retries = 1
left_open_after = 600.0
""", encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def daemon(config: Path, log: Path, profile: Path | None,
                 ) -> AsyncIterator[asyncio.subprocess.Process]:
    """``kassad run`` for the duration of the block; SIGTERM (then SIGKILL) at the end."""
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "cProfile", "-o", str(profile)]
    argv = [*prefix, "-m", "kassad.daemon", "--log-level", "INFO", "run", "--config",
            str(config)]
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL,
                                                    stdout=out, stderr=out)
    try:
        yield proc
    except Exception:
        print_tail(log)
        raise
    finally:
        await stop_process(proc, 25)


async def wait_ready(pos: Pos, proc: asyncio.subprocess.Process, timeout: float = 20.0,  # noqa: ASYNC109
                     ) -> None:
    """Until state.get says the printer is connected and ready and the drawer closed."""
    async with asyncio.timeout(timeout):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}")
            with contextlib.suppress(TimeoutError):
                reply = await pos.call("state.get", {}, timeout=1.0)
                devices = (reply.get("data") or {}).get("state", {}).get("devices", {})
                printer, drawer = devices.get("printer") or {}, devices.get("drawer") or {}
                if printer.get("state") == "ready" and drawer.get("state") == "closed":
                    return
            await asyncio.sleep(0.05)


# -- the phases ------------------------------------------------------------------------------


def text_job(size: int, tail: bytes = b"", cut: bool = False) -> bytes:
    """``size`` bytes of printable lines (48 columns), ending with ``tail`` (and a cut)."""
    end = tail + (b"\x1dV\x00" if cut else b"")
    line = b"".join(bytes([0x41 + (i % 26)]) for i in range(47)) + b"\n"
    body = (line * (size // len(line) + 1))[: size - len(end) - 1] + b"\n"
    data = body + end
    assert len(data) == size and b"\x10" not in data and b"\x1b" not in data
    return data


class PrintLoad:
    """Back-to-back ``print.raw`` jobs through the daemon, until stopped."""

    def __init__(self, pos: Pos, sim: TimedPrinter, size: int) -> None:
        self.pos, self.sim = pos, sim
        self.size = size
        self.data = base64.b64encode(text_job(size, cut=True)).decode()
        self.jobs = 0
        self.failed: Counter[str] = Counter()
        self.times: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            reply = await self.pos.call("print.raw", {"data": self.data}, timeout=60)
            if reply.get("status") == "ok":
                self.jobs += 1
                self.times.append(time.monotonic() - t0)
            else:
                self.failed[(reply.get("error") or {}).get("code", "?")] += 1
            self.sim.receipts.clear()  # 20 KiB of rendered lines each: keep memory flat

    async def __aenter__(self) -> PrintLoad:
        self._task = asyncio.create_task(self._run(), name="print-load")
        # Start measuring once the first job is on its way to the printer.
        mark = len(self.sim.received)
        await self.sim.wait_for(lambda: len(self.sim.received) >= mark + 2048, timeout=10)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        try:
            async with asyncio.timeout(60):
                await self._task  # the job in hand finishes: the next phase starts idle
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def describe(self) -> str:
        if not self.times:
            return f"no {self.size // 1024} KiB job finished"
        ordered = sorted(self.times)
        failed = f", not printed {dict(self.failed)}" if self.failed else ""
        return (f"{self.jobs} jobs of {self.size} B printed meanwhile, command → printed p50 "
                f"{ordered[len(ordered) // 2] * 1000:.1f} ms{failed}")


ANOMALIES = ("drawer.unexpected_open", "drawer.kick_failed", "cmd.rejected")


async def settle(pos: Pos, sim: TimedPrinter) -> None:
    """After a refused or failed kick: close the drawer, then wait until the daemon says
    closed three times in a row, a status interval apart."""
    async with asyncio.timeout(15):
        stable = 0
        while stable < 3:
            if sim.state.drawer_open:
                sim.close_drawer()
            reply = await pos.call("state.get", {}, timeout=5)
            state = (reply.get("data") or {}).get("state", {})
            drawer = state.get("devices", {}).get("drawer") or {}
            stable = stable + 1 if drawer.get("state") == "closed" else 0
            await asyncio.sleep(0.06)


async def bench_kicks(pos: Pos, sim: TimedPrinter, count: int, counts: Counts, meter: Meter,
                      wire: WireRelay | None = None) -> Sample:
    """drawer.open → its kick bytes at the simulator; the drawer is closed between kicks.

    A refused or failed drawer.open is counted, the state settled and the kick tried again
    (it is no sample). On the paced line each command waits a random part of a 20 KiB job's
    wire time first, so that the kicks fall anywhere in the jobs."""
    sample = Sample()
    errors: Counter[str] = Counter()
    events_before = Counter(pos.events)
    attempts = 0
    behind: list[int] = []
    rng = random.Random(1)
    deadline = time.monotonic() + counts.cap_s
    warmup = counts.warmup if wire is None else 1
    wanted = warmup + count
    before, start = meter(), time.monotonic()
    while len(sample.latencies) < count and attempts < 2 * wanted:
        if time.monotonic() > deadline:
            sample.notes.append(f"stopped at the {counts.cap_s:g} s cap")
            break
        if wire is not None:
            await asyncio.sleep(rng.uniform(0, 20 * 1024 / wire.rate))
        attempts += 1
        p = pos.prepare("drawer.open", {"reason": "no_sale"})
        kicks, mark = len(sim.kicks), len(sim.received)
        t0 = time.monotonic()
        await pos.publish(p)
        reply = await pos.result(p, timeout=30)
        if len(sim.kicks) > kicks:
            kick = sim.kicks[kicks]
            if attempts > warmup:
                sample.latencies.append(kick.at - t0)
                behind.append(sim.kick_offsets[kicks] - mark - 5)
        # Outside the interval: close the drawer, wait until the daemon has seen it closed.
        if reply.get("status") == "ok":
            closed = pos.events["drawer.closed"]
            sim.close_drawer()
            await pos.wait_event("drawer.closed", closed + 1)
        else:
            errors[(reply.get("error") or {}).get("code", "?")] += 1
            await settle(pos, sim)
        sim.pulse_done()
    sample.elapsed = time.monotonic() - start
    after = meter()
    sample.count = attempts
    sample.cpu = cpu_spent(before, after)
    seen = Counter(pos.events)
    seen.subtract(events_before)
    if errors:
        sample.notes.append(f"{attempts} drawer.open sent, answered with an error (retried, no "
                            f"sample): {dict(errors)}")
    anomalies = {kind: seen[kind] for kind in ANOMALIES if seen[kind]}
    if anomalies:
        sample.notes.append(f"events on evt: {anomalies}, of {seen['drawer.kicked']} "
                            "drawer.kicked")
    if sim.ignored_kicks:
        sample.notes.append(f"ignored kicks (pin still pulsing) {sim.ignored_kicks}")
    if behind and max(behind) > 64:
        median, most = nearest_rank(behind, 50), max(behind)
        wire_time = (f" (on the wire at {wire.rate * 10:.0f} baud: "
                     f"{median / wire.rate * 1000:.0f} ms, {most / wire.rate * 1000:.0f} ms)"
                     if wire is not None else "")
        sample.notes.append(f"print bytes that reached the printer between t0 and the kick: "
                            f"p50 {median:.0f}, max {most}{wire_time}")
        if wire is None:
            for label, some in (("no", False), ("some", True)):
                part = [t for t, n in zip(sample.latencies, behind, strict=True)
                        if (n > 64) == some]
                sample.notes.append(
                    f"kicks with {label} print bytes ahead of them: {len(part)}, p50 "
                    f"{nearest_rank(part, 50) * 1000:.2f} ms, p99 "
                    f"{nearest_rank(part, 99) * 1000:.2f} ms")
    return sample


async def bench_receipts(pos: Pos, sim: TimedPrinter, count: int, counts: Counts, meter: Meter,
                         ) -> tuple[Sample, Sample]:
    """print.raw of 2048 bytes → its last byte at the simulator, and → the printed result."""
    last_byte, printed = Sample(), Sample()
    deadline = time.monotonic() + counts.cap_s
    before, start = meter(), time.monotonic()
    for i in range(2 + count):
        if time.monotonic() > deadline:
            last_byte.notes.append(f"stopped at the {counts.cap_s:g} s cap")
            break
        marker = f"#END{i:06d}#".encode()
        data = base64.b64encode(text_job(2048, tail=marker + b"\n")).decode()
        p = pos.prepare("print.raw", {"data": data})
        seen = sim.watch(marker)
        t0 = time.monotonic()
        await pos.publish(p)
        reply = await pos.result(p, timeout=30)
        t2 = time.monotonic()
        async with asyncio.timeout(10):
            t1 = await seen
        if reply.get("status") != "ok":
            last_byte.notes.append(f"job {i}: {reply.get('error')}")
        if i >= 2:
            last_byte.latencies.append(t1 - t0)
            printed.latencies.append(t2 - t0)
    last_byte.elapsed = printed.elapsed = time.monotonic() - start
    after = meter()
    last_byte.count = printed.count = len(last_byte.latencies)
    last_byte.cpu = cpu_spent(before, after)
    return last_byte, printed


# -- report ----------------------------------------------------------------------------------


def report(r: dict[str, Any], args: argparse.Namespace, work: Path) -> None:
    bare, commit = r["bare"], r["commits"]
    idle, loaded, wire = r["idle"], r["loaded"], r.get("wire")
    last_byte, printed = r["last_byte"], r["printed"]
    floor = r["floor"]
    link = (f"serial over the simulator's pty, {args.baud} baud configured (not enforced)"
            if args.transport == "serial" else "TCP to the simulator's :9100 listener")
    rows: list[Row] = [
        ("command → kick p50, printer idle", f"{idle.pct(50):.2f} ms",
         f"bare MQTT publish → receipt p50 {bare.pct(50):.2f} ms", idle.pct(50) / bare.pct(50)),
        ("", "", f"… + one fsync'd commit, p50 {floor.pct(50):.2f} ms",
         idle.pct(50) / floor.pct(50)),
        ("command → kick p99, printer idle", f"{idle.pct(99):.2f} ms",
         f"bare MQTT publish → receipt p99 {bare.pct(99):.2f} ms", idle.pct(99) / bare.pct(99)),
        ("", "", f"… + one fsync'd commit, p99 {floor.pct(99):.2f} ms",
         idle.pct(99) / floor.pct(99)),
        ("command → kick p50, 20 KiB jobs printing", f"{loaded.pct(50):.2f} ms",
         f"bare MQTT publish → receipt p50 {bare.pct(50):.2f} ms",
         loaded.pct(50) / bare.pct(50)),
        ("", "", f"command → kick p50, printer idle {idle.pct(50):.2f} ms",
         loaded.pct(50) / idle.pct(50)),
        ("command → kick p99, 20 KiB jobs printing", f"{loaded.pct(99):.2f} ms",
         f"bare MQTT publish → receipt p99 {bare.pct(99):.2f} ms",
         loaded.pct(99) / bare.pct(99)),
    ]
    if wire is not None and wire.latencies:
        chunk_ms = 512 * 10 / args.baud * 1000
        job_ms = 20 * 1024 * 10 / args.baud * 1000
        rows += [
            (f"command → kick p50, printing, {args.baud} bd line", f"{wire.pct(50):.1f} ms",
             f"command → kick p50, printer idle {idle.pct(50):.2f} ms",
             wire.pct(50) / idle.pct(50)),
            ("", "", f"one 512 B job chunk on the wire {chunk_ms:.1f} ms",
             wire.pct(50) / chunk_ms),
            (f"command → kick max, printing, {args.baud} bd line", f"{wire.pct(100):.1f} ms",
             f"one 512 B job chunk on the wire {chunk_ms:.1f} ms", wire.pct(100) / chunk_ms),
            ("", "", f"a whole 20 KiB job on the wire {job_ms:.0f} ms", wire.pct(100) / job_ms),
        ]
    for label, sample in (("2 KiB print.raw → last byte at printer p50", last_byte),
                          ("2 KiB print.raw → printed result p50", printed)):
        for baud in WIRE_BAUDS:
            wire_ms = 2048 * 10 / baud * 1000
            first = baud == WIRE_BAUDS[0]
            rows.append((label if first else "", f"{sample.pct(50):.2f} ms" if first else "",
                         f"2048 B on the wire at {baud} baud {wire_ms:.1f} ms",
                         sample.pct(50) / wire_ms))
    wire_last = r.get("wire_last_byte")
    if wire_last is not None and wire_last.latencies:
        wire_ms = 2048 * 10 / args.baud * 1000
        rows.append((f"… last byte p50, {args.baud} bd line", f"{wire_last.pct(50):.1f} ms",
                     f"2048 B on the wire at {args.baud} baud {wire_ms:.1f} ms",
                     wire_last.pct(50) / wire_ms))
    print()
    note = " (--quick: counts cut, not representative)" if args.quick else ""
    print(f"kassad drawer kick and receipt benchmark{note}")
    print(machine(with_cpu_model=True))
    print(f"printer link: {link}; printer simulator in the bench process; "
          f"temp dir {work}: {filesystem_of(work)}")
    print()
    print_table(rows, (44, 10, 48), 7, precise_below=0.1)
    print()
    print("ratio = value / baseline. t0 is taken right before a bare aiomqtt client publishes the")
    print("command (QoS 1, Response Topic, Correlation Data; not KassadClient); the end is the")
    print("simulator's time.monotonic() when the bytes arrived, in this same process. The daemon")
    print("journals a drawer.open's intent (one fsync'd commit) before it kicks, so the floor is")
    print("about one MQTT hop plus one commit.")
    if wire is not None:
        print(f"The '{args.baud} bd' rows run a second daemon whose serial line is a pty relay")
        print(f"delivering {args.baud // 10} bytes/s to the simulator, as a UART would; the other")
        print("rows use a pty, which moves bytes as fast as both ends go.")
    failed = any("kick_failed" in n or "unexpected_open" in n
                 for x in (idle, loaded, wire) if x is not None for n in x.notes)
    if failed:
        print("kick_failed and drawer.unexpected_open below came with nobody touching the drawer:")
        print("the journal shows drawer.opened then drawer.closed (open_seconds 0.0) in the same")
        print("millisecond: a DLE EOT poll's replies, read before an ASB status message, were")
        print("applied after it (see bench/README.md).")
    print()
    print("raw figures:")
    print(f"  3  bare MQTT publish → receipt (QoS 1):   {bare.describe()}")
    print(f"  3  bare fsync'd commit (WAL, FULL):       {commit.describe()}")
    print(f"  3  publish → receipt + fsync'd commit:    {floor.describe()}")
    print(f"  1  command → kick, printer idle:          {idle.describe()}")
    print(f"  2  command → kick, 20 KiB jobs printing:  {loaded.describe()}")
    print(f"       {r['load'].describe()}")
    if wire is not None:
        print(f"  2w command → kick, {args.baud} bd line, jobs: {wire.describe()}")
        print(f"       {r['wire_load'].describe()}")
        if wire_last is not None:
            print(f"  4w 2 KiB print.raw → last byte, {args.baud} bd: {wire_last.describe()}")
    print(f"  4  2 KiB print.raw → last byte:           {last_byte.describe()}")
    print(f"  4  2 KiB print.raw → printed result:      {printed.describe()}")
    for label, sample in (("1", idle), ("2", loaded), ("2w", wire), ("4", last_byte)):
        for note_ in (sample.notes if sample is not None else []):
            print(f"  {label:<2} note: {note_}")
    print("where the time goes (CPU per iteration, from /proc; 'bench' is this process: the "
          "MQTT clients and the printer simulator):")
    for label, sample in (("1 kick, idle", idle), ("2 kick, printing", loaded),
                          ("2w kick, slow line", wire), ("4 2 KiB receipt", last_byte),
                          ("3 bare publish", bare)):
        if sample is not None:
            print(f"  {label:<20} {sample.cpu_per_op()}")


# -- main ------------------------------------------------------------------------------------


async def run_daemon_phases(broker: MosquittoBroker, sim: TimedPrinter, work: Path,
                            counts: Counts, args: argparse.Namespace, results: dict[str, Any],
                            transport: dict[str, Any], name: str,
                            wire: WireRelay | None = None) -> None:
    config = write_register_config(work / f"{name}.toml", broker.port, work / f"{name}.db",
                                   transport, slow_line=wire is not None)
    profile = args.profile_daemon if wire is None else None
    async with (daemon(config, work / f"{name}.log", profile) as proc,
                mqtt_client(broker.port, f"bench-pos-{name}") as c1,
                mqtt_client(broker.port, f"bench-printing-{name}") as c2,
                listening(Pos(c1, "bench")) as pos, listening(Pos(c2, "bench-load")) as load):
        await pos.start(events=True)
        await load.start()
        await wait_ready(pos, proc)
        meter = cpu_meter(bench=os.getpid(), daemon=proc.pid, broker=broker.pid)
        if wire is not None:
            print(f"2w: command → kick while 20 KiB jobs print over a {args.baud} baud line …",
                  flush=True)
            async with PrintLoad(load, sim, 20 * 1024) as jobs:
                results["wire"] = await bench_kicks(pos, sim, counts.wire_kicks, counts, meter,
                                                    wire)
            results["wire_load"] = jobs
            print(f"4w: 2 KiB print.raw → last byte over the {args.baud} baud line …",
                  flush=True)
            results["wire_last_byte"], _ = await bench_receipts(pos, sim, counts.wire_receipts,
                                                                counts, meter)
            return
        print("3: bare MQTT publish → receipt …", flush=True)
        results["bare"] = await bench_bare_publish(broker.port, counts, meter)
        print("3: bare MQTT publish → receipt + one fsync'd commit …", flush=True)
        results["floor"] = await bench_floor(broker.port, work, counts, meter)
        print("1: command → kick, printer idle …", flush=True)
        results["idle"] = await bench_kicks(pos, sim, counts.kicks, counts, meter)
        print("2: command → kick while 20 KiB print.raw jobs print …", flush=True)
        async with PrintLoad(load, sim, 20 * 1024) as jobs:
            results["loaded"] = await bench_kicks(pos, sim, counts.loaded_kicks, counts, meter)
        results["load"] = jobs
        sim.received.clear()
        print("4: 2 KiB print.raw → last byte at the printer …", flush=True)
        results["last_byte"], results["printed"] = await bench_receipts(pos, sim, counts.receipts,
                                                                     counts, meter)
        if proc.returncode is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}")


async def bench(args: argparse.Namespace, counts: Counts, work: Path) -> dict[str, Any]:
    cancel_on_sigterm()
    results: dict[str, Any] = {}
    print(f"3: {counts.commits} bare fsync'd SQLite commits in {work} …", flush=True)
    results["commits"] = bench_commits(work, counts)
    with MosquittoBroker(work / "broker", extra_config=DEFAULT_LOG_TYPES) as broker:
        sim = TimedPrinter()
        async with sim:
            if args.transport == "serial":
                path = sim.open_pty()
                transport: dict[str, Any] = {"kind": "serial", "path": path,
                                             "baudrate": args.baud}
            else:
                transport = {"kind": "tcp", "port": await sim.serve_tcp(HOST)}
            print(f"kassad run against the printer simulator ({transport['kind']}) on "
                  f"mosquitto {HOST}:{broker.port} …", flush=True)
            await run_daemon_phases(broker, sim, work, counts, args, results, transport, "r1")
            if args.transport == "serial" and not args.no_wire:
                sim.received.clear()
                async with WireRelay(path, args.baud) as wire:
                    line = {"kind": "serial", "path": wire.path, "baudrate": args.baud}
                    await run_daemon_phases(broker, sim, work, counts, args, results, line,
                                            "r2", wire)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="cut counts for a smoke run")
    parser.add_argument("--transport", choices=["serial", "tcp"], default="serial",
                        help="printer link: the simulator's pty (default) or its TCP listener")
    parser.add_argument("--baud", type=int, default=115200, choices=[9600, 19200, 38400,
                                                                     57600, 115200],
                        help="configured serial speed (and the relay's in 2w); default 115200")
    parser.add_argument("--no-wire", action="store_true",
                        help="skip 2w, the kicks over a baud-paced line")
    parser.add_argument("--dir", type=Path, default=None, help="make the temp dir here")
    parser.add_argument("--profile-daemon", type=Path, default=None, metavar="FILE",
                        help="run the daemon (phases 1-4) under cProfile, print its top functions")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if args.profile_daemon is not None:
        args.profile_daemon = args.profile_daemon.resolve()

    counts = QUICK if args.quick else FULL

    def run(work: Path) -> None:
        results = asyncio.run(bench(args, counts, work))
        report(results, args, work)
        if args.profile_daemon is not None:
            print_profile(args.profile_daemon, tottime=25, cumulative=30)

    return run_in_temp_dir("kassad-bench-devices-", args.dir, args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
