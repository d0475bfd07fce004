"""Durable command throughput of the register daemon, next to baselines from the same run.

    .venv/bin/python bench/bench_commands.py            # full run, well under 2 minutes
    .venv/bin/python bench/bench_commands.py --quick    # smoke run, a few seconds

Measures, all on 127.0.0.1, in a temp dir that is removed afterwards:

A. bare fsync'd SQLite commits (WAL, ``synchronous=FULL``, one row per transaction) in the
   same folder as the daemon's journal: the disk's floor;
B. a bare MQTT 5 request/response through the same mosquitto: this process publishes a
   request (QoS 1, Response Topic, Correlation Data) and an echo client in another process
   replies (QoS 1) with one reply, or with two (the ack + result pattern of a command): the
   network floor;
C. ``kassad run`` as a subprocess against that broker: ``payment.record`` commands after one
   ``session.open``, sent with :class:`KassadClient` one at a time (latency) and by several
   concurrent senders sharing one client (sustained throughput). The journal is the product's
   own (``synchronous=FULL``); every command is two commits (the write-ahead intent, then the
   result with its event), so the ceiling is about half of A.

Every phase also reads the CPU time of each process from /proc (the daemon's event-loop thread
and its other threads, i.e. the journal's, apart), so the report shows where the time goes.

``--profile-daemon FILE`` runs the daemon under cProfile (main thread only, i.e. the event loop,
not the journal thread) and prints its top functions; the figures of such a run are not
representative.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pstats
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kassad.daemon.client import KassadClient
from kassad.daemon.config import BrokerConfig
from kassad.simulators.broker import MosquittoBroker, find_mosquitto

HOST = "127.0.0.1"
STORE, REGISTER = "S1", "R1"
REQ_TOPIC = "bench/echo/req"
RES_TOPIC = "bench/echo/res"
PAYMENT = {"kind": "other", "payment_type": "card", "amount": {"amount": 100, "currency": "SEK"}}
# Debian's packaged mosquitto logs these; the test fixture's "log_type all" writes a line per
# packet, which a production broker does not (--broker-log all restores it).
DEFAULT_LOG_TYPES = "log_type none\n" + "\n".join(
    f"log_type {t}" for t in ("error", "warning", "notice", "information"))
ROW_BODY = "x" * 600  # about the size of one journaled event body
# As the daemon's MqttLink does: without it a small packet written right after another waits
# for the peer's delayed ACK (Nagle), ~40 ms per hop, and the baseline would measure that.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
SCRIPT = Path(__file__).resolve()


@dataclass
class Counts:
    inserts: int
    echo: int
    echo_sustained: int
    seq: int
    sustained: int
    warmup: int
    cap_s: float  # no phase runs longer than this, whatever its count


FULL = Counts(inserts=2000, echo=1000, echo_sustained=4000, seq=1000, sustained=2000,
              warmup=50, cap_s=20.0)
QUICK = Counts(inserts=200, echo=100, echo_sustained=300, seq=100, sustained=200,
               warmup=10, cap_s=5.0)


@dataclass
class Sample:
    """One measured phase: how many operations, in how long, and each one's latency (s)."""

    count: int
    elapsed: float
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process/thread

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    def pct(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1] * 1000

    def describe(self) -> str:
        return (f"{self.count} in {self.elapsed:.2f} s = {self.rate:,.0f}/s; "
                f"p50 {self.pct(50):.2f} ms, p99 {self.pct(99):.2f} ms")

    def cpu_per_op(self) -> str:
        """CPU milliseconds per operation by process, and their sum against the wall time."""
        if not self.cpu or not self.count:
            return ""
        parts = [f"{name} {seconds / self.count * 1000:.2f}" for name, seconds in self.cpu.items()]
        total = sum(self.cpu.values()) / self.count * 1000
        wall = self.elapsed / self.count * 1000
        return (f"CPU ms/op: {', '.join(parts)}; sum {total:.2f} of {wall:.2f} wall "
                f"({sum(self.cpu.values()) / self.elapsed:.2f} cores busy)")


TICK = os.sysconf("SC_CLK_TCK")
Meter = Callable[[], dict[str, float]]


