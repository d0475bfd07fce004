"""Configuration → byte transport. USB tests inject a pyusb backend (the only mocked layer)."""

from __future__ import annotations

from typing import Any

import serial

from kassad.drivers.transport.base import Transport
from kassad.drivers.transport.serial import SerialTransport
from kassad.drivers.transport.tcp import TcpTransport
from kassad.drivers.transport.usb import UsbTransport

from ..config import SerialTransportConfig, TcpTransportConfig, TransportConfig

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


def make_transport(config: TransportConfig, usb_backend: Any = None) -> Transport:
    if isinstance(config, TcpTransportConfig):
        return TcpTransport(config.host, config.port)
    if isinstance(config, SerialTransportConfig):
        return SerialTransport(
            str(config.path), config.baudrate, parity=_PARITY[config.parity],
            stopbits=float(config.stopbits), xonxoff=config.flow == "xonxoff",
            rtscts=config.flow == "rtscts", dsrdtr=config.flow == "dsrdtr")
    return UsbTransport(config.vendor_id, config.product_id, config.serial_number,
                        config.interface, backend=usb_backend)
