"""The register's MQTT link under a burst (a group of replies, an outbox batch): every publish
arrives whole, the QoS 1 ones in the order they were handed over."""

from __future__ import annotations

import asyncio
import json

import aiomqtt

from kassad.daemon.mqtt.link import MqttLink, cancel_tasks
from kassad.simulators.broker import MosquittoBroker
from tests.support.register import broker_config


async def test_a_burst_of_publishes_arrives_whole_and_in_order(broker: MosquittoBroker) -> None:
    async def ignore(message: aiomqtt.Message) -> None:
        return None

    link = MqttLink(broker_config(broker.port), client_id="burst", subscriptions=[],
                    on_message=ignore, name="burst")
    running = asyncio.create_task(link.run())
    sizes = [10, 300, 70_000, 5, 200_000, *range(1, 400)]
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="reader",
                                  protocol=aiomqtt.ProtocolVersion.V5) as reader:
            await reader.subscribe("burst/#", qos=1)
            async with asyncio.timeout(10):
                await link.connected.wait()
            # All handed to paho in one turn of the loop, as a group of replies is; QoS 0
            # ones among them stay packets of their own.
            await asyncio.gather(*(
                link.publish(f"burst/{i % 3}", json.dumps({"i": i, "pad": "p" * size}),
                             qos=0 if i % 50 == 7 else 1)
                for i, size in enumerate(sizes)))
            got: list[dict[str, object]] = []
            async with asyncio.timeout(20):
                async for message in reader.messages:
                    assert isinstance(message.payload, bytes)
                    got.append(json.loads(message.payload))
                    if len(got) == len(sizes):
                        break
    finally:
        await cancel_tasks([running])
    # QoS 1 in the order published; a QoS 0 one may pass QoS 1 ones waiting for paho's
    # in-flight window (20), as without joining.
    qos1 = [i for i in range(len(sizes)) if i % 50 != 7]
    assert [g["i"] for g in got if g["i"] in set(qos1)] == qos1
    assert sorted(g["i"] for g in got) == list(range(len(sizes)))
    assert {g["i"]: len(str(g["pad"])) for g in got} == dict(enumerate(sizes))
