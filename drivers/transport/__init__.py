"""Async byte transports: TCP, serial (pty works), USB (pyusb), and reconnection."""
