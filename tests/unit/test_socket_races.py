"""aiomqtt's race on a dropped connection (a socket watched after it closed) is one warning
line in the daemon's log, not a traceback; other unhandled errors still get one."""

import asyncio
import logging
import socket

import pytest

from kassad.daemon.mqtt.link import quiet_socket_races


def test_a_socket_closed_before_the_loop_watches_it_is_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        quiet_socket_races(loop)
        a, b = socket.socketpair()
        fd = a.fileno()
        a.close()
        b.close()
        # As aiomqtt does from paho's callback: the watch is scheduled, the socket closes first.
        loop.call_soon(loop.add_writer, fd, lambda: None)
        loop.call_soon(lambda: 1 / 0)  # any other error keeps asyncio's own report
        with caplog.at_level(logging.WARNING):
            loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()
    warnings = [r for r in caplog.records if "closed before the event loop" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    others = [r for r in caplog.records if r not in warnings]
    assert len(others) == 1 and others[0].exc_info is not None
    assert isinstance(others[0].exc_info[1], ZeroDivisionError)
