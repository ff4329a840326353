"""A model registry with a guarded stage machine, a tamper-evident audit log and an outbox."""

__version__ = "0.1.0"
