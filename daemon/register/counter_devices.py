"""Configuration → counter device (ccTalk on a shared bus, or an SSP note validator)."""

from __future__ import annotations

from pathlib import Path

import serial

from kassad.drivers.cctalk.driver import BillValidator, CoinAcceptor
from kassad.drivers.cctalk.frames import ADDR_BILL_VALIDATOR, ADDR_COIN_ACCEPTOR
from kassad.drivers.cctalk.protocol import CcTalkBus
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


def make_counters(configs: list[CounterConfig], on_event: EventCallback
                  ) -> dict[str, CounterDevice]:
    """One device per configured counter; ccTalk devices on the same line share one bus."""
    buses: dict[Path, CcTalkBus] = {}
    devices: dict[str, CounterDevice] = {}
    for config in configs:
        if config.protocol == "ssp":
            devices[config.name] = _note_validator(config, on_event)
            continue
        bus = buses.get(config.path)
        if bus is None:
            # ccTalk runs 9600 8N1 on one wire: the host hears its own bytes (echo).
            link = serial_link(config.path, config.baudrate, serial.STOPBITS_ONE, config)
            bus = buses[config.path] = CcTalkBus(link, crc=config.crc,
                                                  response_timeout=config.response_timeout)
        devices[config.name] = _cctalk_device(config, bus, on_event)
    return devices


def _note_validator(config: CounterConfig, on_event: EventCallback) -> CounterDevice:
    # ITL SSP runs 9600 8N2.
    link = serial_link(config.path, config.baudrate, serial.STOPBITS_TWO, config)
    timings = ValidatorTimings(poll_interval=config.poll_interval,
                               reply_timeout=config.response_timeout)
    return NoteValidator(config.name, link, on_event=on_event,
                         address=config.address if config.address is not None else 0,
                         timings=timings, minor_units=minor_units)


def _cctalk_device(config: CounterConfig, bus: CcTalkBus,
                   on_event: EventCallback) -> CounterDevice:
    if config.kind == "bill_validator":
        return BillValidator(bus, config.name, address=config.address or ADDR_BILL_VALIDATOR,
                             on_event=on_event, poll_interval=config.poll_interval)
    return CoinAcceptor(bus, config.name, address=config.address or ADDR_COIN_ACCEPTOR,
                        on_event=on_event, poll_interval=config.poll_interval)


def channel_map(config: CounterConfig) -> dict[int, Denominated]:
    if config.currency is None:
        return {}
    return {channel: Denominated(config.currency, value)
            for channel, value in config.channels.items()}
