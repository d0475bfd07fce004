"""USB bulk byte transport through pyusb (receipt printers: printer-class interface 7).

Layer: transport. pyusb blocks, so every pyusb call runs in a thread: writes on one
single-thread executor, reads on another, so a drawer kick never queues behind a read poll
waiting out its timeout. Every transfer has a finite libusb timeout from the caller's deadline.
python-escpos's ``Usb`` is not used: no timeouts, no serial-number match, no detach on
non-libusb1 backends, not reusable after a replug (device-protocols.md §2.7 #259, #437).
``backend`` is a test double (:mod:`kassad.simulators.usb_backend`) or None (real libusb).

Errors: USBTimeoutError -> TransportTimeout; ENODEV (libusb -4) -> DeviceGone, or DeviceNotFound
while opening; EBUSY -> TransportError naming usblp/CUPS; no match -> DeviceNotFound.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import usb.core
import usb.util

from kassad.drivers.errors import DeviceGone, DeviceNotFound, TransportError, TransportTimeout
from kassad.drivers.transport.base import Transport, deadline

_LOGGER = logging.getLogger(__name__)

# libusb1 error codes, for backends that set backend_error_code but no errno.
_LIBUSB_ACCESS, _LIBUSB_NO_DEVICE, _LIBUSB_BUSY = -3, -4, -6


class UsbTransport(Transport):
    """Bulk OUT / IN on one interface of the first device matching vid:pid (and serial)."""

    def __init__(
        self,
        vendor_id: int,
        product_id: int,
        serial_number: str | None = None,
        interface: int = 0,
        out_ep: int | None = None,
        in_ep: int | None = None,
        backend: Any = None,
    ) -> None:
        self.vendor_id, self.product_id = vendor_id, product_id
        self.serial_number = serial_number
        self.interface = interface
        suffix = f":{serial_number}" if serial_number else ""
        self.name = f"usb:{vendor_id:04x}:{product_id:04x}{suffix}"
        self._want_out, self._want_in, self._backend = out_ep, in_ep, backend
        # Written by the open (write) thread, read after it finished or by later transfers.
        self._dev: Any = None
        self._out, self._packet = 0, 64
        self._in: int | None = None
        self._detached = self._claimed = self._ready = False
        self._gone: str | None = None
        self._write_ex: ThreadPoolExecutor | None = None
        self._read_ex: ThreadPoolExecutor | None = None
        # A read whose caller timed out or was cancelled stays pending and is picked up by the
        # next read, so bytes it returns are not lost; surplus bytes wait in _rx.
        self._pending: asyncio.Future[bytes] | None = None
        self._rx = bytearray()
        self._read_lock = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        return self._ready and self._gone is None

    async def open(self, timeout: float) -> None:  # noqa: ASYNC109
        if self.is_open:
            return
        await self.close()  # a device that went away
        self._write_ex = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name} write")
        self._read_ex = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name} read")
        loop = asyncio.get_running_loop()
        try:
            async with deadline(timeout, f"{self.name}: open"):
                await loop.run_in_executor(self._write_ex, self._open_blocking)
        except BaseException:
            await self.close()  # waits for the open thread, then undoes what it did
            raise
        self._ready, self._gone = True, None

    async def close(self) -> None:
        write_ex, read_ex = self._write_ex, self._read_ex
        if write_ex is None or read_ex is None:
            return
        self._write_ex = self._read_ex = None
        self._ready = False
        self._pending, self._rx = None, bytearray()
        try:
            # In a worker thread, so the teardown completes even if this await is cancelled.
            await asyncio.to_thread(self._teardown, write_ex, read_ex)
        except Exception:
            _LOGGER.warning("%s: error while closing", self.name, exc_info=True)

    async def write(self, data: bytes, timeout: float) -> None:  # noqa: ASYNC109
        executor = self._executor(self._write_ex)
        loop = asyncio.get_running_loop()
        try:
            async with deadline(timeout, f"{self.name}: write"):
                await loop.run_in_executor(executor, self._write_blocking, data, _ms(timeout))
        except DeviceGone as exc:
            self._gone = str(exc)
            raise

    async def read(self, max_bytes: int, timeout: float) -> bytes:  # noqa: ASYNC109
        executor = self._executor(self._read_ex)
        if self._in is None:
            msg = f"{self.name}: interface {self.interface} has no bulk IN endpoint"
            raise TransportError(msg)
        # The lock: two readers awaiting one transfer would both append its bytes.
        async with deadline(timeout, f"{self.name}: read"), self._read_lock:
            if not self._rx:
                await self._fill(executor, max_bytes, _ms(timeout))
            data = bytes(self._rx[:max_bytes])
            del self._rx[:max_bytes]
            return data

    async def _fill(self, executor: ThreadPoolExecutor, max_bytes: int, transfer_ms: int) -> None:
        fut = self._pending
        if fut is None or (fut.done() and isinstance(fut.exception(), TransportTimeout)):
            # Whole packets: a device sending more than we asked for is a libusb overflow.
            size = math.ceil(max(1, max_bytes) / self._packet) * self._packet
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(executor, self._read_blocking, size, transfer_ms)
            self._pending = fut
        try:
            self._rx += await asyncio.shield(fut)
        except BaseException as exc:
            # Our deadline or a cancel leaves the transfer pending; a failed one is spent.
            if fut.done() and fut.exception() is not None:
                self._pending = None
            if isinstance(exc, DeviceGone):
                self._gone = str(exc)
            raise
        self._pending = None

    def _executor(self, executor: ThreadPoolExecutor | None) -> ThreadPoolExecutor:
        if self._gone is not None:
            raise DeviceGone(self._gone)
        if executor is None or not self._ready:
            msg = f"{self.name}: not open"
            raise DeviceGone(msg)
        return executor

    # ---- blocking parts, run in the executor threads -------------------------------------

    def _open_blocking(self) -> None:
        try:
            self._dev = dev = usb.core.find(
                idVendor=self.vendor_id,
                idProduct=self.product_id,
                backend=self._backend,
                custom_match=None if self.serial_number is None else self._serial_matches,
            )
            if dev is None:
                msg = f"{self.name}: no such USB device"
                raise DeviceNotFound(msg)
            if _kernel_driver_active(dev, self.interface):
                dev.detach_kernel_driver(self.interface)
                self._detached = True
            try:
                cfg = dev.get_active_configuration()
            except usb.core.USBError:  # unconfigured (errno None); ENODEV resurfaces below
                dev.set_configuration()
                cfg = dev.get_active_configuration()
            intf = usb.util.find_descriptor(cfg, bInterfaceNumber=self.interface)
            if intf is None:
                msg = f"{self.name}: no interface {self.interface}"
                raise TransportError(msg)
            out = _endpoint(intf, usb.util.ENDPOINT_OUT, self._want_out)
            if out is None:
                msg = f"{self.name}: interface {self.interface} has no bulk OUT endpoint"
                raise TransportError(msg)
            inp = _endpoint(intf, usb.util.ENDPOINT_IN, self._want_in)
            usb.util.claim_interface(dev, self.interface)
            self._claimed = True
        except usb.core.NoBackendError as exc:
            msg = f"{self.name}: no libusb backend (install libusb-1.0-0)"
            raise TransportError(msg) from exc
        except usb.core.USBError as exc:
            err = _map_error(self.name, "open", exc)
            if isinstance(err, DeviceGone):  # vanished between find and claim
                raise DeviceNotFound(str(err)) from exc
            raise err from exc
        except ValueError as exc:  # pyusb's "Invalid configuration" and the like
            msg = f"{self.name}: open: {exc}"
            raise TransportError(msg) from exc
        self._out = int(out.bEndpointAddress)
        self._in = None if inp is None else int(inp.bEndpointAddress)
        self._packet = max(1, int(inp.wMaxPacketSize)) if inp is not None else 64
        _LOGGER.debug("%s: open, OUT 0x%02x IN %s", self.name, self._out, self._in)

    def _serial_matches(self, dev: Any) -> bool:
        try:
            found = dev.serial_number  # opens the device and reads string descriptors
        except (usb.core.USBError, ValueError):  # no langid / no access / gone
            found = None
        if found != self.serial_number:
            usb.util.dispose_resources(dev)  # do not keep other devices' handles open
            return False
        return True

    def _write_blocking(self, data: bytes, timeout_ms: int) -> None:
        try:
            sent = int(self._dev.write(self._out, data, timeout_ms))
        except usb.core.USBError as exc:
            raise _map_error(self.name, "write", exc) from exc
        if sent != len(data):
            msg = f"{self.name}: short write, {sent} of {len(data)} bytes"
            raise TransportError(msg)

    def _read_blocking(self, size: int, timeout_ms: int) -> bytes:
        try:
            return bytes(self._dev.read(self._in, size, timeout_ms))
        except usb.core.USBError as exc:
            raise _map_error(self.name, "read", exc) from exc

    def _teardown(self, *executors: ThreadPoolExecutor) -> None:
        # Pending transfers end within their libusb timeout (or at once if unplugged).
        for executor in executors:
            executor.shutdown(wait=True)
        dev, self._dev = self._dev, None
        if dev is None:
            return
        try:
            if self._claimed:
                usb.util.release_interface(dev, self.interface)
            if self._detached:  # give the printer back to usblp
                dev.attach_kernel_driver(self.interface)
        except usb.core.USBError as exc:
            _LOGGER.debug("%s: release/reattach failed: %s", self.name, exc)
        finally:
            self._claimed = self._detached = False
            usb.util.dispose_resources(dev)


def _ms(timeout: float) -> int:
    # libusb takes whole milliseconds and treats 0 as "wait forever".
    return max(1, math.ceil(timeout * 1000))


def _kernel_driver_active(dev: Any, interface: int) -> bool:
    try:
        return bool(dev.is_kernel_driver_active(interface))
    except NotImplementedError:  # backends or OSes without kernel-driver control
        return False
    except usb.core.USBError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise


def _endpoint(intf: Any, direction: int, address: int | None) -> Any:
    def match(ep: Any) -> bool:
        if address is not None:
            return bool(ep.bEndpointAddress == address)
        return bool(
            usb.util.endpoint_direction(ep.bEndpointAddress) == direction
            and usb.util.endpoint_type(ep.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
        )

    return usb.util.find_descriptor(intf, custom_match=match)


def _map_error(name: str, what: str, exc: Any) -> TransportError:
    """Translate a pyusb USBError into the driver error hierarchy."""
    code, backend_code = exc.errno, getattr(exc, "backend_error_code", None)
    if isinstance(exc, usb.core.USBTimeoutError):  # first: it subclasses USBError
        partly = " (part of the data may have been sent)" if what == "write" else ""
        return TransportTimeout(f"{name}: {what} timed out in libusb{partly}")
    if code == errno.ENODEV or backend_code == _LIBUSB_NO_DEVICE:
        return DeviceGone(f"{name}: {what}: device unplugged")
    if code == errno.EBUSY or backend_code == _LIBUSB_BUSY:
        return TransportError(f"{name}: {what}: busy, another driver (usblp/CUPS) holds it")
    if code == errno.EACCES or backend_code == _LIBUSB_ACCESS:
        return TransportError(f"{name}: {what}: permission denied (udev rule for the device?)")
    return TransportError(f"{name}: {what}: {exc}")
