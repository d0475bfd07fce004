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
   result with its event), so one at a time the ceiling is about half of A; commands queued
   together share their two commits (group commit).

``--flush-ms MS`` runs it all with every fsync/fdatasync MS ms slower (an LD_PRELOAD library,
common.slow_flush_library), the disk of a register rather than of this VM.

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
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from common import (
    DEFAULT_LOG_TYPES,
    HOST,
    REGISTER,
    STORE,
    Meter,
    Row,
    cancel_on_sigterm,
    child,
    cpu_meter,
    cpu_spent,
    filesystem_of,
    flush_delay_ms,
    machine,
    mqtt_client,
    print_profile,
    print_table,
    print_tail,
    reexec_with_slow_flush,
    register_config,
    run_in_temp_dir,
    timed_commits,
)
from common import Sample as BaseSample
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kassad.daemon.client import KassadClient
from kassad.daemon.config import BrokerConfig
from kassad.simulators.broker import MosquittoBroker

REQ_TOPIC = "bench/echo/req"
RES_TOPIC = "bench/echo/res"
PAYMENT = {"kind": "other", "payment_type": "card", "amount": {"amount": 100, "currency": "SEK"}}
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
class Sample(BaseSample):
    """One measured phase (see common.Sample), with its rate."""

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    def describe(self) -> str:
        return (f"{self.count} in {self.elapsed:.2f} s = {self.rate:,.0f}/s; "
                f"p50 {self.pct(50):.2f} ms, p99 {self.pct(99):.2f} ms")


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
    return Sample(len(latencies), elapsed, latencies, cpu_spent(before, after))


# -- A: bare fsync'd inserts -----------------------------------------------------------------


def bench_inserts(folder: Path, count: int, cap_s: float) -> Sample:
    latencies, elapsed = timed_commits(folder, count, cap_s)
    return Sample(len(latencies), elapsed, latencies)


# -- B: bare MQTT request/response -----------------------------------------------------------


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
    path.write_text(register_config(port, journal), encoding="utf-8")
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
                                    employee="bench", ttl=120, retry_interval=30,
                                    result_retry_interval=30,
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
        print_tail(log)
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


def report(inserts: Sample, echo: dict[str, Sample], daemon: dict[str, Any], senders: int,
           work: Path, broker_log: str, quick: bool) -> None:
    seq, many = daemon["seq"], daemon["many"]
    e1, e2, e2m = echo["echo1"], echo["echo2"], echo["echo2_many"]
    ceiling = inserts.rate / 2
    rows: list[Row] = [
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
    print(machine())
    print(f"temp dir {work}: {filesystem_of(work)}; broker log: {broker_log}")
    if flush_delay_ms():
        print(f"every fsync/fdatasync of this run {flush_delay_ms():g} ms slower (--flush-ms): "
              "a register's eMMC or SD card")
    print()
    print_table(rows, (44, 12, 50), 6)
    print()
    print("ratio = value / baseline. Each command costs two journal commits (the write-ahead")
    print("intent, then the result with its event), both synchronous=FULL, so one at a time the")
    print("ceiling is about half the bare insert rate; commands queued together share their two")
    print("commits (group commit). Each also costs two QoS 1 replies (ack, result).")
    if inserts.pct(50) < 0.5 and not flush_delay_ms():
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


def figures(inserts: Sample, echo: dict[str, Sample], daemon: dict[str, Any]) -> dict[str, Any]:
    """The run's figures as JSON: rate, p50, p99 (ms) and count of each phase."""
    def of(sample: Sample) -> dict[str, float]:
        return {"rate": sample.rate, "p50": sample.pct(50), "p99": sample.pct(99),
                "count": sample.count}
    return {"flush_ms": flush_delay_ms(), "inserts": of(inserts),
            **{name: of(sample) for name, sample in echo.items()},
            "seq": of(daemon["seq"]), "many": of(daemon["many"]), "verify": daemon["verify"]}


# -- main ------------------------------------------------------------------------------------


async def bench_network(args: argparse.Namespace, counts: Counts, work: Path,
                        broker_log: str) -> tuple[dict[str, Sample], dict[str, Any]]:
    extra = DEFAULT_LOG_TYPES if broker_log == "default" else ""  # "all": every packet
    cancel_on_sigterm()
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
    parser.add_argument("--flush-ms", type=float, default=None, metavar="MS",
                        help="make every fsync/fdatasync of this run (the baseline's and the "
                             "daemon's) MS milliseconds slower, as on a register's eMMC or SD "
                             "card (an LD_PRELOAD library built with gcc)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the figures to FILE (for python -m bench)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--echo-server", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flush_ms:
        reexec_with_slow_flush(args.flush_ms)

    if args.echo_server is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(echo_server(args.echo_server))
        return 0

    counts = QUICK if args.quick else FULL
    if args.profile_daemon is not None:
        args.profile_daemon = args.profile_daemon.resolve()

    def run(work: Path) -> None:
        print(f"A: {counts.inserts} bare fsync'd SQLite commits in {work} …", flush=True)
        inserts = bench_inserts(work, counts.inserts, counts.cap_s)
        echo, daemon = asyncio.run(bench_network(args, counts, work, args.broker_log))
        report(inserts, echo, daemon, args.senders, work, args.broker_log, args.quick)
        if args.json is not None:
            args.json.write_text(json.dumps(figures(inserts, echo, daemon)))
        if args.profile_daemon is not None:
            print_profile(args.profile_daemon)

    return run_in_temp_dir("kassad-bench-", args.dir, args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
