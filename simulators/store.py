"""The demo's whole simulated store on loopback: a Mosquitto broker, two registers (``kassad
run``) each with a receipt printer, its cash drawer and a counter, the store aggregator
(``kassad store``) serving the store view, and a scripted POS at each register.

    store = SimulatedStore(workdir, http_port=8080)
    try:
        await store.start()                      # broker, simulators, the daemons, ready
        await store.run_day(pace=0.5, report=print)
    finally:
        await store.stop(force)                  # in order; ``force`` set: kill what is left

R1 (the café) prints on a TM-T20II over TCP, like a :9100 network printer, and counts coins on
a ccTalk coin acceptor; R2 (the shop) prints on a TM-T88V over a serial line and counts notes
on an SSP note validator. The printers, their drawers and the counters are the project's
simulators, run in this process on TCP ports and ptys; each also serves its control port, so
a person can drive them while the store runs (``kassad sim printer control … paper_out``).

Every child process stays in the demo's process group, so one group kill reaches them all, but
starts with the terminal's signals blocked: Ctrl-C reaches the demo alone, which stops the
registers first (SIGTERM), while the aggregator and the broker still run to take their last
events, then the aggregator, the simulators and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kassad.daemon.client import KassadClient
from kassad.daemon.config import BrokerConfig
from kassad.daemon.ledger.money import exponent
from kassad.drivers.cctalk.frames import EVENT_BUFFER_DEPTH, Header, parse_coin_id
from kassad.simulators.broker import HOST, MosquittoBroker
from kassad.simulators.cctalk import control as cctalk_control
from kassad.simulators.cctalk.bus import CcTalkSimulator
from kassad.simulators.cctalk.devices import SimCoinAcceptor
from kassad.simulators.pos import COINS, DAY, NOTES, ScriptedPos
from kassad.simulators.printer import control as printer_control
from kassad.simulators.printer.device import PrinterSimulator
from kassad.simulators.ssp import control as ssp_control
from kassad.simulators.ssp.device import SspSimulator

STORE = "S0421"
CONSUMER = "store-agg"
CURRENCY = "SEK"
#: Seconds a daemon has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 20.0
#: Seconds to wait for a daemon, a device or the store view to come up.
START_TIMEOUT = 30.0
#: How often the store view is asked while waiting for it to show something.
VIEW_POLL = 0.1
#: Seconds one request to the store view may take (the demo waits for one at exit).
HTTP_TIMEOUT = 5.0
#: The terminal's signals, which only the demo itself should hear.
TERMINAL_SIGNALS = frozenset({signal.SIGINT, signal.SIGHUP})


# -- the layout --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterSpec:
    name: str
    protocol: Literal["cctalk", "ssp"]
    kind: Literal["coin_acceptor", "note_validator"]
    description: str


@dataclass(frozen=True)
class RegisterSpec:
    name: str
    title: str
    printer_model: str
    printer_link: Literal["tcp", "serial"]
    counter: CounterSpec


REGISTERS: tuple[RegisterSpec, ...] = (
    RegisterSpec("R1", "Kassa 1", "TM-T20II", "tcp",
                 CounterSpec(COINS, "cctalk", "coin_acceptor", "ccTalk coin acceptor")),
    RegisterSpec("R2", "Kassa 2", "TM-T88V", "serial",
                 CounterSpec(NOTES, "ssp", "note_validator", "SSP note validator")),
)
#: The simulated printers' paper width in dots, as the models have it.
PRINTER_DOTS = {"TM-T20II": 576, "TM-T88V": 512}


def register_toml(spec: RegisterSpec, *, broker_port: int, journal: Path,
                  printer: dict[str, Any], counter_path: str) -> str:
    """A register's configuration: quick timings, so that the day moves at the POS's pace."""
    if printer["kind"] == "tcp":
        transport = f'{{ kind = "tcp", host = "{HOST}", port = {printer["port"]} }}'
    else:
        transport = f'{{ kind = "serial", path = "{printer["path"]}", baudrate = 115200 }}'
    return f"""\
