"""Configuration → counter device (ccTalk on a shared bus, or an SSP note validator)."""

from __future__ import annotations

from pathlib import Path

import serial

from kassad.drivers.counter import CounterDevice, EventCallback
from kassad.drivers.ssp.driver import NoteValidator, ValidatorTimings
from kassad.drivers.transport.reconnect import ReconnectingTransport
from kassad.drivers.transport.serial import SerialTransport

from ..config import CounterConfig
from ..ledger.money import ISO_4217_EXPONENTS
from .counting import Denominated


def minor_units(currency: str) -> int:
    """Minor-unit digits of a currency (unknown codes: 2, as most currencies have)."""
    return ISO_4217_EXPONENTS.get(currency, 2)


def serial_link(path: Path, baudrate: int, stopbits: float, config: CounterConfig
                ) -> ReconnectingTransport:
    where = str(path)
    return ReconnectingTransport(lambda: SerialTransport(where, baudrate, stopbits=stopbits),
                                 open_timeout=5.0, backoff_min=0.2, backoff_max=5.0,
                                 name=f"serial:{where}")


def make_counter(config: CounterConfig, on_event: EventCallback) -> CounterDevice:
    if config.protocol == "ssp":
        # ITL SSP runs 9600 8N2.
        link = serial_link(config.path, config.baudrate, serial.STOPBITS_TWO, config)
        timings = ValidatorTimings(poll_interval=config.poll_interval,
                                   reply_timeout=config.response_timeout)
        return NoteValidator(config.name, link, on_event=on_event,
                             address=config.address if config.address is not None else 0,
                             timings=timings, minor_units=minor_units)
    return make_cctalk(config, on_event)


def make_cctalk(config: CounterConfig, on_event: EventCallback) -> CounterDevice:
    raise NotImplementedError  # replaced below when the ccTalk driver lands


def channel_map(config: CounterConfig) -> dict[int, Denominated]:
    if config.currency is None:
        return {}
    return {channel: Denominated(config.currency, value)
            for channel, value in config.channels.items()}
