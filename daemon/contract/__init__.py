"""The public MQTT contract v1: topics, command, reply and event models, JSON Schemas."""
