"""ITL SSP (unencrypted) note validators: frames.py + events.py (the codec, shared with the
simulator), protocol.py (SspLink: sequence bit, retransmission), driver.py (NoteValidator)."""
