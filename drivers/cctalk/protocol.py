"""The ccTalk bus: one request at a time, echo stripped, replies matched, retries by type.

Layer: protocol, over a :class:`ReconnectingTransport` (a serial port at 9600 8N1, a
ccTalk-USB adaptor, a pty in tests). Several devices share one bus object; it serialises
them. device-protocols.md §4.1, §5.

One exchange on the single-wire bus::

    host -> bus    request frame            [dest][N][1][header][data][chk]
    bus  -> host   the same bytes (echo)    the host hears itself: checked, then dropped
    dev  -> host   reply frame              [1][N][dest][0 | 5 NAK | 6 BUSY][data][chk]

Why it is done like this: the device only talks when asked, so the reply has no tag but the
addresses. A reader task feeds every received byte through the echo check and a
:class:`FrameReader`; a request takes the lock, registers its waiter *before* writing (a fast
reply cannot be missed), awaits it under ``response_timeout`` and drops it in ``finally``.
Bytes received before a request are stale (a late reply, line noise): they are discarded
when the next request registers. An echo that differs from what was sent is a bus collision.

Retries (keyed on the exception type): NAK, BUSY (after ``busy_delay``), no reply and a
collision (once the line has been quiet for an inter-byte gap, so that the answer to the
garbled frame is not taken for our echo) are retried up to ``retries`` times, all within one
deadline. A command that must
not run twice (hopper dispense) passes ``idempotent=False``: then only NAK and BUSY are
retried (the device says it did nothing); after a lost reply the caller must find out.
An inter-byte gap of ``inter_byte_timeout`` with an incomplete frame buffered drops the
stale head (resync), as the ccTalk spec asks of receivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kassad.drivers.cctalk.frames import (
    ADDR_HOST,
    Frame,
    FrameReader,
    Header,
    encode,
    header_name,
)
from kassad.drivers.errors import DeviceGone, ProtocolError, TransportTimeout
from kassad.drivers.transport.reconnect import ReconnectingTransport

_LOGGER = logging.getLogger(__name__)

_READ_SIZE = 512
# How long the reader waits for bytes when nothing is pending: only the granularity at which
# it notices a disconnect by itself; requests do not depend on it.
_IDLE_READ = 1.0


def _where(address: int, header: int) -> str:
    return f"ccTalk address {address}, header {header_name(header)}"


class CcTalkError(ProtocolError):
    """A ccTalk exchange failed; ``address`` and ``header`` say which."""

    def __init__(self, address: int, header: int, problem: str) -> None:
        super().__init__(f"{_where(address, header)}: {problem}")
        self.address, self.header = address, header


class CcTalkNak(CcTalkError):
    """The device answered NAK (it did not carry out the command)."""


class CcTalkBusy(CcTalkError):
    """The device answered BUSY (it did not carry out the command)."""


class BusCollision(CcTalkError):
    """The echo of our own bytes came back different: another talker, or line noise."""


class CcTalkTimeout(TransportTimeout):
    """No valid reply in time (after the retries the request allowed)."""

    def __init__(self, address: int, header: int, problem: str) -> None:
        super().__init__(f"{_where(address, header)}: {problem}")
        self.address, self.header = address, header


_RETRYABLE = (CcTalkNak, CcTalkBusy, BusCollision, CcTalkTimeout)
# The device may have executed the command although we heard nothing (or garbage).
_UNCERTAIN = (BusCollision, CcTalkTimeout)


@dataclass(slots=True)
class _Exchange:
    address: int
    header: int
    reply: asyncio.Future[Frame]
    echo: bytes  # still expected back before the reply


class CcTalkBus:
    """One ccTalk bus (one serial line) shared by the devices on it."""

    def __init__(self, transport: ReconnectingTransport, *, crc: bool = False,
                 echo: bool = True, response_timeout: float = 0.2, retries: int = 3,
                 inter_byte_timeout: float = 0.05, busy_delay: float = 0.05,
                 write_timeout: float = 1.0, host_address: int = ADDR_HOST) -> None:
        if response_timeout <= 0 or inter_byte_timeout <= 0 or write_timeout <= 0:
            msg = "timeouts must be positive"
            raise ValueError(msg)
        if retries < 0 or busy_delay < 0:
            msg = f"need retries >= 0 and busy_delay >= 0, got {retries}, {busy_delay}"
            raise ValueError(msg)
        self.transport = transport
        self.name = transport.name
        #: Frames carry CRC-16 instead of the source address and checksum.
        self.crc = crc
        #: The line returns our own bytes (a true single-wire bus, most ccTalk adaptors).
        self.echo = echo
        #: From the end of our write to the whole reply.
        self.response_timeout = response_timeout
        #: Further attempts after the first (NAK, BUSY, no reply, collision).
        self.retries = retries
        #: A silence this long with a frame incomplete ends that frame (resync).
        self.inter_byte_timeout = inter_byte_timeout
        self.busy_delay = busy_delay
        self.write_timeout = write_timeout
        self.host_address = host_address
        #: Diagnostics: frames nobody waited for, echoes that came back changed.
        self.stray_frames = 0
        self.collisions = 0
        self._rx = FrameReader(crc=crc, host=host_address)
        self._lock = asyncio.Lock()
        self._exchange: _Exchange | None = None
        self._users = 0
        self._runner: asyncio.Task[None] | None = None
        self._last_rx = 0.0  # loop time of the last byte received

    # -- life cycle -------------------------------------------------------------------------

    @property
    def garbage_bytes(self) -> int:
        """Received bytes that were neither our echo nor part of a valid frame."""
        return self._rx.garbage

    @property
    def connected(self) -> bool:
        return self.transport.connected.is_set()

    async def run(self) -> None:
        """Keep the line open and read it until cancelled (:meth:`attached` starts this)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.transport.run(), name=f"{self.name}-transport")
            group.create_task(self._read_loop(), name=f"{self.name}-reader")

    @contextlib.asynccontextmanager
    async def attached(self) -> AsyncIterator[None]:
        """Each device's run() holds this: the first one starts :meth:`run`, the last one
        to leave stops it, so a device stopping does not take the line from the others."""
        self._users += 1
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self.run(), name=f"{self.name}-bus")
            self._runner.add_done_callback(self._runner_done)
        try:
            yield
        finally:
            self._users -= 1
            if self._users == 0 and self._runner is not None:
                runner, self._runner = self._runner, None
                runner.cancel()
                await asyncio.wait([runner])  # our own cancellation still propagates

    def _runner_done(self, runner: asyncio.Task[None]) -> None:
        # Said at once: the devices would otherwise only see their requests time out.
        if not runner.cancelled() and runner.exception() is not None:
            _LOGGER.error("%s: the bus stopped with an error", self.name,
                          exc_info=runner.exception())

    # -- requests ---------------------------------------------------------------------------

    async def request(self, address: int, header: int, data: bytes = b"", *,
                      idempotent: bool = True, retries: int | None = None) -> bytes:
        """Send one command to ``address``; the reply's data on ACK.

        Raises CcTalkNak / CcTalkBusy / BusCollision / CcTalkTimeout once the retries are
        used up (``retries`` overrides the bus's count, e.g. 0 for a probe), DeviceGone when
        the line is down, CcTalkError for a reply with a header other than ACK/NAK/BUSY.
        """
        frame = Frame(address, self.host_address, header, data)
        raw = encode(frame, self.crc)
        attempts = 1 + (self.retries if retries is None else retries)
        # Every attempt may take its response timeout plus a BUSY pause; the write and the
        # wire time of a full frame both ways come on top once.
        budget = (attempts * (self.response_timeout + self.busy_delay
                              + self.inter_byte_timeout) + self.write_timeout + 2 * 260 / 960)
        async with self._lock:
            error: CcTalkError | CcTalkTimeout | None = None
            try:
                async with asyncio.timeout(budget):
                    for attempt in range(attempts):
                        try:
                            return await self._exchange_once(address, header, raw)
                        except _RETRYABLE as exc:
                            error = exc
                            if isinstance(exc, BusCollision):
                                self.collisions += 1
                            if not idempotent and isinstance(exc, _UNCERTAIN):
                                raise
                            _LOGGER.debug("%s: attempt %d of %d: %s", self.name, attempt + 1,
                                          attempts, exc)
                            if attempt + 1 == attempts:
                                break
                            if isinstance(exc, CcTalkBusy):
                                await asyncio.sleep(self.busy_delay)
                            elif isinstance(exc, BusCollision):
                                await self._settle()
            except TimeoutError as exc:
                if isinstance(exc, CcTalkTimeout):
                    raise
                raise CcTalkTimeout(address, header,
                                    f"no reply within the {budget:.2f} s deadline") from exc
            assert error is not None
            raise error

    async def _settle(self) -> None:
        """Wait until nothing has been received for one inter-byte gap."""
        loop = asyncio.get_running_loop()
        # A wait for silence measured on the clock (each byte restarts it), not for a flag.
        while (quiet := loop.time() - self._last_rx) < self.inter_byte_timeout:  # noqa: ASYNC110
            await asyncio.sleep(self.inter_byte_timeout - quiet)

    async def _exchange_once(self, address: int, header: int, raw: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        exchange = _Exchange(address, header, loop.create_future(),
                             echo=raw if self.echo else b"")
        stale = self._rx.reset(peer=address)
        if stale:
            _LOGGER.info("%s: %d stale byte(s) dropped before a request", self.name, stale)
        self._exchange = exchange
        try:
            if _LOGGER.isEnabledFor(logging.DEBUG):
                _LOGGER.debug("%s: -> %s", self.name, raw.hex(" "))
            try:
                await self.transport.write(raw, self.write_timeout)
            except DeviceGone:
                raise
            except TransportTimeout as exc:
                raise CcTalkTimeout(address, header, f"write stuck: {exc}") from exc
            try:
                async with asyncio.timeout(self.response_timeout):
                    reply = await exchange.reply
            except TimeoutError:
                what = "echo incomplete" if exchange.echo else "no reply"
                raise CcTalkTimeout(address, header,
                                    f"{what} within {self.response_timeout:g} s") from None
        finally:
            if self._exchange is exchange:
                self._exchange = None
            if exchange.reply.done() and not exchange.reply.cancelled():
                exchange.reply.exception()  # retrieved: the failure is reported by raising
            exchange.reply.cancel()
        if reply.header == Header.REPLY:
            return reply.data
        if reply.header == Header.NAK:
            raise CcTalkNak(address, header, "NAK")
        if reply.header == Header.BUSY:
            raise CcTalkBusy(address, header, "BUSY")
        raise CcTalkError(address, header, f"reply with header {reply.header}, not ACK")

    # -- receiving --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            await self.transport.connected.wait()
            self._rx.reset()
            while self.transport.connected.is_set():
                waiting = self._rx.pending or (self._exchange is not None
                                               and self._exchange.echo)
                try:
                    data = await self.transport.read(
                        _READ_SIZE, self.inter_byte_timeout if waiting else _IDLE_READ)
                except TransportTimeout:
                    if self._rx.pending:  # the line went quiet inside a frame: resync
                        self._take(self._rx.expire())
                    continue
                except DeviceGone as exc:
                    self._fail(exc)
                    break
                self._received(data)

    def _received(self, data: bytes) -> None:
        self._last_rx = asyncio.get_running_loop().time()
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug("%s: <- %s", self.name, data.hex(" "))
        exchange = self._exchange
        if exchange is not None and exchange.echo:
            n = min(len(data), len(exchange.echo))
            if data[:n] != exchange.echo[:n]:
                # Our bytes came back changed: the device heard the same garbled frame.
                self._fail(BusCollision(
                    exchange.address, exchange.header,
                    f"echo {data[:n].hex(' ')} differs from what was sent "
                    f"{exchange.echo[:n].hex(' ')} (collision, noise, or echo=True on a "
                    "line that does not echo)"))
            else:
                exchange.echo = exchange.echo[n:]
                data = data[n:]
        self._take(self._rx.feed(data))

    def _take(self, frames: list[Frame]) -> None:
        for frame in frames:
            exchange = self._exchange
            if (exchange is not None and not exchange.echo and not exchange.reply.done()
                    and frame.dest == self.host_address and frame.src == exchange.address):
                exchange.reply.set_result(frame)
                continue
            # A reply nobody waits for (to a request given up on), another talker, or
            # garbage that passed the checksum: never read as an answer.
            self.stray_frames += 1
            _LOGGER.info("%s: frame nobody asked for ignored: %s", self.name, frame)

    def _fail(self, exc: Exception) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None and not exchange.reply.done():
            exchange.reply.set_exception(exc)
