"""The SSP host link: one command at a time, the sequence bit, retransmission, typed errors.

Layer: protocol, over any :class:`Transport` (a ReconnectingTransport in the daemon).

Sequence bit (device-protocols.md §4.2): SYNC (0x11) always goes with the flag set (0x80) and
resets the sequence, so the next command carries 0. The host toggles the flag only after a
good reply; a retransmission (no reply within ``timeout``, or a reply with a bad CRC) reuses
it, and the slave then re-sends its last reply instead of executing the command again. That
is what makes credits exactly-once: a POLL whose reply was lost is retransmitted, not re-run.

Which reply belongs to which command, when replies can be late or repeated:

* The slave answers strictly in order, so stale replies (late ones, repeats of one already
  taken) always come before the reply to the command now waiting.
* A new command drains what is already buffered first; a retransmission does not (a late
  reply to an earlier attempt *is* the reply to it: the slave would only repeat it).
* A reply is taken only with our address and the command's sequence bit. A stale copy of
  the previous reply carries the other bit and is dropped, never read as this command's.
* A SYNC reply must be a bare status: a stale POLL reply with events is not taken for it.

After a command got no good reply at all (retries exhausted, port lost), the next command
with the same bit would be taken as a retransmission of it. The link therefore SYNCs before
the next command, unless the owner first calls :meth:`resume`, which retransmits the
unanswered command with its own bit: if the slave executed it and only the reply was lost, it
repeats that reply (a POLL's credit is not lost); if it never saw it, it executes it now.

The reply is read by the task that wrote the command, under the lock: SSP is strictly master
/ slave, nothing arrives unasked but noise, and bytes that come before we read are buffered
by the stream, so a separate reader task (and a future registered before the write) would
add nothing here.
"""

from __future__ import annotations

import asyncio
import logging

from kassad.drivers.errors import DriverError, ProtocolError, TransportTimeout
from kassad.drivers.ssp.frames import Command, Packet, PacketReader, Status
from kassad.drivers.transport.base import Transport

_LOGGER = logging.getLogger(__name__)

_READ_SIZE = 512
# Stale bytes drained before a new command, at most this many reads: a line that keeps
# talking is noise, and the command still goes out (its reply is matched by sequence bit).
_DRAIN_READS = 8


class SspError(ProtocolError):
    """The slave answered with a generic response other than OK."""

    def __init__(self, command: int, status: int, payload: bytes = b"") -> None:
        self.command = command
        self.status = status
        #: Bytes after the status (some commands add a reason byte to CANNOT_PROCESS).
        self.payload = payload
        super().__init__(f"SSP {_command_name(command)}: {_status_name(status)}"
                         + (f" ({payload.hex(' ')})" if payload else ""))


class UnknownCommand(SspError):
    """0xF2."""


class WrongParameters(SspError):
    """0xF3: wrong number of parameters."""


class ParameterOutOfRange(SspError):
    """0xF4."""


class CannotProcess(SspError):
    """0xF5: cannot be processed now (busy, wrong state)."""


class SoftwareError(SspError):
    """0xF6."""


class CommandFailed(SspError):
    """0xF8 FAIL (e.g. HOST PROTOCOL VERSION higher than the unit supports)."""


class KeyNotSet(SspError):
    """0xFA: an eSSP command before the key exchange."""


_ERRORS: dict[int, type[SspError]] = {
    Status.UNKNOWN_COMMAND: UnknownCommand, Status.WRONG_PARAMETERS: WrongParameters,
    Status.OUT_OF_RANGE: ParameterOutOfRange, Status.CANNOT_PROCESS: CannotProcess,
    Status.SOFTWARE_ERROR: SoftwareError, Status.FAIL: CommandFailed,
    Status.KEY_NOT_SET: KeyNotSet,
}


class _BadReply(DriverError):
    """A reply was seen during the attempt but its CRC failed: retransmit at once."""


