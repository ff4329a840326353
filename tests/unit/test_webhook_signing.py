"""Webhook signatures checked by the reference verifier, and webhook secrets kept at rest.

Signatures are verified with the ``standardwebhooks`` package (what a receiver would run), not
with our own ``sign``; each failing case breaks one thing (standard-webhooks' own test style).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from registry.adapters.secrets import KEY_FILE, LazySecretBox, SecretBox, SecretKeyError, load_box
from registry.adapters.webhooks import sign, webhook_headers
from registry.services import webhooks as service

MSG_ID = "6a1c1e2e-3f5b-4b8e-9d62-0a4f5c8e9b10"
BODY = json.dumps({"type": "model_version.created", "timestamp": "2025-01-01T00:00:00.000000Z",
                   "data": {"id": MSG_ID, "model": "modèle", "version": 1}},
                  separators=(",", ":"), ensure_ascii=False).encode()


# -- signatures -------------------------------------------------------------------------------------


def test_sign_matches_the_standard_webhooks_test_vector() -> None:
    # From standard-webhooks' spec and its libraries' tests.
    assert sign(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330, b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_signed_with_one_secret_verify() -> None:
    secret = service.new_secret()
    headers = webhook_headers(MSG_ID, [secret], BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-signature"].count("v1,") == 1


def test_the_timestamp_header_is_the_given_time_in_whole_seconds() -> None:
    headers = webhook_headers(MSG_ID, [service.new_secret()], BODY, now=1_700_000_000.9)
    assert headers["webhook-timestamp"] == "1700000000"


@pytest.mark.parametrize("verifier", ["new", "old"])
def test_during_a_rotation_either_secret_verifies(verifier: str) -> None:
    new, old = service.new_secret(), service.new_secret()
    headers = webhook_headers(MSG_ID, [new, old], BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new if verifier == "new" else old).verify(BODY, headers) == json.loads(BODY)


def test_a_third_secret_does_not_verify_a_rotation_pair() -> None:
    headers = webhook_headers(MSG_ID, [service.new_secret(), service.new_secret()], BODY)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(service.new_secret()).verify(BODY, headers)


def test_a_tampered_body_fails() -> None:
    secret = service.new_secret()
    headers = webhook_headers(MSG_ID, [secret], BODY)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(BODY.replace(b'"version":1', b'"version":2'), headers)


def test_a_different_message_id_fails() -> None:
    secret = service.new_secret()
    headers = webhook_headers(MSG_ID, [secret], BODY)
    headers["webhook-id"] = "6a1c1e2e-3f5b-4b8e-9d62-0a4f5c8e9b11"
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(BODY, headers)


def test_a_changed_timestamp_within_tolerance_fails() -> None:
    secret = service.new_secret()
    now = time.time()
    headers = webhook_headers(MSG_ID, [secret], BODY, now=now)
    headers["webhook-timestamp"] = str(int(now) - 1)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(BODY, headers)


@pytest.mark.parametrize(("offset", "message"), [(-600, "too old"), (600, "too new")])
def test_a_timestamp_outside_the_tolerance_fails(offset: int, message: str) -> None:
    secret = service.new_secret()
    headers = webhook_headers(MSG_ID, [secret], BODY, now=time.time() + offset)
    with pytest.raises(WebhookVerificationError, match=message):
        Webhook(secret).verify(BODY, headers)


def test_a_timestamp_inside_the_tolerance_verifies() -> None:
    secret = service.new_secret()
    headers = webhook_headers(MSG_ID, [secret], BODY, now=time.time() - 240)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


# -- new secrets ------------------------------------------------------------------------------------


def test_a_new_secret_is_whsec_and_base64_of_32_random_bytes() -> None:
    new_secret = service.new_secret
    secrets_ = {new_secret() for _ in range(50)}
    assert len(secrets_) == 50
    for secret in secrets_:
        assert secret.startswith("whsec_")
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        assert len(raw) == 32
        Webhook(secret)  # the reference library accepts it


# -- secrets at rest --------------------------------------------------------------------------------

KEY_A = "a" * 31 + "1"
KEY_B = "b" * 40
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_box_opens_what_it_sealed() -> None:
    box = SecretBox([KEY_A])
    sealed = box.encrypt(WHSEC)
    assert sealed != WHSEC and "MfKQ9r8G" not in sealed
    assert box.decrypt(sealed) == WHSEC
    assert box.encrypt(WHSEC) != sealed  # fresh IV each time


def test_a_box_with_another_key_refuses() -> None:
    sealed = SecretBox([KEY_A]).encrypt(WHSEC)
    with pytest.raises(SecretKeyError, match="REGISTRY_SECRET_KEY"):
        SecretBox([KEY_B]).decrypt(sealed)


def test_a_tampered_ciphertext_refuses() -> None:
    box = SecretBox([KEY_A])
    sealed = box.encrypt(WHSEC)
    tampered = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    with pytest.raises(SecretKeyError):
        box.decrypt(tampered)


def test_a_box_needs_a_key() -> None:
    with pytest.raises(ValueError):
        SecretBox([])


def test_after_a_key_rotation_old_secrets_open_and_new_ones_use_the_first_key(tmp_path: Path) -> None:
    old_sealed = load_box(KEY_A, tmp_path).encrypt("old secret")
    rotated = load_box(f"{KEY_B},{KEY_A}", tmp_path)
    assert rotated.decrypt(old_sealed) == "old secret"
    new_sealed = rotated.encrypt("new secret")
    assert SecretBox([KEY_B]).decrypt(new_sealed) == "new secret"
    with pytest.raises(SecretKeyError):
        SecretBox([KEY_A]).decrypt(new_sealed)
    assert not (tmp_path / KEY_FILE).exists()  # configured keys are never written down


def test_configured_keys_ignore_spaces_and_empty_entries(tmp_path: Path) -> None:
    sealed = SecretBox([KEY_A]).encrypt(WHSEC)
    assert load_box(f" {KEY_B} ,, {KEY_A} ", tmp_path).decrypt(sealed) == WHSEC


def test_a_lazy_box_writes_nothing_until_used(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    box = LazySecretBox(None, data_dir)
    assert not data_dir.exists()
    sealed = box.encrypt(WHSEC)
    assert (data_dir / KEY_FILE).is_file()
    assert box.decrypt(sealed) == WHSEC


def test_a_lazy_box_with_a_configured_key_never_writes_one(tmp_path: Path) -> None:
    box = LazySecretBox(KEY_A, tmp_path)
    assert SecretBox([KEY_A]).decrypt(box.encrypt(WHSEC)) == WHSEC
    assert list(tmp_path.iterdir()) == []


def test_the_generated_key_is_private_made_once_and_reused(tmp_path: Path) -> None:
    sealed = load_box(None, tmp_path).encrypt(WHSEC)
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()
    assert len(key.strip()) >= 32
    # A later process (another box) finds the same key and opens what the first sealed.
    assert load_box(None, tmp_path).decrypt(sealed) == WHSEC
    assert LazySecretBox(None, tmp_path).decrypt(sealed) == WHSEC
    assert key_file.read_text() == key
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left behind


def test_a_fresh_data_directory_gets_a_different_key(tmp_path: Path) -> None:
    sealed = load_box(None, tmp_path / "one").encrypt(WHSEC)
    with pytest.raises(SecretKeyError):
        load_box(None, tmp_path / "two").decrypt(sealed)


def test_an_existing_key_file_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text(KEY_A + "\n")
    os.chmod(tmp_path / KEY_FILE, 0o600)
    sealed = load_box(None, tmp_path).encrypt(WHSEC)
    assert SecretBox([KEY_A]).decrypt(sealed) == WHSEC
