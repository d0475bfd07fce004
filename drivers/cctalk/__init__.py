"""ccTalk: frames (checksum, CRC-16), the bus protocol, and the devices on it
(coin acceptor, bill validator, hopper)."""
