"""The cash drawer as the sensor tells it: a pure state machine (no I/O, no clock).

The owner feeds it what happened — a kick it sent, a sensor reading, the passing of time —
with a monotonic timestamp, and gets back what it must report (events) and do (kick again).

    closed ──kick──▶ kicked ──sensor open──▶ open ──sensor closed──▶ closed
       │               │ no opening within open_timeout:
       │               │   kick again (at most kick_retries times), then kick_failed → closed
       └──sensor open (no kick)──▶ open, reported unexpected
    open for longer than left_open_after: left_open (once per opening)

The sensor's raw level (pin 3 high/low) is turned into open/closed by the caller with the
drawer's configured open level; this module only sees "open" or "closed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class DrawerState(StrEnum):
    UNKNOWN = "unknown"  # no sensor reading yet (device not connected)
    CLOSED = "closed"
    KICKED = "kicked"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class DrawerTimings:
    open_timeout: float = 1.5  # s from a kick to the sensor showing open
    kick_retries: int = 1  # kicks after the first when it does not open
    left_open_after: float = 60.0  # s open before the left_open alarm

    def __post_init__(self) -> None:
        if self.open_timeout <= 0 or self.left_open_after <= 0 or self.kick_retries < 0:
            raise ValueError("drawer timings must be positive (retries ≥ 0)")


@dataclass(frozen=True, slots=True)
class DrawerEvent:
    """Something to journal: ``type`` is the event type (``drawer.opened`` …)."""

    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class KickAgain:
    """The drawer did not open in time: send the kick once more."""

    attempt: int


@dataclass(slots=True)
class _Kick:
    cause: str
    reference: dict[str, Any]
    sent_at: float
    attempt: int = 1


@dataclass(slots=True)
class DrawerMachine:
    timings: DrawerTimings = field(default_factory=DrawerTimings)
    state: DrawerState = DrawerState.UNKNOWN
    opened_at: float | None = None
    open_cause: str | None = None
    alarmed: bool = False
    _kick: _Kick | None = None

    @property
    def is_open(self) -> bool:
        return self.state is DrawerState.OPEN

    def kicked(self, now: float, cause: str, reference: dict[str, Any] | None = None
               ) -> list[DrawerEvent]:
        """A kick was sent (``reference``: e.g. the command id, journaled with the events)."""
        kick = _Kick(cause, dict(reference or {}), now)
        if self.state is not DrawerState.OPEN:  # a kick of an open drawer changes nothing
            self._kick = kick
            self.state = DrawerState.KICKED
        return [DrawerEvent("drawer.kicked", {"cause": cause, "attempt": 1, **kick.reference})]

    def kicked_again(self, now: float, attempt: int) -> list[DrawerEvent]:
        if self._kick is None:
            return []
        self._kick.sent_at, self._kick.attempt = now, attempt
        return [DrawerEvent("drawer.kicked", {"cause": self._kick.cause, "attempt": attempt,
                                              **self._kick.reference})]

    def sensor(self, now: float, is_open: bool) -> list[DrawerEvent]:
        """A sensor reading (every poll or status message; repeats are fine)."""
        if is_open:
            if self.state is DrawerState.OPEN:
                return []
            kick, self._kick = self._kick, None
            previous = self.state
            self.state, self.opened_at, self.alarmed = DrawerState.OPEN, now, False
            if previous is DrawerState.UNKNOWN:
                # Found open at start-up or after a reconnect: say so, blame nobody.
                self.open_cause = "found_open"
                return [DrawerEvent("drawer.opened", {"cause": "found_open"})]
            if kick is None:
                self.open_cause = "unexpected"
                return [DrawerEvent("drawer.unexpected_open", {}),
                        DrawerEvent("drawer.opened", {"cause": "unexpected"})]
            self.open_cause = kick.cause
            return [DrawerEvent("drawer.opened", {"cause": kick.cause, "attempt": kick.attempt,
                                                  **kick.reference})]
        if self.state is DrawerState.OPEN:
            duration = None if self.opened_at is None else round(now - self.opened_at, 3)
            cause = self.open_cause
            self.state, self.opened_at, self.open_cause = DrawerState.CLOSED, None, None
            return [DrawerEvent("drawer.closed", {"open_seconds": duration, "cause": cause})]
        if self.state is DrawerState.UNKNOWN:
            self.state = DrawerState.CLOSED
        return []

    def sensor_lost(self) -> None:
        """The device went away: what the drawer does now is unknown."""
        self.state = DrawerState.UNKNOWN

    def tick(self, now: float) -> tuple[list[DrawerEvent], KickAgain | None]:
        """Time passed: a kick that did not open it, a drawer left open."""
        events: list[DrawerEvent] = []
        kick = self._kick
        if kick is not None and self.state is DrawerState.KICKED and (
                now - kick.sent_at >= self.timings.open_timeout):
            if kick.attempt <= self.timings.kick_retries:
                return [], KickAgain(kick.attempt + 1)
            self._kick = None
            self.state = DrawerState.CLOSED
            events.append(DrawerEvent("drawer.kick_failed", {
                "cause": kick.cause, "attempts": kick.attempt,
                "waited_seconds": self.timings.open_timeout, **kick.reference}))
        if (self.state is DrawerState.OPEN and not self.alarmed and self.opened_at is not None
                and now - self.opened_at >= self.timings.left_open_after):
            self.alarmed = True
            events.append(DrawerEvent("drawer.left_open", {
                "open_seconds": round(now - self.opened_at, 3), "cause": self.open_cause}))
        return events, None

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to say (for the owner's timer)."""
        deadlines = []
        if self._kick is not None and self.state is DrawerState.KICKED:
            deadlines.append(self._kick.sent_at + self.timings.open_timeout)
        if self.state is DrawerState.OPEN and not self.alarmed and self.opened_at is not None:
            deadlines.append(self.opened_at + self.timings.left_open_after)
        return min(deadlines) if deadlines else None


def sensor_is_open(pin3_high: bool, open_level: str) -> bool:
    """Pin 3's level to open/closed, with the drawer's open level ("high" or "low")."""
    if open_level not in ("high", "low"):
        raise ValueError(f"open level must be 'high' or 'low', not {open_level!r}")
    return pin3_high == (open_level == "high")
