"""Backup and restore of the whole registry: ``python -m registry export FILE`` and
``python -m registry restore FILE`` (on the server host, on the database directly).

Importing this package is cheap (argparse only): the command line's ``--help`` must stay fast, so
the database and archive modules load when a command runs.
"""

from registry.backup.cli import add_commands

__all__ = ["add_commands"]
