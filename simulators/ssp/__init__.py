"""An ITL SSP note validator simulator on a pty: unit.py (what the unit does), device.py
(packets, sequence bit, line faults), control.py (``python -m kassad.simulators.ssp``)."""
