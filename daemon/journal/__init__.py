"""The register journal: SQLite events (epoch, seq, hash chain), commands, ack marks."""
