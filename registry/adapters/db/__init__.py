"""Relational storage on PostgreSQL (asyncpg) and SQLite (aiosqlite), through SQLAlchemy Core."""
