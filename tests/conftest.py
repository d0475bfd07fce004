"""Fixtures shared by the integration tests: a real Mosquitto per test, on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kassad.simulators.broker import MosquittoBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def small_queue_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker that drops QoS 1 messages past 5 queued for one client."""
    with MosquittoBroker(tmp_path / "broker", max_queued_messages=5) as running:
        yield running
