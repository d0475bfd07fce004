"""kassad.drivers: the register's hardware (printer, drawer, counters); nothing about sessions or MQTT."""
