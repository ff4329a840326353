"""Adapters: the database, and later artifact stores, webhook and lineage senders."""
