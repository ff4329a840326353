"""Typed settings from ``REGISTRY_*`` environment variables, read once at start."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    data_dir: Path
    bootstrap_token: str | None
    log_format: str  # "json" or "console"
    db_pool_size: int = 10

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("REGISTRY_DATA_DIR", "./registry-data")).expanduser().resolve()
        url = env.get("REGISTRY_DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'registry.db'}"
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ConfigError(
                "REGISTRY_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        log_format = env.get("REGISTRY_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
        if log_format not in ("json", "console"):
            raise ConfigError("REGISTRY_LOG_FORMAT must be json or console")
        pool = env.get("REGISTRY_DB_POOL_SIZE", "10")
        if not pool.isdigit() or int(pool) < 1:
            raise ConfigError("REGISTRY_DB_POOL_SIZE must be a positive integer")
        return cls(
            database_url=url,
            data_dir=data_dir,
            bootstrap_token=env.get("REGISTRY_BOOTSTRAP_TOKEN") or None,
            log_format=log_format,
            db_pool_size=int(pool),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
