"""Thin resource classes over the transport, one per API area."""
