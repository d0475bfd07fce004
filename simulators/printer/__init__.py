"""A virtual Epson-compatible receipt printer with a cash drawer on its kick port."""
