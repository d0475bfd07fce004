"""A fake pyusb backend: USB printers that tests and the simulator can plug, feed and unplug.

Layer: simulator (test double for :mod:`kassad.drivers.transport.usb`). Built from what pyusb
1.3.1 reads from a backend (recipes.md §1-2): every descriptor attribute pyusb copies exists,
``get_interface_descriptor`` raises IndexError past the last alt setting (else pyusb loops
forever), each plug gets a new address (Device equality is backend+bus+address), reads fill
pyusb's buffer in place and return the count, ``close_device`` never raises.

It is a plain threaded object: pyusb calls it from the transport's executor threads, so a
blocking ``bulk_read`` waits on a ``threading.Condition`` like a real libusb transfer and
``unplug`` wakes it with ENODEV. Errors have libusb1's shapes: (-4, ENODEV), (-6, EBUSY),
(-7, ETIMEDOUT), (-9, EPIPE).
"""

from __future__ import annotations

import array
import errno
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace as Desc

import usb.backend
import usb.core

LANGID_EN_US = 0x0409
_STRING = 3  # descriptor type


def _error(code: int) -> usb.core.USBError:
    if code == errno.ETIMEDOUT:
        return usb.core.USBTimeoutError("Operation timed out", -7, code)
    text, libusb = {
        errno.ENODEV: ("No such device (it may have been disconnected)", -4),
        errno.EBUSY: ("Resource busy", -6),
        errno.ENOENT: ("Entity not found", -5),
        errno.EPIPE: ("Pipe error", -9),
    }[code]
    return usb.core.USBError(text, libusb, code)


