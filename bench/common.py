"""What the benchmarks in this folder share: samples and percentiles, CPU time from /proc, the
MQTT client they measure with, the bare fsync'd commit baseline, the register's configuration,
subprocess and temp-dir handling, and the machine description and table of the report.

The benchmarks run as scripts (``python bench/bench_x.py``), so this folder is ``sys.path[0]``
and they import this module as ``common``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import aiomqtt

from kassad.simulators.broker import find_mosquitto

HOST = "127.0.0.1"
STORE, REGISTER = "S1", "R1"
# Debian's packaged mosquitto logs these; the test fixture's "log_type all" writes a line per
# packet, which a production broker does not.
DEFAULT_LOG_TYPES = "log_type none\n" + "\n".join(
    f"log_type {t}" for t in ("error", "warning", "notice", "information"))
# As the daemon's MqttLink does: without it a small packet written right after another waits
# for the peer's delayed ACK (Nagle), ~40 ms per hop, and the baseline would measure that.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
ROW_BODY = "x" * 600  # about the size of one journaled event body

# figure, value, baseline, ratio (value / baseline)
Row = tuple[str, str, str, float]


# -- samples ---------------------------------------------------------------------------------


def nearest_rank(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0-100) of ``values``; NaN if there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Sample:
    """One measured phase: how many operations, in how long, each one's latency (s) and the
    CPU seconds each process spent meanwhile. Each benchmark adds its own ``describe()``."""

    #: What one operation is called in :meth:`cpu_per_op` ("CPU ms/op").
    unit: ClassVar[str] = "op"

    count: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def pct(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        return nearest_rank(self.latencies, p) * 1000

    def cpu_per_op(self) -> str:
        """CPU milliseconds per operation by process, and their sum against the wall time."""
        if not self.cpu or not self.count:
            return ""
        parts = [f"{name} {seconds / self.count * 1000:.2f}" for name, seconds in self.cpu.items()]
        total = sum(self.cpu.values())
        return (f"CPU ms/{self.unit}: {', '.join(parts)}; sum {total / self.count * 1000:.2f} of "
                f"{self.elapsed / self.count * 1000:.2f} wall "
                f"({total / self.elapsed:.2f} cores busy)")


# -- CPU from /proc --------------------------------------------------------------------------

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


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process between two readings of a :data:`Meter`."""
    return {k: after[k] - before.get(k, 0.0) for k in after}


# -- what is measured ------------------------------------------------------------------------


def mqtt_client(port: int, identifier: str) -> aiomqtt.Client:
    """An MQTT 5 client of the broker on HOST:``port``, with TCP_NODELAY as the daemon's."""
    client = aiomqtt.Client(HOST, port, identifier=identifier,
                            protocol=aiomqtt.ProtocolVersion.V5, socket_options=NODELAY)
    client.pending_calls_threshold = 1000
    return client


def bare_db(path: Path) -> sqlite3.Connection:
    """A fresh SQLite file set up as the journal's: WAL, ``synchronous=FULL``."""
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    mode = db.execute("PRAGMA synchronous").fetchone()[0]
    assert mode == 2, f"synchronous is {mode}, not FULL (2)"
    db.execute("CREATE TABLE rows (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    return db


def bare_commit(db: sqlite3.Connection) -> None:
    """One row in its own fsync'd transaction, as the journal commits an intent."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO rows(body) VALUES (?)", (ROW_BODY,))
    db.execute("COMMIT")


def timed_commits(folder: Path, count: int, cap_s: float = math.inf) -> tuple[list[float], float]:
    """``count`` bare fsync'd SQLite commits (WAL, ``synchronous=FULL``, one row each, as the
    journal makes them) in ``folder``, stopping early after ``cap_s``: each commit's latency
    and the elapsed time, in seconds."""
    db = bare_db(folder / "bare.db")
    try:
        latencies: list[float] = []
        start = time.perf_counter()
        deadline = start + cap_s
        for _ in range(count):
            t0 = time.perf_counter()
            bare_commit(db)
            latencies.append(time.perf_counter() - t0)
            if t0 > deadline:
                break
        return latencies, time.perf_counter() - start
    finally:
        db.close()


# -- a slower disk -----------------------------------------------------------------------------

#: The environment variable the slow-flush library reads: microseconds added to each flush.
FLUSH_DELAY_ENV = "KASSAD_BENCH_FLUSH_US"

_SLOW_FLUSH_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static long delay_ns = -1;

static void wait_as_a_slow_disk(void) {
    if (delay_ns < 0) {
        const char *us = getenv("KASSAD_BENCH_FLUSH_US");
        delay_ns = us ? atol(us) * 1000L : 0;
    }
    if (delay_ns > 0) {
        struct timespec t = {delay_ns / 1000000000L, delay_ns % 1000000000L};
        nanosleep(&t, NULL);
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    wait_as_a_slow_disk();
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    wait_as_a_slow_disk();
    return rc;
}
"""


