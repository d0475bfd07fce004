"""ccTalk: frames (checksum, CRC-16), the bus protocol, and the devices on it
(coin acceptor, bill validator, hopper).

frames.py   bytes <-> Frame, the stream reader, reply payloads, coin / bill ids (pure)
events.py   event code meanings, hopper status bits, the event-counter arithmetic (pure)
protocol.py CcTalkBus: one request at a time, echo check, retries, errors
device.py   what the three devices share (life cycle, identification, wanted state)
driver.py   CoinAcceptor, BillValidator (and Hopper, from hopper.py)
"""
