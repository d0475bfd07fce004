"""Crash points for fault-injection tests: ``KASSAD_CRASH_AT=after_intent:3`` makes the daemon
die with ``os._exit(137)`` (no cleanup, like SIGKILL) the third time it passes that point.

Points: ``after_intent`` (intent committed, ack not sent), ``after_ack`` (ack sent, not
carried out), ``after_kick`` (the drawer's kick bytes sent, its ``drawer.kicked`` event not yet
journaled), ``after_result_commit`` (result journaled, not published), ``job_printing`` (a
print job marked printing, its bytes not yet sent). Unset: no effect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

ENV = "KASSAD_CRASH_AT"
POINTS = frozenset({"after_intent", "after_ack", "after_kick", "after_result_commit",
                    "job_printing"})
_LOGGER = logging.getLogger(__name__)


class CrashPoints:
    def __init__(self, point: str | None = None, nth: int = 1) -> None:
        if point is not None and point not in POINTS:
            raise ValueError(f"{ENV}: unknown crash point {point!r}; known: {sorted(POINTS)}")
        self._point = point
        self._remaining = nth

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CrashPoints:
        spec = env.get(ENV, "").strip()
        if not spec:
            return cls()
        point, _, nth = spec.partition(":")
        return cls(point, int(nth) if nth else 1)

    def hit(self, point: str) -> None:
        if point != self._point:
            return
        self._remaining -= 1
        if self._remaining == 0:
            _LOGGER.critical("%s=%s: crashing on purpose", ENV, point)
            logging.shutdown()
            os._exit(137)
