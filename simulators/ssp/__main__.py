"""``python -m kassad.simulators.ssp --pty [options]`` runs the SSP note validator simulator."""

from __future__ import annotations

import sys

from kassad.simulators.ssp.control import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
