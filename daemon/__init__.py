"""kassad.daemon: the register service, the store aggregator and what they share."""

__version__ = "0.1.0"
