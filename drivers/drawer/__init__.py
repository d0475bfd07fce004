"""The cash drawer: the sensor-driven state machine and its kick paths."""