def _stat_cpu(stat: Path) -> float:
    """utime + stime of a /proc stat file, in seconds (0 if the process is gone)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_meter(**pids: int | None) -> Meter:
    """CPU seconds so far of each named process; for ``daemon`` the event-loop (main) thread
    and the other threads (the journal's) apart. Linux /proc, 10 ms resolution."""
    def read() -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pid in pids.items():
            if pid is None:
                continue
            total = _stat_cpu(Path(f"/proc/{pid}/stat"))
            if name == "daemon":
                loop = _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))
                out["daemon loop"], out["daemon journal+other"] = loop, total - loop
            else:
                out[name] = total
        return out
    return read


async def run_senders(op: Callable[[], Awaitable[Any]], total: int, senders: int,
                      cap_s: float, meter: Meter | None = None) -> Sample:
    """``total`` calls of ``op`` spread over ``senders`` tasks (stops early at ``cap_s``)."""
    remaining = total
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + cap_s

    async def sender() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            t0 = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - t0)

    before = meter() if meter else {}
    await asyncio.gather(*(sender() for _ in range(senders)))
    elapsed = time.perf_counter() - start
    after = meter() if meter else {}
    return Sample(len(latencies), elapsed, latencies,
                  {k: after[k] - before.get(k, 0.0) for k in after})


# -- A: bare fsync'd inserts -----------------------------------------------------------------


