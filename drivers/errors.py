"""Errors of the hardware layer. Drivers know nothing of sessions or MQTT; the register service
turns these into its own error codes (device_unavailable, paper_out …)."""

from __future__ import annotations


class DriverError(Exception):
    """Root of every error raised under kassad.drivers."""


class TransportError(DriverError, OSError):
    """The byte transport to a device failed."""


class DeviceNotFound(TransportError):
    """The device is not there to open: no USB match, connection refused, no such tty."""


class DeviceGone(TransportError):
    """An open device vanished: unplugged, powered off, cable pulled, connection reset."""


class TransportTimeout(TransportError, TimeoutError):
    """An operation did not finish before its deadline (the device may still be there)."""


class ProtocolError(DriverError):
    """The device answered something that does not match its protocol (never read as 'OK')."""
