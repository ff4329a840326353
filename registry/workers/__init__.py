"""Outbox relay, delivery dispatcher and pruner: run inside ``serve`` or by ``worker``."""
