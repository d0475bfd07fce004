"""``python -m kassad.simulators.cctalk --pty [--crc] [--no-echo] [--control-port N]``."""

from __future__ import annotations

import sys

from kassad.simulators.cctalk.control import main

if __name__ == "__main__":
    sys.exit(main())