def slow_flush_library() -> Path:
    """An ``LD_PRELOAD`` library (built here with gcc, once) that makes every ``fsync`` and
    ``fdatasync`` of a process return ``$KASSAD_BENCH_FLUSH_US`` microseconds later, after the
    real flush: a register's eMMC or SD card (a flush of ~1-20 ms) on a VM disk that
    acknowledges flushes from a cache. It sleeps, so the time costs no CPU, as a device's
    flush does not."""
    folder = Path(tempfile.gettempdir()) / f"kassad-bench-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    library = folder / "slow_flush.so"
    source = folder / "slow_flush.c"
    built = library.exists() and source.exists() and source.read_text() == _SLOW_FLUSH_C
    if not built:
        source.write_text(_SLOW_FLUSH_C)
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            raise RuntimeError("--flush-ms needs a C compiler (gcc) to build its LD_PRELOAD "
                               "library")
        subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(library), str(source),
                        "-ldl"], check=True)
    return library


def reexec_with_slow_flush(delay_ms: float) -> None:
    """Run this script again with every flush ``delay_ms`` slower, in this process and its
    children (the daemon, its baseline): returns only in the re-executed process."""
    if os.environ.get(FLUSH_DELAY_ENV) is not None:
        return
    env = {**os.environ, FLUSH_DELAY_ENV: str(round(delay_ms * 1000)),
           "LD_PRELOAD": str(slow_flush_library())}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def flush_delay_ms() -> float:
    """The flush delay this process runs with (0: the disk as it is)."""
    return int(os.environ.get(FLUSH_DELAY_ENV, "0")) / 1000


def register_config(port: int, journal: Path, broker_extra: str = "") -> str:
    """The TOML of a bench register (STORE/REGISTER, SEK) on the broker at HOST:``port``, its
    journal at ``journal``; ``broker_extra`` lines go into ``[broker]``. Device sections may be
    appended. No configured consumers: each event is still published once on evt, but nothing
    waits for an ack (with a consumer configured and none running, resends would pile up)."""
    return f"""store = "{STORE}"
register = "{REGISTER}"

[broker]
host = "{HOST}"
port = {port}
{broker_extra}
[journal]
path = {json.dumps(str(journal))}

[delivery]
consumers = []

[money]
base_currency = "SEK"
accepted = ["SEK"]
"""


# -- processes -------------------------------------------------------------------------------


async def stop_process(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


def print_tail(log: Path) -> None:
    """The last 30 lines of the daemon's log, on stderr."""
    print(f"--- daemon log tail ({log}) ---", file=sys.stderr)
    print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)


def cancel_on_sigterm() -> None:
    """SIGTERM cancels the running task as Ctrl-C does, so the context managers stop the
    subprocesses and the broker, and the temp dir is removed."""
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)


def run_in_temp_dir(prefix: str, parent: Path | None, keep: bool,
                    body: Callable[[Path], None]) -> int:
    """``body(work)`` in a fresh temp dir (in ``parent``), removed afterwards unless ``keep``;
    then the total time. SIGTERM and Ctrl-C clean up the same way and exit 130."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    started = time.perf_counter()
    try:
        body(work)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal time {time.perf_counter() - started:.1f} s")
    return 0


# -- report ----------------------------------------------------------------------------------


def mosquitto_version() -> str:
    """The first line of ``mosquitto -h`` ("mosquitto version 2.0.11")."""
    done = subprocess.run([str(find_mosquitto()), "-h"], capture_output=True, text=True,
                          timeout=10, check=False)
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else "?"


def filesystem_of(path: Path) -> str:
    """The filesystem ``path`` is on, from /proc/mounts: "ext4 (/dev/vda on /)"."""
    where, best = str(path.resolve()), ("", "?", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount, fstype = line.split()[:3]
            inside = where == mount or where.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]):
                best = (mount, fstype, dev)
    return f"{best[1]} ({best[2]} on {best[0]})"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else platform.processor())."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def machine(with_cpu_model: bool = False) -> str:
    """The report's "machine: …" line: cores, Python, mosquitto, kernel."""
    model = f" ({cpu_model()})" if with_cpu_model else ""
    return (f"machine: {os.cpu_count()} cores{model}, Python {platform.python_version()} "
            f"({platform.python_implementation()}), {mosquitto_version()}, "
            f"{platform.system()} {platform.release()}")


def print_table(rows: list[Row], widths: tuple[int, int, int], ratio_width: int,
                precise_below: float = 0.0) -> None:
    """The report's table: figure, value, baseline, ratio; a ratio under ``precise_below``
    gets 4 decimals instead of 2."""
    head = ("figure", "value", "baseline", "ratio")
    print(f"{head[0]:<{widths[0]}} {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}} "
          f"{head[3]:>{ratio_width}}")
    print("-" * (sum(widths) + 4 + ratio_width))
    for figure, value, baseline, ratio in rows:
        digits = 4 if ratio < precise_below else 2
        print(f"{figure:<{widths[0]}} {value:>{widths[1]}}  {baseline:<{widths[2]}} "
              f"{ratio:{ratio_width}.{digits}f}")


def print_profile(path: Path, tottime: int = 20, cumulative: int = 25) -> None:
    """The daemon's cProfile stats: the top functions by own time, then by cumulative time."""
    if not path.exists():
        print(f"no profile written to {path}")
        return
    print(f"\ndaemon profile (event-loop thread only), {path}:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(tottime)
    stats.sort_stats("cumulative").print_stats(cumulative)


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
        await stop_process(proc, 20)
