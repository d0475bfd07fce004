"""The store aggregator: every register's events in one store view (``kassad store``)."""
