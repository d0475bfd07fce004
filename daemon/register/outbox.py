"""The outbox relay: journaled events → ``evt``, in seq order, until every consumer acks them.

A broker PUBACK is not delivery (Mosquitto drops queued QoS 1 messages past
``max_queued_messages``), so an event is done only when each configured consumer's cumulative
``ack/{consumer}`` covers it. The relay publishes from the lowest unacknowledged seq up to the
journal's head — never more than ``unacked_window`` beyond the slowest consumer's ack, so a
backlog does not overflow the consumer's broker queue — with at most ``inflight_window``
publishes awaiting PUBACK, then waits. When acks
stop progressing for ``resend_after`` (doubling up to ``resend_after_max``) it starts again from
the lowest unacknowledged seq; it also does after every reconnect and on ``ctl/resync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from functools import partial

from ..config import DeliveryConfig
from ..contract.events import utc_timestamp
from ..contract.topics import RegisterTopics
from ..journal.journal import Journal, until_written
from ..mqtt.link import MqttLink, NotConnected, PublishFailed

_LOGGER = logging.getLogger(__name__)

#: At most this many just-journaled event bodies are kept for the relay (~1 KB each).
FRESH_MAX = 2000


def with_replayed(body: str, replayed: bool) -> str:
    """The stored canonical body plus the unhashed ``replayed`` flag."""
    return f'{body[:-1]},"replayed":{"true" if replayed else "false"}}}'


class Outbox:
    def __init__(self, journal: Journal, topics: RegisterTopics, config: DeliveryConfig,
                 acked: dict[str, int]) -> None:
        self._journal = journal
        self._topics = topics
        self._config = config
        self.consumers = list(config.consumers)
        self.acked: dict[str, int] = {c: acked.get(c, 0) for c in self.consumers}
        self.head = journal.last_seq
        self._wake = asyncio.Event()
        self._rewind_to: int | None = None
        self._sent_upto = 0  # highest seq published in this boot: a lower one is a replay
        self._dirty_acks: set[str] = set()
        self._acks_changed = asyncio.Event()
        # The bodies of events just journaled, by seq, so that the relay publishes them
        # without reading them back from the journal (a hop to its thread per event or
        # batch). Bounded: past FRESH_MAX (a long outage) the relay reads the journal.
        self._fresh: dict[int, str] = {}

    def reconfigure(self, config: DeliveryConfig) -> None:
        """A reload: timings and windows apply from the next publish; consumers do not change
        (``kassad.daemon.config.RELOADABLE`` leaves them for a restart)."""
        self._config = config

    @property
    def low_water(self) -> int:
        """Highest seq every consumer has acknowledged (the head when there are none)."""
        return min(self.acked.values()) if self.consumers else self.head

    @property
    def pending(self) -> int:
        return self.head - self.low_water

    def notify(self, head: int, bodies: Iterable[tuple[int, str]] = ()) -> None:
        """Events up to ``head`` are journaled; ``bodies`` are (seq, body) of new ones."""
        for seq, body in bodies:
            if len(self._fresh) >= FRESH_MAX:
                break
            self._fresh[seq] = body
        self.head = max(self.head, head)
        self._wake.set()

    def _rows(self, cursor: int, count: int) -> list[tuple[int, str]] | None:
        """Rows ``cursor``… from memory when they all are there, else None; drops what is
        before ``cursor`` (published, or acknowledged and rewound past)."""
        for seq in [seq for seq in self._fresh if seq < cursor]:
            del self._fresh[seq]
        rows = []
        for seq in range(cursor, cursor + count):
            body = self._fresh.get(seq)
            if body is None:
                return None
            rows.append((seq, body))
        return rows

    def resync(self, from_seq: int) -> None:
        self._rewind_to = max(1, min(from_seq, self.head + 1))
        self._wake.set()

    def on_ack(self, consumer: str, epoch: int, upto_seq: int) -> bool:
        """Take a consumer's cumulative ack; True if it moved the consumer's mark forward."""
        if consumer not in self.acked:
            _LOGGER.debug("ack from %s, which is not a configured consumer: ignored", consumer)
            return False
        if epoch != self._journal.epoch:
            _LOGGER.info("ack from %s for epoch %s, ours is %s: ignored", consumer, epoch,
                         self._journal.epoch)
            return False
        if upto_seq > self.head:
            _LOGGER.warning("ack from %s up to seq %s, beyond our head %s: capped", consumer,
                            upto_seq, self.head)
            upto_seq = self.head
        if upto_seq <= self.acked[consumer]:
            return False
        self.acked[consumer] = upto_seq
        self._dirty_acks.add(consumer)
        self._acks_changed.set()
        self._wake.set()
        return True

    async def save_acks(self) -> None:
        """Persist ack marks as they change, so a restart does not resend what was acked."""
        while True:
            await self._acks_changed.wait()
            self._acks_changed.clear()
            dirty, self._dirty_acks = self._dirty_acks, set()
            for consumer in dirty:
                # On a full disk it waits (the latest mark is written once it can be); a mark
                # not saved only costs a resend of what the consumer already has.
                await until_written(partial(self._save_ack, consumer),
                                    f"the ack of {consumer}")

    async def _save_ack(self, consumer: str) -> None:
        await self._journal.run(self._journal.file.save_ack, consumer, self._journal.epoch,
                                self.acked[consumer], utc_timestamp())

    async def relay(self, link: MqttLink) -> None:
        """Publish for the life of one connection (cancelled when it drops)."""
        window = asyncio.Semaphore(self._config.inflight_window)
        failed = asyncio.Event()
        cursor = self.low_water + 1
        resend_after = self._config.resend_after
        async with asyncio.TaskGroup() as group:
            while True:
                if failed.is_set():
                    # A publish timed out: wait for the in-flight ones, then start over from
                    # the acknowledged mark (consumers drop what they already have).
                    for _ in range(self._config.inflight_window):
                        await window.acquire()
                    for _ in range(self._config.inflight_window):
                        window.release()
                    failed.clear()
                    cursor = self.low_water + 1
                if self._rewind_to is not None:
                    cursor, self._rewind_to = self._rewind_to, None
                if cursor <= self._limit():
                    count = min(self._config.batch, self._limit() - cursor + 1)
                    rows = self._rows(cursor, count)
                    if rows is None:
                        rows = await self._journal.run(self._journal.file.read_events, cursor,
                                                       count)
                    for seq, body in rows:
                        await window.acquire()
                        replayed = seq <= self._sent_upto
                        self._sent_upto = max(self._sent_upto, seq)
                        group.create_task(self._publish(link, seq, body, replayed, window,
                                                        failed))
                        cursor = seq + 1
                    continue
                self._wake.clear()
                mark = self.low_water
                if mark >= self.head:
                    await self._wake.wait()
                    resend_after = self._config.resend_after
                    continue
                try:
                    async with asyncio.timeout(resend_after):
                        while self.low_water == mark and cursor > self._limit() and (
                                self._rewind_to is None):
                            self._wake.clear()
                            await self._wake.wait()
                    resend_after = self._config.resend_after
                except TimeoutError:
                    _LOGGER.info("no ack progress for %.1fs (acked %s, head %s): resending",
                                 resend_after, self.low_water, self.head)
                    cursor = self.low_water + 1
                    resend_after = min(resend_after * 2, self._config.resend_after_max)

    def _limit(self) -> int:
        """The highest seq to publish now: the head, but no further ahead of the slowest
        consumer's ack than ``unacked_window`` — more would overflow its broker queue
        (Mosquitto drops past ``max_queued_messages``) and cost resyncs of everything."""
        if not self.consumers:
            return self.head
        return min(self.head, self.low_water + self._config.unacked_window)

    async def _publish(self, link: MqttLink, seq: int, body: str, replayed: bool,
                       window: asyncio.Semaphore, failed: asyncio.Event) -> None:
        try:
            await link.publish(self._topics.evt, with_replayed(body, replayed), qos=1,
                               timeout=self._config.publish_timeout)
        except (NotConnected, PublishFailed) as e:
            _LOGGER.warning("event seq %s not published: %s", seq, e)
            failed.set()
        finally:
            window.release()


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