class SspLink:
    """Commands to the slave at ``address``, one at a time (callers queue on a lock)."""

    def __init__(self, transport: Transport, *, address: int = 0, timeout: float = 1.0,
                 retries: int = 3, write_timeout: float = 1.0) -> None:
        if timeout <= 0 or write_timeout <= 0 or retries < 0:
            msg = (f"need positive timeouts and retries >= 0, got {timeout}, {write_timeout}, "
                   f"{retries}")
            raise ValueError(msg)
        Packet(address, False, b"\x00")  # validates the address
        self.transport = transport
        self.address = address
        #: Seconds to wait for each attempt's reply (ITL SDK: 1 s).
        self.timeout = timeout
        #: Retransmissions after the first attempt (ITL SDK: 3).
        self.retries = retries
        self.write_timeout = write_timeout
        self.reader = PacketReader()
        #: Retransmissions sent (all commands).
        self.retransmissions = 0
        #: Well-formed packets that were not the awaited reply (stale, repeated, other address).
        self.stray_packets = 0
        self._lock = asyncio.Lock()
        self._seq = False  # the flag the next new command carries
        self._synced = False
        self._unanswered: Packet | None = None

    @property
    def name(self) -> str:
        return self.transport.name

    @property
    def unanswered(self) -> int | None:
        """The command that got no good reply, until SYNC or :meth:`resume`; None if none."""
        return self._unanswered.data[0] if self._unanswered is not None else None

    async def sync(self) -> None:
        """SYNC: resets the slave's sequence; the next command carries flag 0."""
        async with self._lock:
            await self._sync()

    async def command(self, command: int, params: bytes = b"") -> bytes:
        """Send one command; return the reply's payload (after 0xF0 OK).

        Raises an :class:`SspError` subclass for any other status, TransportTimeout when no
        reply came after the retries, ProtocolError when every reply had a bad CRC, and
        DeviceGone when the port went away.
        """
        async with self._lock:
            if not self._synced:
                await self._sync()
            packet = Packet(self.address, self._seq, bytes([command]) + params)
            reply = await self._exchange(packet, drain=True)
            self._seq = not self._seq
            return _payload(command, reply)

    async def resume(self) -> bytes | None:
        """Retransmit the unanswered command with its own sequence bit (see the module
        docstring). Returns its reply payload; None when nothing was unanswered."""
        async with self._lock:
            packet = self._unanswered
            if packet is None:
                return None
            _LOGGER.info("%s: retransmitting unanswered %s (seq %d)", self.name,
                         _command_name(packet.data[0]), packet.seq)
            reply = await self._exchange(packet, drain=False)
            self._seq = not packet.seq
            self._synced = True
            return _payload(packet.data[0], reply)

    # -- internals --------------------------------------------------------------------------

    async def _sync(self) -> None:
        packet = Packet(self.address, True, bytes([Command.SYNC]))
        reply = await self._exchange(packet, drain=True)
        self._seq = False
        try:
            _payload(Command.SYNC, reply)
        except SspError:
            self._synced = False  # refused: the slave's sequence is still unknown
            raise

    async def _exchange(self, packet: Packet, *, drain: bool) -> Packet:
        self._synced = False  # until a good reply: the slave's state is unknown
        self._unanswered = packet
        if drain:
            await self._drain()
        wire = packet.encode()
        is_sync = packet.data[0] == Command.SYNC
        failure: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retransmissions += 1
                _LOGGER.info("%s: %s (seq %d): %s; retransmission %d of %d", self.name,
                             _command_name(packet.data[0]), packet.seq, failure, attempt,
                             self.retries)
            if _LOGGER.isEnabledFor(logging.DEBUG):
                _LOGGER.debug("%s: -> %s", self.name, wire.hex(" "))
            await self.transport.write(wire, self.write_timeout)
            try:
                reply = await self._await_reply(packet.seq, is_sync)
            except (TransportTimeout, _BadReply) as exc:  # retryable; DeviceGone is not
                failure = exc
                continue
            self._unanswered = None
            self._synced = True
            return reply
        what = f"{self.name}: no good reply to {_command_name(packet.data[0])} after " \
               f"{self.retries + 1} attempt(s)"
        if isinstance(failure, _BadReply):
            raise ProtocolError(f"{what}: bad CRC")
        raise TransportTimeout(what)

    async def _await_reply(self, seq: bool, is_sync: bool) -> Packet:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TransportTimeout(f"no reply within {self.timeout:g} s")
            data = await self.transport.read(_READ_SIZE, remaining)
            bad_before = self.reader.bad_crc
            found: Packet | None = None
            for reply in self.reader.feed(data):
                if found is None and reply.address == self.address and reply.seq == seq \
                        and (not is_sync or len(reply.data) == 1):
                    found = reply
                else:  # after ours too: the unit says nothing unasked, so it is a repeat
                    self._stray(reply)
            if found is not None:
                if _LOGGER.isEnabledFor(logging.DEBUG):
                    _LOGGER.debug("%s: <- %s", self.name, found.encode().hex(" "))
                return found
            if self.reader.bad_crc > bad_before:
                raise _BadReply("reply with a bad CRC")

    async def _drain(self) -> None:
        for _ in range(_DRAIN_READS):
            try:
                data = await self.transport.read(_READ_SIZE, 0)
            except TransportTimeout:
                return
            for packet in self.reader.feed(data):
                self._stray(packet)

    def _stray(self, packet: Packet) -> None:
        self.stray_packets += 1
        _LOGGER.info("%s: stale or foreign packet ignored: address %d seq %d data %s",
                     self.name, packet.address, packet.seq, packet.data[:16].hex(" "))


def _payload(command: int, reply: Packet) -> bytes:
    status = reply.data[0]
    if status == Status.OK:
        return reply.data[1:]
    raise _ERRORS.get(status, SspError)(command, status, reply.data[1:])


def _command_name(command: int) -> str:
    try:
        return Command(command).name
    except ValueError:
        return f"command {command:#04x}"


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"status {status:#04x}"
