"""A ccTalk bus simulator: coin acceptor (2), hopper (3) and bill validator (40) behind one pty.

devices.py holds the device models (answers, inhibits, the event counter and its 255 -> 1
wrap, the hopper's payout), bus.py the pty, the echo and the line faults, control.py the
standalone program (``python -m kassad.simulators.cctalk --pty``) and its JSON-lines control
port. Frames come from the driver's codec, kassad.drivers.cctalk.frames.
"""
