"""kassad.drivers: the register's hardware (printer, drawer, counters).

Nothing here knows about sessions or MQTT: drivers turn device bytes into typed states.
"""
