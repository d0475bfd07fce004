"""``python -m kassad.simulators.printer [options]`` runs the simulator;
``python -m kassad.simulators.printer control --control-port N verb [key=value …]`` drives one."""

from __future__ import annotations

import sys

from kassad.simulators.printer.control import control_main, main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["control"]:
        sys.exit(control_main(argv[1:]))
    sys.exit(main(argv))