# {spec.title} of the demo store: written by `kassad demo`.
store = "{STORE}"
register = "{spec.name}"

[broker]
host = "{HOST}"
port = {broker_port}
reconnect_min = 0.1
reconnect_max = 2.0

[journal]
path = "{journal}"

[delivery]
consumers = ["{CONSUMER}"]
resend_after = 1.0

[money]
base_currency = "{CURRENCY}"
accepted = ["{CURRENCY}", "EUR"]

[reports]
language = "sv"
company = "{spec.title}"

[devices.printer]
model = "{spec.printer_model}"
transport = {transport}
status_interval = 0.25

[devices.drawer]
open_level = "high"          # the simulated drawer's switch: pin 3 high when open
# The simulated drawer opens at once; a kick that lands while the pin still pulses from the
# last one is ignored by the printer (as Epson's are) and sent again after open_timeout.
open_timeout = 0.5
left_open_after = 60.0

[[devices.counters]]
name = "{spec.counter.name}"
protocol = "{spec.counter.protocol}"
kind = "{spec.counter.kind}"
path = "{counter_path}"
poll_interval = 0.03
quiet_time = 60.0            # the POS stops each counting run itself
"""


def store_toml(*, broker_port: int, database: Path, http_port: int) -> str:
    return f"""\
# The demo store's aggregator: written by `kassad demo`.
stores = ["{STORE}"]
consumer = "{CONSUMER}"
database = "sqlite://{database}"
reorder_timeout = 1.0

[http]
host = "{HOST}"
port = {http_port}

[broker]
host = "{HOST}"
port = {broker_port}
reconnect_min = 0.1
reconnect_max = 2.0
"""


# -- child processes ---------------------------------------------------------------------------


@contextlib.contextmanager
def terminal_signals_blocked() -> Iterator[None]:
    """Children started inside inherit a signal mask blocking the terminal's signals (the mask
    survives exec): Ctrl-C and a hangup reach the demo alone, which stops them in order."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINAL_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@dataclass
