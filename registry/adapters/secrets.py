"""Webhook secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) under ``REGISTRY_SECRET_KEY``.

The setting may hold several keys, comma-separated, newest first: the first encrypts, any of them
decrypts, so keys can be rotated. Each key is any string of 32 characters or more, stretched to a
Fernet key with SHA-256. Without the setting, a key is generated into the data directory once (on
PostgreSQL with several hosts, set it: every process must hold the same key).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEY_FILE = "secret.key"


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(_fernet_key(k)) for k in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored webhook secret cannot be decrypted with REGISTRY_SECRET_KEY") from None


class SecretKeyError(RuntimeError):
    """The configured key does not open what was stored under another key."""


def _fernet_key(key: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(key.strip().encode()).digest())


class LazySecretBox:
    """Opens (or makes) the key on first use, so building the app writes nothing."""

    def __init__(self, configured: str | None, data_dir: Path) -> None:
        self._configured, self._data_dir = configured, data_dir
        self._box: SecretBox | None = None

    def box(self) -> SecretBox:
        if self._box is None:
            self._box = load_box(self._configured, self._data_dir)
        return self._box

    def encrypt(self, plaintext: str) -> str:
        return self.box().encrypt(plaintext)

    def decrypt(self, ciphertext: str) -> str:
        return self.box().decrypt(ciphertext)


def load_box(configured: str | None, data_dir: Path) -> SecretBox:
    """The box for the configured keys, or for the key in the data directory (made if absent)."""
    if configured:
        return SecretBox([k for k in configured.split(",") if k.strip()])
    path = data_dir / KEY_FILE
    if not path.exists():
        # Written whole under a temporary name, then linked into place: processes starting at
        # once all end up with the first one's key, never a half-written file.
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(48).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return SecretBox([path.read_text().strip()])
