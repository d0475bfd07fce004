"""One ESC/POS printer as the daemon sees it: status, real-time kicks and confirmed jobs.

Over a :class:`ReconnectingTransport` it runs a reader that feeds everything the printer
sends into the :class:`StatusDemux` (DLE EOT replies, ASB messages, GS ( H process-ID
responses), a poller that asks DLE EOT 1-4 every ``status_interval`` (no reply within
``status_timeout`` = offline; never "paper OK" by default), and serialised writes. Jobs are
written in chunks so that a drawer kick waits for at most one chunk, never for a whole
receipt; a job is "printed" when the printer answers the GS ( H request that follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import DeviceGone, ProtocolError, TransportError, TransportTimeout
from ..transport.reconnect import ReconnectingTransport
from .status import (
    ASB_ALL,
    DLE_EOT,
    AsbStatus,
    DleEotReply,
    Garbage,
    PrinterStatus,
    ProcessIdResponse,
    StatusDemux,
    asb_enable,
    process_id_request,
    status_from_dle_eot,
)

_LOGGER = logging.getLogger(__name__)

StatusCallback = Callable[[PrinterStatus | None, str], None]


@dataclass(frozen=True, slots=True)
class PrinterTimings:
    write_timeout: float = 10.0
    status_interval: float = 1.0
    status_timeout: float = 1.0
    completion_timeout: float = 30.0
    # Bytes per write, each flushed to the device before the next: a kick waits for at most
    # one chunk on the wire. The daemon picks ~10 ms of wire time for serial links.
    chunk_size: int = 512


class JobStopped(TransportError):
    """The printer vanished or stopped answering in the middle of a job: part of it may have
    printed, so it must not be sent again by itself."""


class Printer:
    def __init__(self, transport: ReconnectingTransport, *, timings: PrinterTimings,
                 asb: bool = True, completion: bool = True,
                 on_status: StatusCallback | None = None) -> None:
        self.transport = transport
        self.name = transport.name
        self.timings = timings
        self.asb = asb
        self.completion = completion
        self.on_status = on_status
        #: The last status read; None while unknown (disconnected, or no reply).
        self.status: PrinterStatus | None = None
        self.garbage_bytes = 0
        self._demux = StatusDemux()
        self._write_lock = asyncio.Lock()
        self._query_lock = asyncio.Lock()
        self._eot_waiters: deque[asyncio.Future[tuple[int, int]]] = deque()
        # Order of what the printer said: a poll's replies may be overtaken by an ASB message
        # read after them; the older reading must not overwrite the newer (it made a drawer
        # look closed again right after it opened).
        self._rx_seq = 0
        self._status_seq = 0
        self._completions: dict[bytes, asyncio.Future[None]] = {}
        self._changed = asyncio.Event()  # replaced after each change: waiters hold the old one

    # -- life cycle -------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.transport.run(), name=f"{self.name}-transport")
            group.create_task(self._read_loop(), name=f"{self.name}-reader")
            group.create_task(self._poll_loop(), name=f"{self.name}-status")

    async def wait_for(self, predicate: Callable[[PrinterStatus | None], bool],
                       timeout: float | None) -> PrinterStatus | None:  # noqa: ASYNC109
        """Wait until ``predicate(status)`` holds (checked on every status reading)."""
        async with asyncio.timeout(timeout):
            while not predicate(self.status):
                await self._changed.wait()
            return self.status

    def _set_status(self, status: PrinterStatus | None, why: str) -> None:
        self.status = status
        if self.on_status is not None:
            self.on_status(status, why)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            await self.transport.connected.wait()
            await self._on_connected()
            while self.transport.connected.is_set():
                try:
                    data = await self.transport.read(256, self.timings.status_interval)
                except TransportTimeout:
                    continue
                except DeviceGone as e:
                    self._lost(str(e))
                    break
                for item in self._demux.feed(data):
                    self._take(item)

    async def _on_connected(self) -> None:
        self._demux.reset()
        if self.asb:
            with contextlib.suppress(TransportError):
                await self._write(asb_enable(ASB_ALL))

    def _lost(self, reason: str) -> None:
        self._demux.reset()
        for waiter in self._eot_waiters:
            waiter.cancel()
        self._eot_waiters.clear()
        self._set_status(None, f"disconnected: {reason}")

    def _take(self, item: object) -> None:
        self._rx_seq += 1
        if isinstance(item, DleEotReply):
            while self._eot_waiters:
                waiter = self._eot_waiters.popleft()
                if not waiter.done():
                    waiter.set_result((item.byte, self._rx_seq))
                    return
            _LOGGER.debug("%s: late DLE EOT reply %02x ignored", self.name, item.byte)
        elif isinstance(item, AsbStatus):
            self._status_seq = self._rx_seq
            self._set_status(item.status, "asb")
        elif isinstance(item, ProcessIdResponse):
            future = self._completions.pop(item.pid, None)
            if future is not None and not future.done():
                future.set_result(None)
        elif isinstance(item, Garbage):
            self.garbage_bytes += len(item.raw)
            _LOGGER.warning("%s: %d unexpected byte(s) from the printer: %s", self.name,
                            len(item.raw), item.raw[:16].hex(" "))

    # -- status -----------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            await self.transport.connected.wait()
            try:
                status, seq = await self._query()
            except (TransportTimeout, ProtocolError) as e:
                self._set_status(None, f"no valid status reply: {e}")
            except DeviceGone:
                pass  # the reader reports it
            else:
                if seq > self._status_seq:  # else an ASB message read later already told us
                    self._status_seq = seq
                    self._set_status(status, "poll")
            await asyncio.sleep(self.timings.status_interval)

    async def query_status(self) -> PrinterStatus:
        """DLE EOT 1-4 (four back to back is what the spec allows), replies in order."""
        return (await self._query())[0]

    async def _query(self) -> tuple[PrinterStatus, int]:
        async with self._query_lock:
            loop = asyncio.get_running_loop()
            waiters = [loop.create_future() for _ in range(4)]
            self._eot_waiters.extend(waiters)
            try:
                await self._write(DLE_EOT[1] + DLE_EOT[2] + DLE_EOT[3] + DLE_EOT[4])
                async with asyncio.timeout(self.timings.status_timeout):
                    replies = [await w for w in waiters]
            except TimeoutError:
                raise TransportTimeout(f"{self.name}: no reply to DLE EOT within "
                                       f"{self.timings.status_timeout}s") from None
            finally:
                for w in waiters:
                    w.cancel()
                    with contextlib.suppress(ValueError):
                        self._eot_waiters.remove(w)
            return (status_from_dle_eot(*(byte for byte, _ in replies)), replies[-1][1])

    # -- writing ----------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            await self.transport.write(data, self.timings.write_timeout)

    async def send(self, data: bytes) -> None:
        """Bytes that must go out at once (a kick): they wait for at most one job chunk."""
        await self._write(data)

    async def print_job(self, data: bytes, pid: bytes | None) -> None:
        """Write a job in chunks; with ``pid`` wait for the printer to say it has printed it.

        While the printer reports it cannot print (paper out, cover open, offline) the wait
        for completion does not count down: the job resumes when the fault clears.
        """
        future: asyncio.Future[None] | None = None
        if pid is not None and self.completion:
            future = asyncio.get_running_loop().create_future()
            self._completions[pid] = future
        try:
            size = self.timings.chunk_size
            for start in range(0, len(data), size):
                await self._write(data[start:start + size])
                # Outside the write lock: a kick waiting for it goes out behind this chunk only.
                await self.transport.flush(self.timings.write_timeout)
            if future is None:
                return
            assert pid is not None
            await self._write(process_id_request(pid))
            if self.asb:
                await self._write(asb_enable(ASB_ALL))  # ESC @ in the job may have reset it
            await self._await_completion(future)
        except DeviceGone as e:
            raise JobStopped(f"{self.name}: the printer went away during the job: {e}") from e
        finally:
            if pid is not None:
                self._completions.pop(pid, None)

    async def _await_completion(self, future: asyncio.Future[None]) -> None:
        while True:
            try:
                async with asyncio.timeout(self.timings.completion_timeout):
                    await asyncio.shield(future)
                    return
            except TimeoutError:
                status = self.status
                if status is not None and not status.can_print:
                    continue  # held by paper out / cover open: it prints when fixed
                raise JobStopped(f"{self.name}: no completion reply within "
                                 f"{self.timings.completion_timeout}s") from None