class Child:
    """A daemon this demo started: ``kassad run`` or ``kassad store``."""

    name: str
    log: Path
    proc: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def stop(self, force: asyncio.Event) -> int:
        """SIGTERM and wait for the exit code; SIGKILL after STOP_TIMEOUT or once ``force``."""
        if self.proc.returncode is None:
            self.proc.terminate()
        exited = asyncio.ensure_future(self.proc.wait())
        forced = asyncio.ensure_future(force.wait())
        try:
            await asyncio.wait({exited, forced}, timeout=STOP_TIMEOUT,
                               return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                self.proc.kill()
            return await exited
        finally:
            forced.cancel()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def spawn(name: str, args: Sequence[str], log: Path) -> Child:
    """``python -m kassad.daemon ARGS`` with its output in ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out, terminal_signals_blocked():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kassad.daemon", "--log-level", "INFO", *args,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return Child(name, log, proc)


# -- the store view, as its web page sees it ---------------------------------------------------


class StoreView:
    """The aggregator's JSON API over HTTP."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://{HOST}:{port}"
        self.page = f"{self.base}/?store={STORE}"
        self.api = f"{self.base}/api/v1/stores/{STORE}"

    async def get(self, path: str) -> Any:
        """``GET {api}{path}`` as JSON."""

        def fetch() -> Any:
            with urllib.request.urlopen(self.api + path, timeout=HTTP_TIMEOUT) as reply:  # noqa: S310
                return json.loads(reply.read())

        return await asyncio.to_thread(fetch)

    async def until(self, path: str, check: Callable[[Any], bool], what: str,
                    timeout: float = START_TIMEOUT) -> Any:  # noqa: ASYNC109
        """Ask ``path`` until ``check`` holds for its answer (or the view is not up yet)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(urllib.error.URLError, OSError):  # not up yet
                        view = await self.get(path)
                        if check(view):
                            return view
                    await asyncio.sleep(VIEW_POLL)
        except TimeoutError:
            raise TimeoutError(f"the store view did not show {what} within {timeout:g} s "
                               f"({self.api}{path})") from None

    async def until_alarm(self, register: str, alarm: str) -> None:
        def shown(view: dict[str, Any]) -> bool:
            return any(r["register"] == register and alarm in r["alarms"]
                       for r in view["registers"])

        await self.until("/registers", shown, f"{register}'s {alarm} alarm")


# -- one register's hardware -------------------------------------------------------------------


class RegisterRig:
    """A register's printer with its drawer and its counter, as simulators, and the cashier
    who works them (:class:`kassad.simulators.pos.Cashier`)."""

    def __init__(self, spec: RegisterSpec, folder: Path, receipts: Path, view: StoreView) -> None:
        self.spec = spec
        self.config = folder / "kassad.toml"
        self.journal = folder / "journal.db"
        self.receipts = receipts
        self.view = view
        self.printer = PrinterSimulator(width_dots=PRINTER_DOTS[spec.printer_model],
                                        receipts_dir=receipts)
        self.coins: CcTalkSimulator | None = None
        self.notes: SspSimulator | None = None
        self.printer_at = ""
        self.counter_path = ""
        self.control_ports: dict[str, int] = {}
        self._printer_transport: dict[str, Any] = {}
        self._servers: list[asyncio.Server] = []
        self.process: Child | None = None

    async def start_devices(self) -> None:
        """The printer on its link and the counter on a pty, each with its control port."""
        if self.spec.printer_link == "tcp":
            port = await self.printer.serve_tcp(HOST)
            printer: dict[str, Any] = {"kind": "tcp", "port": port}
            self.printer_at = f"TCP {HOST}:{port}"
        else:
            printer = {"kind": "serial", "path": self.printer.open_pty()}
            self.printer_at = f"serial {printer['path']}"
        await self._control("printer", await printer_control.serve_control(self.printer))
        if self.spec.counter.protocol == "cctalk":
            self.coins = CcTalkSimulator([SimCoinAcceptor()])
            self.counter_path = self.coins.open_pty()
            await self._control("counter", await cctalk_control.serve_control(self.coins))
        else:
            self.notes = SspSimulator()
            self.counter_path = self.notes.open_pty()
            await self._control("counter", await ssp_control.serve_control(self.notes))
        self._printer_transport = printer

    async def _control(self, name: str, server: asyncio.Server) -> None:
        self._servers.append(server)
        self.control_ports[name] = server.sockets[0].getsockname()[1]

    def write_config(self, broker_port: int) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(register_toml(
            self.spec, broker_port=broker_port, journal=self.journal,
            printer=self._printer_transport, counter_path=self.counter_path), encoding="utf-8")

    async def close_devices(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        for sim in (self.printer, self.coins, self.notes):
            if sim is not None:
                await sim.close()

    # -- the cashier ----------------------------------------------------------------------

    async def feed(self, counter: str, currency: str, pieces: Sequence[int]) -> None:
        if self.coins is not None and counter == self.spec.counter.name:
            await self._feed_coins(self.coins, currency, pieces)
        elif self.notes is not None and counter == self.spec.counter.name:
            await self._feed_notes(self.notes, currency, pieces)
        else:
            raise ValueError(f"{self.spec.name} has no counter named {counter!r}")

    async def _feed_coins(self, sim: CcTalkSimulator, currency: str,
                          pieces: Sequence[int]) -> None:
        acceptor = sim.coin_acceptor
        positions = {}
        for position, label in acceptor.ids.items():
            coin = parse_coin_id(label)
            if coin.currency == currency and coin.value_minor is not None:
                positions[coin.value_minor] = position
        wanted = {positions[value] for value in pieces}
        # The run enables the coins it counts; a coin inserted before that would come back.
        await sim.wait_for(lambda: all(acceptor.accepts(p) for p in wanted), START_TIMEOUT)
        for start in range(0, len(pieces), EVENT_BUFFER_DEPTH):
            # The acceptor buffers five events: the next poll's reply must carry these before
            # more go in, or the driver reports them lost (as a real acceptor would).
            polls = sim.requests(acceptor.address, Header.READ_BUFFERED_CREDIT)
            for value in pieces[start:start + EVENT_BUFFER_DEPTH]:
                if not sim.insert_coin(positions[value]):
                    raise RuntimeError(f"the coin acceptor returned a {value} coin")
            await sim.wait_for(functools.partial(_polled_since, sim, acceptor.address, polls),
                               START_TIMEOUT)

    async def _feed_notes(self, sim: SspSimulator, currency: str,
                          pieces: Sequence[int]) -> None:
        unit = sim.unit
        scale = 10 ** exponent(currency)
        channels = {value * scale: channel
                    for channel, (code, value) in enumerate(unit.channels, start=1)
                    if code == currency}
        wanted = {channels[value] for value in pieces}
        await sim.wait_for(lambda: unit.enabled
                           and all(unit.inhibits >> (c - 1) & 1 for c in wanted), START_TIMEOUT)
        credited = len(unit.credited)
        for value in pieces:
            if not sim.insert_note(channels[value]):
                raise RuntimeError(f"the note validator refused a {value} note")
        await sim.wait_for(lambda: len(unit.credited) >= credited + len(pieces), START_TIMEOUT)

    async def close_drawer(self) -> None:
        self.printer.close_drawer()

    async def paper_out(self) -> None:
        self.printer.paper_out()
        # Held until the store manager's page can show it: the demo is there to be watched.
        await self.view.until_alarm(self.spec.name, "paper_out")

    async def refill_paper(self) -> None:
        self.printer.paper_ok()

    async def wait_printed(self, text: str) -> None:
        await self.printer.wait_for(lambda: any(text in r.text for r in self.printer.receipts),
                                    START_TIMEOUT)


def _polled_since(sim: CcTalkSimulator, address: int, polls: int) -> bool:
    return sim.requests(address, Header.READ_BUFFERED_CREDIT) > polls


# -- the store ---------------------------------------------------------------------------------


class ChildExited(RuntimeError):
    """A daemon exited while the store was running."""


class SimulatedStore:
    """Everything of the demo store, started and stopped in order (see the module's text)."""

    def __init__(self, workdir: Path, *, http_port: int) -> None:
        self.workdir = workdir
        self.view = StoreView(http_port)
        self.receipts = workdir / "receipts"
        self.logs = workdir / "logs"
        self.broker: MosquittoBroker | None = None
        self.registers = {spec.name: RegisterRig(spec, workdir / spec.name,
                                                 self.receipts / spec.name, self.view)
                          for spec in REGISTERS}
        self.aggregator: Child | None = None
        self.database = workdir / "store" / "store.db"

    @property
    def broker_port(self) -> int:
        assert self.broker is not None
        return self.broker.port

    def children(self) -> list[Child]:
        found = [rig.process for rig in self.registers.values() if rig.process is not None]
        return found + ([self.aggregator] if self.aggregator is not None else [])

    def pids(self) -> dict[str, int]:
        """Every process the store runs besides this one: the broker, the daemons."""
        out = {"mosquitto": self.broker.pid} if self.broker and self.broker.pid else {}
        return out | {child.name: child.pid for child in self.children()}

    async def start(self) -> None:
        """The broker, the simulators, the registers and the aggregator; returns once the
        store view lists every register online. A daemon that exits meanwhile raises
        :class:`ChildExited`."""
        self.broker = MosquittoBroker(self.workdir / "broker")
        with terminal_signals_blocked():
            self.broker.start()
        for rig in self.registers.values():
            await rig.start_devices()
            rig.write_config(self.broker_port)
            rig.process = await spawn(rig.spec.name, ["run", "--config", str(rig.config)],
                                      self.logs / f"{rig.spec.name}.log")
        config = self.workdir / "store" / "store.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(store_toml(broker_port=self.broker_port, database=self.database,
                                     http_port=self.view.port), encoding="utf-8")
        self.aggregator = await spawn("store", ["store", "--config", str(config)],
                                      self.logs / "store.log")
        names = set(self.registers)

        def all_online(view: dict[str, Any]) -> bool:
            return names <= {r["register"] for r in view["registers"] if r["online"]}

        try:
            await self.while_running(self.view.until("/registers", all_online,
                                                     "every register online"))
        except TimeoutError as e:  # the aggregator's log usually says why
            agg = self.aggregator
            raise TimeoutError(f"{e}; the end of {agg.log}:\n{agg.log_tail()}") from None

    async def while_running(self, work: Awaitable[Any]) -> Any:
        """Await ``work`` unless a daemon exits first (then :class:`ChildExited`)."""
        task = asyncio.ensure_future(work)
        exits = {asyncio.ensure_future(child.proc.wait()): child for child in self.children()}
        try:
            await asyncio.wait({task, *exits}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                child = next(exits[e] for e in exits if e.done())
                task.cancel()
                raise ChildExited(f"{child.name} exited with code {child.returncode}; the end "
                                  f"of {child.log}:\n{child.log_tail()}")
            return task.result()
        finally:
            task.cancel()
            for waiter in exits:
                waiter.cancel()

    async def run_day(self, *, pace: float, report: Callable[[str, str], None]) -> None:
        """The scripted POS at every register at once; returns when both days are done, the
        aggregator has acknowledged every event and the store view has caught up with the
        registers' devices (their state comes at most every ``state_interval``)."""
        async with contextlib.AsyncExitStack() as stack:
            tills = {}
            for name, rig in self.registers.items():
                client = await stack.enter_async_context(KassadClient(
                    BrokerConfig(host=HOST, port=self.broker_port), store=STORE,
                    register=name, requester=f"pos-{name}", employee="e17",
                    retry_interval=0.3))
                tills[name] = ScriptedPos(client, rig, title=rig.spec.title, pace=pace,
                                          report=functools.partial(report, name))
            await self.while_running(self._all_days(tills))
            devices = {name: (await pos.state())["devices"] for name, pos in tills.items()}

        def caught_up(view: dict[str, Any]) -> bool:
            shown = {r["register"]: r for r in view["registers"]}
            return all(name in shown and shown[name]["online"]
                       and shown[name]["devices"] == wanted for name, wanted in devices.items())

        await self.while_running(self.view.until(
            "/registers", caught_up, "each register's devices as the register reports them"))

    async def _all_days(self, tills: dict[str, ScriptedPos]) -> None:
        async def one(name: str, pos: ScriptedPos) -> None:
            await pos.wait_ready([self.registers[name].spec.counter.name])
            await pos.run(DAY[name])
            await pos.until(lambda s: s["delivery"]["pending"] == 0,
                            "the store to acknowledge every event")

        try:
            async with asyncio.TaskGroup() as group:
                for name, pos in tills.items():
                    group.create_task(one(name, pos))
        except ExceptionGroup as failed:  # the first register's failure says what went wrong
            raise failed.exceptions[0] from None

    async def stop(self, force: asyncio.Event) -> dict[str, int]:
        """Registers (SIGTERM, together), then the aggregator, the simulators and the broker;
        ``force`` set meanwhile kills what is still running. Returns each daemon's exit code."""
        codes: dict[str, int] = {}
        registers = [rig.process for rig in self.registers.values() if rig.process is not None]
        for code, child in zip(await asyncio.gather(*(c.stop(force) for c in registers)),
                               registers, strict=True):
            codes[child.name] = code
        if self.aggregator is not None:
            codes[self.aggregator.name] = await self.aggregator.stop(force)
        for rig in self.registers.values():
            await rig.close_devices()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.kill if force.is_set() else self.broker.stop)
        return codes
