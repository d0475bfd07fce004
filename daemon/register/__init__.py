"""The register service: wiring, command intake and dispatch, outbox relay."""
