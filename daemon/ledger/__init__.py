"""The cash-session ledger: money, the session fold and the count rules. Pure: no I/O."""