class FakeUsbDevice:
    """One device, one interface: a bulk OUT and (unless ``in_ep`` is None) a bulk IN endpoint."""

    def __init__(
        self,
        vendor_id: int,
        product_id: int,
        *,
        serial_number: str = "",
        manufacturer: str = "",
        product: str = "",
        interface_class: int = 7,
        out_ep: int = 0x01,
        in_ep: int | None = 0x82,
        max_packet: int = 64,
        on_write: Callable[[bytes], None] | None = None,
        kernel_driver_active: bool = True,
    ) -> None:
        self.vendor_id, self.product_id = vendor_id, product_id
        self.interface_class, self.max_packet = interface_class, max_packet
        self.out_ep, self.in_ep = out_ep, in_ep
        #: Called from pyusb's thread with each bulk OUT transfer (may call feed_in).
        self.on_write = on_write
        #: String descriptors 1..3; "" means "no string" (index 0 in the device descriptor).
        self.strings = {1: manufacturer, 2: product, 3: serial_number}
        #: Every bulk OUT transfer, in order.
        self.writes: list[bytes] = []
        #: True while usblp is bound to interface 0; it binds again on every plug.
        self.kernel_driver_active = self._binds_driver = kernel_driver_active
        self.detach_count = self.attach_count = 0
        #: Interfaces claimed through open handles.
        self.claimed: set[int] = set()
        #: Another process (CUPS's usb backend, a second daemon) holds the interface: EBUSY.
        self.claimed_elsewhere = False
        #: Current bus address; None while unplugged.
        self.address: int | None = None
        self._cond = threading.Condition()
        self._in = bytearray()
        self._readers_waiting = 0

    def feed_in(self, data: bytes) -> None:
        """Queue bytes the device sends to the host (read from the bulk IN endpoint)."""
        with self._cond:
            self._in += data
            self._cond.notify_all()

    def wait_read_pending(self, timeout: float) -> bool:
        """Block until a bulk_read waits for data; False on timeout (a test hook)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._readers_waiting > 0, timeout)

    def _endpoints(self) -> list[int]:
        return [self.out_ep] if self.in_ep is None else [self.out_ep, self.in_ep]


@dataclass(frozen=True)
class _DevId:
    device: FakeUsbDevice
    address: int


@dataclass(frozen=True)
class _Handle:
    device: FakeUsbDevice
    address: int  # a handle dies with its plug: after a replug it still raises ENODEV


@contextmanager
def _alive(handle: _Handle) -> Iterator[FakeUsbDevice]:
    """Hold the device's lock and raise ENODEV if the handle's device was unplugged."""
    device = handle.device
    with device._cond:
        if device.address is None or device.address != handle.address:
            raise _error(errno.ENODEV)
        yield device


class FakeUsbBackend(usb.backend.IBackend):  # type: ignore[misc]
    """Pass as ``backend=`` to ``usb.core.find`` or :class:`UsbTransport`."""

    BUS = 1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plugged: dict[FakeUsbDevice, int] = {}
        self._addresses = itertools.count(2)  # 1 is the root hub

    def plug(self, device: FakeUsbDevice) -> int:
        """Attach ``device`` at a fresh address (a replug never reuses the old one)."""
        with self._lock:
            address = self._plugged[device] = next(self._addresses)
        with device._cond:
            device.address, device.kernel_driver_active = address, device._binds_driver
            device.claimed.clear()
        return address

    def unplug(self, device: FakeUsbDevice) -> None:
        """Detach ``device``: find() stops listing it, its handles raise ENODEV, reads wake."""
        with self._lock:
            self._plugged.pop(device, None)
        with device._cond:
            device.address = None
            device.claimed.clear()
            device._in.clear()
            device._cond.notify_all()

    # ---- enumeration and descriptors: no handle, pyusb copies every attribute ----------

    def enumerate_devices(self) -> list[_DevId]:
        with self._lock:
            return [_DevId(dev, addr) for dev, addr in self._plugged.items()]

    def get_parent(self, dev: _DevId) -> None:
        return None

    def get_device_descriptor(self, dev: _DevId) -> Desc:
        d, has = dev.device, dev.device.strings
        return Desc(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=d.vendor_id, idProduct=d.product_id,
            bcdDevice=0x0100, bNumConfigurations=1, iManufacturer=1 if has[1] else 0,
            iProduct=2 if has[2] else 0, iSerialNumber=3 if has[3] else 0,
            address=dev.address, bus=self.BUS, port_number=1, port_numbers=(1,), speed=2,
        )  # fmt: skip

    def get_configuration_descriptor(self, dev: _DevId, config: int) -> Desc:
        if config != 0:
            raise IndexError(config)
        return Desc(
            bLength=9, bDescriptorType=2, wTotalLength=18 + 7 * len(dev.device._endpoints()),
            bNumInterfaces=1, bConfigurationValue=1, iConfiguration=0, bmAttributes=0xC0,
            bMaxPower=50, extra_descriptors=[],
        )  # fmt: skip

    def get_interface_descriptor(self, dev: _DevId, intf: int, alt: int, config: int) -> Desc:
        if (intf, alt, config) != (0, 0, 0):  # pitfall 1: pyusb walks alt += 1 until this
            raise IndexError((intf, alt, config))
        return Desc(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
            bNumEndpoints=len(dev.device._endpoints()), bInterfaceClass=dev.device.interface_class,
            bInterfaceSubClass=1, bInterfaceProtocol=2, iInterface=0, extra_descriptors=[],
        )  # fmt: skip

    def get_endpoint_descriptor(
        self, dev: _DevId, ep: int, intf: int, alt: int, config: int
    ) -> Desc:
        endpoints = dev.device._endpoints()
        if (intf, alt, config) != (0, 0, 0) or not 0 <= ep < len(endpoints):
            raise IndexError((ep, intf, alt, config))
        return Desc(
            bLength=7, bDescriptorType=5, bEndpointAddress=endpoints[ep], bmAttributes=2,
            wMaxPacketSize=dev.device.max_packet, bInterval=0, bRefresh=0, bSynchAddress=0,
            extra_descriptors=[],
        )  # fmt: skip

    # ---- handle operations ---------------------------------------------------------------

    def open_device(self, dev: _DevId) -> _Handle:
        handle = _Handle(dev.device, dev.address)
        with _alive(handle):
            return handle

    def close_device(self, dev_handle: _Handle) -> None:
        """Never raises: runs from dispose_resources and GC finalizers."""

    def get_configuration(self, dev_handle: _Handle) -> int:
        with _alive(dev_handle):
            return 1  # configured by the OS, like a real printer (pitfall 5)

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self._ping(dev_handle)

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._ping(dev_handle)

    def reset_device(self, dev_handle: _Handle) -> None:  # python-escpos calls this on open
        self._ping(dev_handle)

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._ping(dev_handle)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        with _alive(dev_handle) as d:
            if d.kernel_driver_active or d.claimed_elsewhere:
                raise _error(errno.EBUSY)
            d.claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        with _alive(dev_handle) as d:
            d.claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        with _alive(dev_handle) as d:
            return d.kernel_driver_active

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        with _alive(dev_handle) as d:
            if not d.kernel_driver_active:
                raise _error(errno.ENOENT)
            d.kernel_driver_active = False
            d.detach_count += 1

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        with _alive(dev_handle) as d:
            if d.kernel_driver_active or intf in d.claimed:
                raise _error(errno.EBUSY)
            d.kernel_driver_active = True
            d.attach_count += 1

    def bulk_write(
        self, dev_handle: _Handle, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        payload = data.tobytes()
        with _alive(dev_handle) as d:
            if ep != d.out_ep:
                raise _error(errno.EPIPE)
            d.writes.append(payload)
        if d.on_write is not None:  # outside the lock: the callback may feed_in() a reply
            d.on_write(payload)
        return len(payload)

    def bulk_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        until = None if timeout == 0 else time.monotonic() + timeout / 1000  # 0: forever
        while True:  # re-enter _alive after each wait: an unplug during the wait -> ENODEV
            with _alive(dev_handle) as d:
                if ep != d.in_ep:
                    raise _error(errno.EPIPE)
                if d._in:
                    count = min(len(buff), len(d._in))
                    buff[:count] = array.array("B", d._in[:count])  # in place (pitfall 4)
                    del d._in[:count]
                    return count
                remaining = None if until is None else until - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _error(errno.ETIMEDOUT)
                d._readers_waiting += 1
                d._cond.notify_all()
                d._cond.wait(remaining)
                d._readers_waiting -= 1

    def ctrl_transfer(  # pyusb's parameter names
        self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int, wIndex: int,
        data: array.array[int], timeout: int,
    ) -> int:  # fmt: skip
        with _alive(dev_handle) as d:
            # Only GET_DESCRIPTOR(STRING) is answered; anything else stalls like a real device.
            if (bmRequestType, bRequest, wValue >> 8) != (0x80, 6, _STRING):
                raise _error(errno.EPIPE)
            index = wValue & 0xFF
            if index == 0:  # the LANGID list
                reply = bytes([4, _STRING]) + LANGID_EN_US.to_bytes(2, "little")
            elif text := d.strings.get(index, ""):
                encoded = text.encode("utf-16-le")
                reply = bytes([2 + len(encoded), _STRING]) + encoded
            else:
                raise _error(errno.EPIPE)
            count = min(len(data), len(reply))
            data[:count] = array.array("B", reply[:count])
            return count

    def _ping(self, dev_handle: _Handle) -> None:
        with _alive(dev_handle):
            pass
