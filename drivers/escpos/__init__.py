"""ESC/POS: the encoder (python-escpos as a byte generator), status parsing, the printer."""