def bench_inserts(folder: Path, count: int, cap_s: float) -> Sample:
    db = sqlite3.connect(folder / "bare.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        mode = db.execute("PRAGMA synchronous").fetchone()[0]
        assert mode == 2, f"synchronous is {mode}, not FULL (2)"
        db.execute("CREATE TABLE rows (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        latencies: list[float] = []
        start = time.perf_counter()
        deadline = start + cap_s
        for _ in range(count):
            t0 = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO rows(body) VALUES (?)", (ROW_BODY,))
            db.execute("COMMIT")
            latencies.append(time.perf_counter() - t0)
            if t0 > deadline:
                break
        return Sample(len(latencies), time.perf_counter() - start, latencies)
    finally:
        db.close()


# -- B: bare MQTT request/response -----------------------------------------------------------


def mqtt_client(port: int, identifier: str) -> aiomqtt.Client:
    client = aiomqtt.Client(HOST, port, identifier=identifier,
                            protocol=aiomqtt.ProtocolVersion.V5, socket_options=NODELAY)
    client.pending_calls_threshold = 1000
    return client


async def echo_server(port: int) -> None:
    """The other end of baseline B (run in its own process): answer each request
    ``replies`` times on its Response Topic, awaiting each PUBACK as the daemon does."""
    async with mqtt_client(port, "bench-echo") as client:
        await client.subscribe(REQ_TOPIC, qos=1)
        print("ready", flush=True)
        async for message in client.messages:
            request = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            props: Any = message.properties
            out = Properties(PacketTypes.PUBLISH)
            out.CorrelationData = props.CorrelationData
            for phase in range(int(request["replies"])):
                await client.publish(props.ResponseTopic,
                                     json.dumps({"id": request["id"], "phase": phase}),
                                     qos=1, properties=out)


class EchoRequester:
    """This side of baseline B: publish a request and wait for all its replies."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._pending: dict[bytes, tuple[list[int], asyncio.Future[None]]] = {}

    async def listen(self) -> None:
        async for message in self._client.messages:
            props: Any = message.properties
            entry = self._pending.get(bytes(props.CorrelationData))
            if entry is None:
                continue
            left, done = entry
            left[0] -= 1
            if left[0] == 0 and not done.done():
                done.set_result(None)

    async def request(self, replies: int) -> None:
        corr = uuid.uuid4().bytes
        done = asyncio.get_running_loop().create_future()
        self._pending[corr] = ([replies], done)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = RES_TOPIC
        props.CorrelationData = corr
        props.MessageExpiryInterval = 60
        try:
            await self._client.publish(REQ_TOPIC, json.dumps({"id": corr.hex(),
                                                               "replies": replies}),
                                       qos=1, properties=props)
            async with asyncio.timeout(30):
                await done
        finally:
            self._pending.pop(corr, None)


@contextlib.asynccontextmanager
async def child(argv: list[str], log: Path, ready_line: bytes | None = None,
                ) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess for the duration of the block; SIGTERM (then SIGKILL) at the end."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if ready_line else out, stderr=out)
    try:
        if ready_line is not None:
            assert proc.stdout is not None
            async with asyncio.timeout(15):
                line = await proc.stdout.readline()
            if line.strip() != ready_line:
                raise RuntimeError(f"{argv[1:]} did not start: {line!r}; see {log}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def bench_echo(broker: MosquittoBroker, work: Path, counts: Counts,
                     senders: int) -> dict[str, Sample]:
    port = broker.port
    argv = [sys.executable, str(SCRIPT), "--echo-server", str(port)]
    async with (child(argv, work / "echo.log", ready_line=b"ready") as echo,
                mqtt_client(port, "bench-requester") as client):
        meter = cpu_meter(requester=os.getpid(), echo=echo.pid, broker=broker.pid)
        await client.subscribe(RES_TOPIC, qos=1)
        requester = EchoRequester(client)
        listener = asyncio.create_task(requester.listen())
        try:
            await run_senders(lambda: requester.request(2), counts.warmup, 1, counts.cap_s)
            one = await run_senders(lambda: requester.request(1), counts.echo, 1, counts.cap_s,
                                    meter)
            two = await run_senders(lambda: requester.request(2), counts.echo, 1, counts.cap_s,
                                    meter)
            many = await run_senders(lambda: requester.request(2), counts.echo_sustained,
                                     senders, counts.cap_s, meter)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    return {"echo1": one, "echo2": two, "echo2_many": many}


# -- C: the register daemon ------------------------------------------------------------------


def write_register_config(path: Path, port: int, journal: Path) -> Path:
    # No configured consumers: each event is still published once on evt, but nothing waits
    # for an ack (with a consumer configured and none running, resends would pile up).
    path.write_text(f"""store = "{STORE}"
register = "{REGISTER}"

[broker]
host = "{HOST}"
port = {port}

[journal]
path = {json.dumps(str(journal))}

[delivery]
consumers = []

[money]
base_currency = "SEK"
accepted = ["SEK"]
""", encoding="utf-8")
    return path


async def wait_online(port: int, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    """Until the register's retained status says online (it is subscribed by then)."""
    status = f"kassad/v1/{STORE}/{REGISTER}/status"
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with mqtt_client(port, "bench-status") as client:
                    await client.subscribe(status, qos=1)
                    async for message in client.messages:
                        if json.loads(bytes(message.payload)).get("online"):  # type: ignore[arg-type]
                            return
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)


async def bench_daemon(broker_proc: MosquittoBroker, work: Path, counts: Counts, senders: int,
                       profile: Path | None) -> dict[str, Any]:
    port = broker_proc.port
    journal = work / "journal.db"
    config = write_register_config(work / "register.toml", port, journal)
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "cProfile", "-o", str(profile)]
    argv = [*prefix, "-m", "kassad.daemon", "--log-level", "INFO", "run", "--config", str(config)]
    log = work / "daemon.log"
    duplicates = 0

    async def payment(client: KassadClient) -> None:
        nonlocal duplicates
        result = await client.send("payment.record", PAYMENT)
        duplicates += result.duplicate

    try:
        async with child(argv, log) as proc:
            await wait_online(port)
            meter = cpu_meter(client=os.getpid(), daemon=proc.pid, broker=broker_proc.pid)
            broker = BrokerConfig(host=HOST, port=port)
            # Long retry intervals: a resend would be a duplicate, not a new command.
            async with KassadClient(broker, store=STORE, register=REGISTER, requester="bench",
                                    ttl=120, retry_interval=30, result_retry_interval=30,
                                    ) as client:
                await client.wait_connected()
                await client.send("session.open",
                                  {"starting_float": {"amount": 100000, "currency": "SEK"}})
                await run_senders(lambda: payment(client), counts.warmup, 1, counts.cap_s)
                seq = await run_senders(lambda: payment(client), counts.seq, 1, counts.cap_s,
                                        meter)
                many = await run_senders(lambda: payment(client), counts.sustained, senders,
                                         counts.cap_s, meter)
            if proc.returncode is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}")
    except Exception:
        print(f"--- daemon log tail ({log}) ---", file=sys.stderr)
        print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        raise
    return {"seq": seq, "many": many, "duplicates": duplicates,
            "journal": journal_summary(journal), "verify": verify_journal(journal)}


