"""ccTalk: frames (8-bit checksum, CRC-16), the request/response protocol on the shared bus, and the devices (coin acceptor, bill validator, hopper)."""
