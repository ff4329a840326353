"""Use cases: one async function per command, each one unit of work."""
