"""What every coin or note counter driver gives the daemon (ccTalk, SSP): one small interface.

A counter device reports what it accepted by *channel* (a coin position, a note channel); which
coin or note a channel is — currency and value in minor units — comes from the device where the
protocol says (SSP SETUP REQUEST, ccTalk coin id) and from configuration where it cannot be
trusted. Events are plain frozen dataclasses; a driver calls its ``on_event`` callback once per
event, in order, and never twice for one accepted piece (exactly once, also when a poll reply is
lost or repeated).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """What the device says a channel is (None where it does not say)."""

    channel: int
    kind: Literal["coin", "note"]
    currency: str | None = None
    value_minor: int | None = None  # in the currency's minor units, if the device tells
    label: str | None = None  # e.g. the ccTalk coin id "SE100A"


@dataclass(frozen=True, slots=True)
class Identity:
    device: str  # configured name
    protocol: Literal["cctalk", "ssp"]
    address: int
    category: str | None = None  # "Coin Acceptor", "Payout", "Bill Validator", "validator"
    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None
    firmware: str | None = None
    channels: tuple[ChannelInfo, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Accepted:
    """One piece accepted (coin in the cash box, note stacked): count it, exactly once."""

    device: str
    channel: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A piece returned to the customer (not counted), with the device's reason."""

    device: str
    reason: str
    code: int | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """Something a person must see: jam, stacker full, fraud attempt, sensor error … ``active``
    False when the device says it cleared."""

    device: str
    fault: str  # stable snake_case: jam, stacker_full, fraud_attempt, coin_return_open …
    detail: str
    code: int | None = None
    active: bool = True


@dataclass(frozen=True, slots=True)
class Connection:
    """The device answered (True, with its identity) or stopped answering (False, why)."""

    device: str
    connected: bool
    reason: str
    identity: Identity | None = None


@dataclass(frozen=True, slots=True)
class Dispensed:
    """Hopper payout progress: coins paid and still unpaid of the last payout request."""

    device: str
    paid: int
    unpaid: int
    remaining: int


CounterEvent = Accepted | Rejected | Fault | Connection | Dispensed
EventCallback = Callable[[CounterEvent], None]


class CounterDevice(ABC):
    """One counter on its link; ``run()`` opens it, identifies it, and polls until cancelled."""

    name: str

    @property
    @abstractmethod
    def identity(self) -> Identity | None:
        """Known once the device has answered its identification at start."""

    @abstractmethod
    async def run(self) -> None: ...

    @abstractmethod
    async def enable(self, channels: frozenset[int] | None = None) -> None:
        """Accept these channels (None: every channel), clearing the master inhibit."""

    @abstractmethod
    async def disable(self) -> None:
        """Accept nothing (pieces inserted now are returned)."""
