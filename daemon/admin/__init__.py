"""Putting kassad on a register and checking it there: ``kassad install`` (units, udev rules,
service user, example configuration) and ``kassad doctor`` (is this installation working?)."""
