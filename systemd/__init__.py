"""Data, not code: the unit files, udev rules, sysusers.d and modules-load.d files and example
configurations that ``kassad install`` puts in place (package data of ``kassad.systemd``)."""