def journal_summary(journal: Path) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        commands = dict(db.execute("SELECT status, count(*) FROM commands GROUP BY status"))
        events = dict(db.execute("SELECT type, count(*) FROM events GROUP BY type"))
        body = db.execute("SELECT avg(length(body)) FROM events WHERE type = 'payment.recorded'"
                          ).fetchone()[0]
    finally:
        db.close()
    return {"commands": commands, "events": events, "payment_body_bytes": body}


def verify_journal(journal: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "kassad.daemon", "journal", "verify",
                           "--journal", str(journal)], capture_output=True, text=True,
                          timeout=60, check=False)
    text = (done.stdout + done.stderr).strip().splitlines()
    return f"exit {done.returncode}: {text[-1] if text else ''}"


# -- report ----------------------------------------------------------------------------------


def filesystem_of(path: Path) -> str:
    where, best = str(path.resolve()), ("", "?", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount, fstype = line.split()[:3]
            inside = where == mount or where.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]):
                best = (mount, fstype, dev)
    return f"{best[1]} ({best[2]} on {best[0]})"


def mosquitto_version() -> str:
    done = subprocess.run([str(find_mosquitto()), "-h"], capture_output=True, text=True,
                          timeout=10, check=False)
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else "?"


def report(inserts: Sample, echo: dict[str, Sample], daemon: dict[str, Any], senders: int,
           work: Path, broker_log: str, quick: bool) -> None:
    seq, many = daemon["seq"], daemon["many"]
    e1, e2, e2m = echo["echo1"], echo["echo2"], echo["echo2_many"]
    ceiling = inserts.rate / 2
    rows: list[tuple[str, str, str, float]] = [
        (f"durable commands/s, sustained ({senders} senders)", f"{many.rate:,.0f}/s",
         f"bare fsync'd inserts {inserts.rate:,.0f}/s", many.rate / inserts.rate),
        ("", "", f"2-commit ceiling (inserts/2) {ceiling:,.0f}/s", many.rate / ceiling),
        ("", "", f"bare MQTT echo, 2 replies, {senders} senders {e2m.rate:,.0f}/s",
         many.rate / e2m.rate),
        ("durable commands/s, sequential", f"{seq.rate:,.0f}/s",
         f"bare fsync'd inserts {inserts.rate:,.0f}/s", seq.rate / inserts.rate),
        ("", "", f"bare MQTT echo, 2 replies, sequential {e2.rate:,.0f}/s", seq.rate / e2.rate),
        ("command latency p50, sequential", f"{seq.pct(50):.2f} ms",
         f"bare MQTT round trip p50 {e1.pct(50):.2f} ms", seq.pct(50) / e1.pct(50)),
        ("", "", f"… with 2 replies p50 {e2.pct(50):.2f} ms", seq.pct(50) / e2.pct(50)),
        ("", "", f"fsync'd commit p50 {inserts.pct(50):.2f} ms x2",
         seq.pct(50) / (2 * inserts.pct(50))),
        ("command latency p99, sequential", f"{seq.pct(99):.2f} ms",
         f"bare MQTT round trip p99 {e1.pct(99):.2f} ms", seq.pct(99) / e1.pct(99)),
        ("", "", f"… with 2 replies p99 {e2.pct(99):.2f} ms", seq.pct(99) / e2.pct(99)),
        (f"command latency p50, {senders} senders", f"{many.pct(50):.2f} ms",
         f"bare MQTT echo p50, {senders} senders {e2m.pct(50):.2f} ms",
         many.pct(50) / e2m.pct(50)),
        (f"command latency p99, {senders} senders", f"{many.pct(99):.2f} ms",
         f"bare MQTT echo p99, {senders} senders {e2m.pct(99):.2f} ms",
         many.pct(99) / e2m.pct(99)),
    ]
    print()
    note = " (--quick: counts cut, not representative)" if quick else ""
    print(f"kassad durable command benchmark{note}")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()} "
          f"({platform.python_implementation()}), {mosquitto_version()}, "
          f"{platform.system()} {platform.release()}")
    print(f"temp dir {work}: {filesystem_of(work)}; broker log: {broker_log}")
    print()
    widths = (44, 12, 50)
    head = ("figure", "value", "baseline", "ratio")
    print(f"{head[0]:<{widths[0]}} {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}} {head[3]:>6}")
    print("-" * (sum(widths) + 10))
    for figure, value, baseline, ratio in rows:
        print(f"{figure:<{widths[0]}} {value:>{widths[1]}}  {baseline:<{widths[2]}} {ratio:6.2f}")
    print()
    print("ratio = value / baseline. Each command costs two journal commits (the write-ahead")
    print("intent, then the result with its event), both synchronous=FULL, so the ceiling is")
    print("about half the bare insert rate; it also costs two QoS 1 replies (ack, result).")
    if inserts.pct(50) < 0.5:
        print(f"Note: a commit costs only {inserts.pct(50):.2f} ms here, so this disk acknowledges "
              "flushes from a")
        print("cache (usual in VMs). On a register's SSD or eMMC a flush takes ~1-20 ms, and the")
        print("two commits per command would then dominate.")
    print()
    print("raw figures:")
    print(f"  A  bare fsync'd inserts (WAL, synchronous=FULL, 1 row/commit): {inserts.describe()}")
    print(f"  B  bare MQTT round trip, 1 reply, sequential:   {e1.describe()}")
    print(f"  B  bare MQTT round trip, 2 replies, sequential: {e2.describe()}")
    print(f"  B  bare MQTT round trip, 2 replies, {senders} senders: {e2m.describe()}")
    print(f"  C  payment.record, sequential:                 {seq.describe()}")
    print(f"  C  payment.record, {senders} senders:               {many.describe()}")
    print("where the time goes (CPU per operation, from /proc; this machine has "
          f"{os.cpu_count()} cores for client, broker and server together):")
    for label, sample in (("B 2 replies, sequential", e2), (f"B 2 replies, {senders} senders", e2m),
                          ("C sequential", seq), (f"C {senders} senders", many)):
        print(f"  {label:<26} {sample.cpu_per_op()}")
    j = daemon["journal"]
    print(f"  journal: commands {j['commands']}, events {j['events']}, "
          f"payment event body {j['payment_body_bytes'] or 0:.0f} bytes; "
          f"replies marked duplicate: {daemon['duplicates']}")
    print(f"  kassad journal verify: {daemon['verify']}")


