"""The MQTT connection supervisor (aiomqtt 2.5, MQTT 5, reconnect forever)."""
