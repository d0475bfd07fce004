"""Test support: a real mosquitto broker and a fault-injecting TCP proxy."""