def print_profile(path: Path) -> None:
    if not path.exists():
        print(f"no profile written to {path}")
        return
    print(f"\ndaemon profile (event-loop thread only), {path}:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(25)


# -- main ------------------------------------------------------------------------------------


async def bench_network(args: argparse.Namespace, counts: Counts, work: Path,
                        broker_log: str) -> tuple[dict[str, Sample], dict[str, Any]]:
    extra = DEFAULT_LOG_TYPES if broker_log == "default" else ""
    # SIGTERM cancels this task like Ctrl-C does, so the subprocesses and the broker are
    # stopped by the context managers below and the temp dir is removed.
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    with MosquittoBroker(work / "broker", extra_config=extra) as broker:
        print(f"B: bare MQTT round trips through mosquitto on {HOST}:{broker.port} …",
              flush=True)
        echo = await bench_echo(broker, work, counts, args.senders)
        print("C: the register daemon (kassad run, subprocess) …", flush=True)
        daemon = await bench_daemon(broker, work, counts, args.senders,
                                    args.profile_daemon)
    return echo, daemon


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="cut counts for a smoke run")
    parser.add_argument("--senders", type=int, default=8,
                        help="concurrent senders in the sustained runs (default 8)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="make the temp dir here (default: the system temp dir); its "
                             "filesystem is where both the journal and baseline A fsync")
    parser.add_argument("--broker-log", choices=["default", "all"], default="default",
                        help="mosquitto log_type: Debian's default set, or every packet")
    parser.add_argument("--profile-daemon", type=Path, default=None, metavar="FILE",
                        help="run the daemon under cProfile, save and summarise the stats")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--echo-server", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.echo_server is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(echo_server(args.echo_server))
        return 0

    counts = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    if args.profile_daemon is not None:
        args.profile_daemon = args.profile_daemon.resolve()
    work = Path(tempfile.mkdtemp(prefix="kassad-bench-", dir=args.dir))
    started = time.perf_counter()
    try:
        print(f"A: {counts.inserts} bare fsync'd SQLite commits in {work} …", flush=True)
        inserts = bench_inserts(work, counts.inserts, counts.cap_s)
        echo, daemon = asyncio.run(bench_network(args, counts, work, args.broker_log))
        report(inserts, echo, daemon, args.senders, work, args.broker_log, args.quick)
        if args.profile_daemon is not None:
            print_profile(args.profile_daemon)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
