"""The whole benchmark suite in one run and one table: ``.venv/bin/python -m bench``.

    .venv/bin/python -m bench            # full run, about 7 minutes on 2 cores
    .venv/bin/python -m bench --quick    # smoke run, about a minute

It runs the measuring code of the four scripts of this folder (bench_commands, bench_devices,
bench_store, bench_daemon; each still runs alone, with its own longer report) one after the
other in one temp dir, each with its own mosquitto, and prints one table: each figure, its
baseline measured in the same run, the ratio (value / baseline) and the number of samples.
Not part of the test command (scripts/test); bench/README.md explains each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# The scripts import their shared module as ``common`` (they run with this folder first on
# sys.path); so does the suite.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_commands
import bench_daemon
import bench_devices
import bench_store
from common import cpu_model, filesystem_of, mosquitto_version, run_in_temp_dir

# figure, value, baseline, ratio, samples
Line = tuple[str, str, str, str, str]


def ram() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    return "RAM ?"


def ratio(*pairs: tuple[float, float]) -> str:
    return " / ".join(f"{a / b:.2f}" if b else "?" for a, b in pairs)


# -- the sections ------------------------------------------------------------------------------


def commands(work: Path, quick: bool) -> tuple[list[Line], list[str]]:
    counts = bench_commands.QUICK if quick else bench_commands.FULL
    args = argparse.Namespace(senders=8, profile_daemon=None)
    inserts = bench_commands.bench_inserts(work, counts.inserts, counts.cap_s)
    echo, daemon = asyncio.run(bench_commands.bench_network(args, counts, work, "default"))
    seq, many, e2 = daemon["seq"], daemon["many"], echo["echo2"]
    return [
        ("payment.record → result p50 / p99, one at a time",
         f"{seq.pct(50):.2f} / {seq.pct(99):.2f} ms",
         f"bare MQTT request → 2 replies {e2.pct(50):.2f} / {e2.pct(99):.2f} ms",
         ratio((seq.pct(50), e2.pct(50)), (seq.pct(99), e2.pct(99))),
         f"{seq.count} / {e2.count}"),
        ("", "", f"bare fsync'd commit {inserts.pct(50):.2f} / {inserts.pct(99):.2f} ms",
         ratio((seq.pct(50), inserts.pct(50)), (seq.pct(99), inserts.pct(99))),
         f"{inserts.count}"),
        ("durable payment.record/s, 8 senders", f"{many.rate:,.0f}/s",
         f"bare fsync'd inserts {inserts.rate:,.0f}/s", ratio((many.rate, inserts.rate)),
         f"{many.count} / {inserts.count}"),
    ], [f"commands: kassad journal verify {daemon['verify']}"]


#: The flush time of a register's eMMC or SD card that the second commands run emulates.
SLOW_FLUSH_MS = 2.0


def commands_slow_flush(work: Path, quick: bool) -> tuple[list[Line], list[str]]:
    """The durable command rate again, with every fsync SLOW_FLUSH_MS slower (bench_commands'
    --flush-ms, in its own process: an LD_PRELOAD library applies to the whole process)."""
    out = work / "figures.json"
    argv = [sys.executable, str(Path(__file__).resolve().parent / "bench_commands.py"),
            "--flush-ms", str(SLOW_FLUSH_MS), "--dir", str(work), "--json", str(out)]
    subprocess.run([*argv, *(["--quick"] if quick else [])], check=True,
                   stdout=subprocess.DEVNULL)
    f = json.loads(out.read_text())
    ins, seq, many = f["inserts"], f["seq"], f["many"]
    flush = f"{SLOW_FLUSH_MS:g} ms flush"
    return [
        (f"durable payment.record/s, 8 senders, {flush}", f"{many['rate']:,.0f}/s",
         f"bare fsync'd inserts, {flush} {ins['rate']:,.0f}/s",
         ratio((many["rate"], ins["rate"])), f"{many['count']} / {ins['count']}"),
        (f"durable payment.record/s, one at a time, {flush}", f"{seq['rate']:,.0f}/s",
         f"bare fsync'd inserts, {flush} {ins['rate']:,.0f}/s",
         ratio((seq["rate"], ins["rate"])), f"{seq['count']} / {ins['count']}"),
    ], [f"commands, {flush} (LD_PRELOAD on fsync/fdatasync): kassad journal verify "
        f"{f['verify']}"]


def devices(work: Path, quick: bool) -> tuple[list[Line], list[str]]:
    counts = bench_devices.QUICK if quick else bench_devices.FULL
    # More 2 KiB receipts over the baud-paced line than the script's default: they are the
    # figure here, and each takes only its wire time (~0.18 s).
    counts = dataclasses.replace(counts, wire_receipts=10 if quick else 40)
    args = argparse.Namespace(transport="serial", baud=115200, no_wire=False,
                              profile_daemon=None, quick=quick)
    r = asyncio.run(bench_devices.bench(args, counts, work))
    floor, idle, loaded, wire = r["floor"], r["idle"], r["loaded"], r.get("wire")
    floor_text = f"MQTT hop + fsync'd commit {floor.pct(50):.2f} / {floor.pct(99):.2f} ms"
    lines: list[Line] = [
        ("drawer.open → kick p50 / p99, printer idle",
         f"{idle.pct(50):.2f} / {idle.pct(99):.2f} ms", floor_text,
         ratio((idle.pct(50), floor.pct(50)), (idle.pct(99), floor.pct(99))),
         f"{len(idle.latencies)} / {len(floor.latencies)}"),
        ("drawer.open → kick p50 / p99, 20 KiB jobs printing",
         f"{loaded.pct(50):.2f} / {loaded.pct(99):.2f} ms", floor_text,
         ratio((loaded.pct(50), floor.pct(50)), (loaded.pct(99), floor.pct(99))),
         f"{len(loaded.latencies)} / {len(floor.latencies)}"),
    ]
    if wire is not None and wire.latencies:
        chunk = 512 * 10 / args.baud * 1000
        lines.append(("… printing on a 115200-baud line, p50 / max",
                      f"{wire.pct(50):.1f} / {wire.pct(100):.1f} ms",
                      f"one 512 B chunk on that wire {chunk:.1f} ms",
                      ratio((wire.pct(50), chunk), (wire.pct(100), chunk)),
                      f"{len(wire.latencies)}"))
    last = r.get("wire_last_byte")
    if last is not None and last.latencies:
        wire_ms = 2048 * 10 / args.baud * 1000
        lines.append(("2 KiB receipt → last byte p50 / p99, 115200 bd",
                      f"{last.pct(50):.1f} / {last.pct(99):.1f} ms",
                      f"2048 B at 115200 baud (8N1) {wire_ms:.1f} ms",
                      ratio((last.pct(50), wire_ms), (last.pct(99), wire_ms)),
                      f"{len(last.latencies)}"))
    notes = [f"devices {label}: {note}" for label, sample in
             (("idle kicks", idle), ("kicks while printing", loaded), ("115200 bd", wire))
             if sample is not None for note in sample.notes]
    return lines, notes


def store(work: Path, quick: bool) -> tuple[list[Line], list[str], str]:
    counts = dataclasses.replace(bench_store.QUICK if quick else bench_store.FULL)
    pg_error = bench_store.postgres_reachable()
    args = argparse.Namespace(runs=["sqlite", "pg", "pg2"], profile_aggregator=None)
    schemas = bench_store.Schemas()
    try:
        streams = bench_store.make_streams(work / "journals", counts)
        results = asyncio.run(bench_store.bench(args, counts, work, streams, schemas, pg_error))
    finally:
        schemas.drop_all()
    bare = max(results["bare"], key=lambda s: s.rate)
    total = counts.registers * counts.per_register
    lines: list[Line] = []
    notes: list[str] = []
    for key, sample in results["ingest"].items():
        mark = "" if sample.complete and not sample.error else " (!)"
        lines.append((f"{bench_store.RUNS[key].label}, 20 registers", f"{sample.rate:,.0f}/s{mark}",
                      f"bare subscriber {bare.rate:,.0f}/s", ratio((sample.rate, bare.rate)),
                      f"{total:,} events"))
        notes.append(f"store {key}: {sample.describe()}; stored {sample.db}")
    for v in results["views"]:
        lines.append((f"month view ({v.rows['start']} sessions), {v.backend}",
                      f"{v.storage_ms['start']:.1f} ms",
                      f"same SQL, bare driver {v.raw_ms['start']:.1f} ms",
                      ratio((v.storage_ms["start"], v.raw_ms["start"])),
                      f"median of {counts.view_runs}"))
    pg = bench_store.postgres_version() if pg_error is None else f"no PostgreSQL: {pg_error}"
    return lines, notes, pg


def daemon(work: Path, quick: bool) -> tuple[list[Line], list[str]]:
    counts = bench_daemon.QUICK if quick else bench_daemon.FULL
    r = asyncio.run(bench_daemon.bench(counts, work))
    n = f"{len(r.starts)} / {len(r.bare_starts)}"
    samples = [n, f"{len(r.restarts)}", "1 / 1", "1", f"{r.events:,} events",
               f"{r.backlog:,} / {r.bare_count:,}", ""]
    lines = [(figure, value, baseline, f"{q:.2f}", s) for (figure, value, baseline, q), s
             in zip(bench_daemon.rows(r), samples, strict=True)]
    return lines, list(bench_daemon.details(r))


# -- the report --------------------------------------------------------------------------------


def print_lines(lines: list[Line]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    head = ("figure", "value", "baseline (same run)", "ratio", "samples")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    for row in (head, *lines):
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  "
              f"{row[3]:>{widths[3]}}  {row[4]:>{widths[4]}}".rstrip())
        if row is head:
            print("-" * (sum(widths) + 8))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="cut counts for a smoke run")
    parser.add_argument("--only", default="commands,devices,store,daemon",
                        type=lambda v: v.split(","), help="sections, comma separated")
    parser.add_argument("--dir", type=Path, default=None,
                        help="make the temp dir here; its filesystem is where the journals "
                             "and the bare commits fsync")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    def run(work: Path) -> None:
        lines: list[Line] = []
        notes: list[str] = []
        pg = "PostgreSQL not used"
        took: dict[str, float] = {}
        for name in args.only:
            folder = work / name
            folder.mkdir()
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            if name == "commands":
                more, extra = commands(folder, args.quick)
                lines += more
                notes += extra
                slow = folder / "slow-flush"
                slow.mkdir()
                more, extra = commands_slow_flush(slow, args.quick)
                lines += more
                notes += extra
            elif name == "devices":
                more, extra = devices(folder, args.quick)
                lines += more
                notes += extra
            elif name == "store":
                more, extra, pg = store(folder, args.quick)
                lines += more
                notes += extra
            elif name == "daemon":
                more, extra = daemon(folder, args.quick)
                lines += more
                notes += extra
            else:
                parser.error(f"unknown section {name}")
            took[name] = time.perf_counter() - t0
        print()
        note = " (--quick: counts cut, not representative)" if args.quick else ""
        print(f"kassad benchmark suite{note}")
        print(f"machine: {os.cpu_count()} cores ({cpu_model()}), {ram()}, Python "
              f"{platform.python_version()}, {mosquitto_version()}, {pg}, "
              f"{platform.system()} {platform.release()}")
        print(f"temp dir {work}: {filesystem_of(work)}; sections (s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in took.items()))
        print()
        print_lines(lines)
        print()
        print("ratio = value / baseline (two ratios: p50 / p99); samples = the value's / the "
              "baseline's; p99 is nearest-rank")
        for line in notes:
            print(f"  {line}")

    return run_in_temp_dir("kassad-bench-suite-", args.dir, args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
