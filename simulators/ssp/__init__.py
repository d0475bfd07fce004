"""An ITL SSP note validator simulator on a pty."""
