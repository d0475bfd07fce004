"""Storage of the store aggregator: one interface, SQLite (default) and PostgreSQL."""
