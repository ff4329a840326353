"""Artifact paths, client digests and the manifest a seal freezes (registry.domain.artifacts).

A path is refused rather than repaired whenever some store could read it as something else; a
digest header is accepted in exactly one of two forms; the manifest's canonical text is RFC 8785
(checked against the ``rfc8785`` reference implementation, not against our own serialiser).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import unicodedata
from datetime import UTC, datetime

import pytest
import rfc8785

from registry.api.errors import status_of
from registry.domain.artifacts import (
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    Artifact,
    Manifest,
    artifact_path,
    client_digest,
    content_digest,
)
from registry.domain.errors import ValidationError

EMPTY_MANIFEST_DIGEST = "sha256:602e35a92eec4bc0a2ec6ae113f07bfc6933322fb69fe8dee416e5a67217e2a2"
WHEN = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("raw", [
    "model.onnx",
    "weights/part-0001.bin",
    "a/b/c/d/e/f.txt",
    "my model/final weights.bin",  # spaces inside names
    " lead and trail ",
    "100%.txt",  # '%' that starts no escape
    "50%off/%zz/%",
    "...",  # three dots is a name, not a relative step
    ".hidden/..config",
    "données/模型/😀.bin",
    "a\u2028b",  # a line separator is not a control character
])
def test_ordinary_paths_are_kept_as_given(raw: str) -> None:
    assert artifact_path(raw) == raw


def test_paths_are_nfc_normalised() -> None:
    nfd = unicodedata.normalize("NFD", "café/Ångström.bin")
    nfc = unicodedata.normalize("NFC", nfd)
    assert nfd != nfc
    assert artifact_path(nfd) == nfc == artifact_path(nfc)


def test_longest_paths_count_bytes_not_characters() -> None:
    two_byte = "é" * (MAX_SEGMENT_BYTES // 2)  # 254 bytes
    assert artifact_path(two_byte) == two_byte
    at_limit = "/".join(["x" * 255, "y" * 255])  # 511 bytes
    assert artifact_path(at_limit) == at_limit
    with pytest.raises(ValidationError):
        artifact_path("x" * 255 + "/" + "y" * 256)
    assert artifact_path("a/" * 255 + "bc") == "a/" * 255 + "bc"  # 512 bytes


# (path, words the message must contain)
REFUSED = [
    pytest.param("..", "'..'", id="dotdot"),
    pytest.param("a/../b", "'..'", id="dotdot-inside"),
    pytest.param("../etc/passwd", "'..'", id="dotdot-leading"),
    pytest.param("./a", "'.'", id="dot-leading"),
    pytest.param("a/.", "'.'", id="dot-trailing"),
    pytest.param(".", "'.'", id="dot"),
    pytest.param("/abs", "absolute", id="absolute"),
    pytest.param("//x", "absolute", id="double-slash"),
    pytest.param("a//b", "empty", id="empty-segment"),
    pytest.param("a/", "empty", id="trailing-slash"),
    pytest.param("", "name a file", id="empty"),
    pytest.param("a\\b", "'\\'", id="backslash"),
    pytest.param("..\\x", "'\\'", id="backslash-dotdot"),
    pytest.param("C:foo", "absolute", id="drive"),
    pytest.param("c:/windows", "absolute", id="drive-slash"),
    pytest.param("a\x00b", "control", id="nul"),
    pytest.param("a\nb", "control", id="newline"),
    pytest.param("a\tb", "control", id="tab"),
    pytest.param("a\x1fb", "control", id="unit-separator"),
    pytest.param("a\x7fb", "control", id="del"),
    pytest.param("a\x85b", "control", id="c1-next-line"),
    pytest.param("%2e%2e/x", "percent", id="encoded-dotdot"),
    pytest.param("a%2Fb", "percent", id="encoded-slash"),
    pytest.param("a%5cb", "percent", id="encoded-backslash"),
    pytest.param("%252e", "percent", id="double-encoded"),
    pytest.param("%252e%252e/x", "percent", id="double-encoded-dotdot"),
    pytest.param("x%00", "percent", id="encoded-nul"),
    pytest.param("caf%C3%A9", "percent", id="encoded-utf8"),
    pytest.param("x" * (MAX_PATH_BYTES + 1), f"{MAX_PATH_BYTES} bytes", id="path-too-long"),
    pytest.param("a/" * 256 + "b", f"{MAX_PATH_BYTES} bytes", id="path-too-long-segments"),
    # 302 characters but 602 bytes of UTF-8: only a byte count refuses it.
    pytest.param("/".join(["é" * 100] * 3), f"{MAX_PATH_BYTES} bytes", id="path-too-long-bytes"),
    pytest.param("x" * (MAX_SEGMENT_BYTES + 1), f"{MAX_SEGMENT_BYTES} bytes", id="segment-too-long"),
    # 128 characters, 256 bytes.
    pytest.param("d/" + "é" * 128, f"{MAX_SEGMENT_BYTES} bytes", id="segment-too-long-bytes"),
    pytest.param("😀" * 64, f"{MAX_SEGMENT_BYTES} bytes", id="segment-too-long-4-byte"),
]


@pytest.mark.parametrize(("raw", "says"), REFUSED)
def test_escaping_or_ambiguous_paths_are_refused(raw: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        artifact_path(raw)
    assert status_of(caught.value)[0] == 400
    assert says in caught.value.detail
    assert caught.value.detail.startswith("an artifact path") or "each name" in caught.value.detail


def test_nfd_input_is_measured_after_normalisation() -> None:
    # 'é' is 3 bytes decomposed and 2 composed: 120 of them are 360 bytes NFD, 240 bytes NFC.
    nfd = unicodedata.normalize("NFD", "é" * 120)
    assert len(nfd.encode()) > MAX_SEGMENT_BYTES
    assert artifact_path(nfd) == "é" * 120


def test_lone_surrogates_are_refused_as_invalid_paths() -> None:
    with pytest.raises(ValidationError):
        artifact_path("model\ud800.bin")


# -- client digests ---------------------------------------------------------------------------

BODY = b"the weights"
HEX = hashlib.sha256(BODY).hexdigest()
B64 = base64.b64encode(hashlib.sha256(BODY).digest()).decode()


def _b64_with_url_unsafe_chars() -> tuple[str, str]:
    """A digest whose base64 holds '+' or '/', so its URL-safe spelling differs."""
    for i in itertools.count():
        digest = hashlib.sha256(str(i).encode()).digest()
        std = base64.b64encode(digest).decode()
        if "+" in std or "/" in std:
            return std, base64.urlsafe_b64encode(digest).decode()
    raise AssertionError("unreachable")


def test_content_digest_form_gives_the_hex_digest() -> None:
    assert client_digest(f"sha-256=:{B64}:", None) == HEX
    assert client_digest(f"  sha-256=:{B64}:  ", None) == HEX


def test_amz_checksum_form_gives_the_hex_digest() -> None:
    assert client_digest(None, B64) == HEX
    assert client_digest(None, f" {B64} ") == HEX


def test_both_forms_agree() -> None:
    assert client_digest(f"sha-256=:{B64}:", None) == client_digest(None, B64) == HEX


def test_no_digest_is_none() -> None:
    assert client_digest(None, None) is None


def test_both_forms_at_once_are_refused() -> None:
    with pytest.raises(ValidationError, match="not both"):
        client_digest(f"sha-256=:{B64}:", B64)


def test_standard_base64_alphabet_with_plus_and_slash_is_accepted() -> None:
    std, _ = _b64_with_url_unsafe_chars()
    assert client_digest(None, std) == base64.b64decode(std).hex()
    assert client_digest(f"sha-256=:{std}:", None) == base64.b64decode(std).hex()


SHORT = base64.b64encode(b"\x01" * 31).decode()  # 44 characters, 31 bytes
LONG = base64.b64encode(b"\x01" * 33).decode()  # 44 characters without padding, 33 bytes
SHA512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
URLSAFE = _b64_with_url_unsafe_chars()[1]


@pytest.mark.parametrize("header", [
    pytest.param(f"sha-256=:{SHORT}:", id="31-bytes"),
    pytest.param(f"sha-256=:{LONG}:", id="33-bytes"),
    pytest.param(f"sha-256=:{B64[:-1]}:", id="no-padding"),
    pytest.param(f"sha-256=:{'!' * 43}=:", id="not-base64"),
    pytest.param(f"sha-256=:{URLSAFE}:", id="url-safe-alphabet"),
    pytest.param(f"sha-256=:{HEX}:", id="hex-not-base64"),
    pytest.param(f"sha-512=:{SHA512}:", id="sha-512"),
    pytest.param(f"sha-512=:{B64}:", id="sha-512-name-sha-256-length"),
    pytest.param(f"SHA-256=:{B64}:", id="upper-case-key"),
    pytest.param(f"sha-256={B64}", id="missing-colons"),
    pytest.param(f"sha-256=:{B64}", id="missing-closing-colon"),
    pytest.param(f"sha-256={B64}:", id="missing-opening-colon"),
    pytest.param(f"sha256=:{B64}:", id="sha256-spelling"),
    pytest.param(f"sha-256=:{B64}:, sha-512=:{SHA512}:", id="extra-member"),
    pytest.param(f"sha-512=:{SHA512}:, sha-256=:{B64}:", id="extra-member-first"),
    pytest.param(f"sha-256=:{B64}:;q=1", id="extra-parameter"),
    pytest.param(f"sha-256=: {B64}:", id="space-inside"),
    pytest.param("", id="empty"),
])
def test_malformed_content_digest_is_refused(header: str) -> None:
    with pytest.raises(ValidationError, match="Content-Digest|base64|32 bytes"):
        client_digest(header, None)


@pytest.mark.parametrize("header", [
    pytest.param(SHORT, id="31-bytes"),
    pytest.param(LONG, id="33-bytes"),
    pytest.param(B64[:-1], id="no-padding"),
    pytest.param("!" * 43 + "=", id="not-base64"),
    pytest.param(URLSAFE, id="url-safe-alphabet"),
    pytest.param(HEX, id="hex-not-base64"),
    pytest.param(SHA512, id="sha-512"),
    pytest.param(f"sha-256=:{B64}:", id="content-digest-syntax"),
    pytest.param(f"{B64},{B64}", id="list"),
    pytest.param("", id="empty"),
])
def test_malformed_amz_checksum_is_refused(header: str) -> None:
    with pytest.raises(ValidationError, match="x-amz-checksum-sha256"):
        client_digest(None, header)


@pytest.mark.parametrize("data", [b"", b"x", BODY, bytes(range(256)) * 100])
def test_content_digest_round_trips(data: bytes) -> None:
    hex_digest = hashlib.sha256(data).hexdigest()
    header = content_digest(hex_digest)
    assert header == "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"
    assert client_digest(header, None) == hex_digest


# -- the manifest -----------------------------------------------------------------------------

def _artifact(path: str, size: int, data: bytes | None = None) -> Artifact:
    digest = hashlib.sha256(data if data is not None else path.encode()).hexdigest()
    return Artifact(path=path, size=size, sha256=digest, uploaded_at=WHEN, uploaded_by="alice")


FILES = [
    _artifact("weights/part-0002.bin", 5 * 1024**4),  # 5 TiB
    _artifact("weights/part-0001.bin", 2**53 - 1),  # the largest integer JSON carries exactly
    _artifact("config.json", 0),
    _artifact('say "hi".txt', 17),
    _artifact("données/模型/😀.bin", 20 * 1024**3),
    _artifact("Zebra", 1),
    _artifact("a\u2028b", 2),
    _artifact("\uffff-last-bmp", 3),
]


def test_canonical_text_is_rfc8785() -> None:
    manifest = Manifest.of(FILES)
    expected = rfc8785.dumps({"files": [a.entry() for a in sorted(FILES, key=lambda a: a.path)]})
    assert manifest.canonical().encode() == expected


def test_canonical_text_of_the_empty_manifest() -> None:
    assert Manifest.of([]).canonical().encode() == rfc8785.dumps({"files": []}) == b'{"files":[]}'


def test_files_are_ordered_by_path_whatever_the_input_order() -> None:
    paths = sorted(a.path for a in FILES)
    digests = set()
    for order in (FILES, list(reversed(FILES)), FILES[3:] + FILES[:3], FILES[1::2] + FILES[::2]):
        manifest = Manifest.of(order)
        assert [f["path"] for f in manifest.files] == paths
        digests.add(manifest.digest)
    assert len(digests) == 1


def test_digest_is_the_sha256_of_the_canonical_text() -> None:
    manifest = Manifest.of(FILES)
    assert manifest.digest == "sha256:" + hashlib.sha256(manifest.canonical().encode()).hexdigest()
    assert manifest.to_dict() == {"files": [dict(f) for f in manifest.files], "digest": manifest.digest}


def test_every_field_changes_the_digest() -> None:
    base = Manifest.of([_artifact("a.bin", 10, b"one")]).digest
    assert Manifest.of([_artifact("b.bin", 10, b"one")]).digest != base
    assert Manifest.of([_artifact("a.bin", 11, b"one")]).digest != base
    assert Manifest.of([_artifact("a.bin", 10, b"two")]).digest != base
    assert Manifest.of([_artifact("a.bin", 10, b"one"), _artifact("c", 0)]).digest != base


def test_upload_facts_other_than_path_size_and_sha256_are_not_in_the_manifest() -> None:
    a = _artifact("a.bin", 10)
    b = Artifact(a.path, a.size, a.sha256, datetime(2030, 1, 1, tzinfo=UTC), "bob")
    assert Manifest.of([a]).digest == Manifest.of([b]).digest
    assert Manifest.of([a]).files == ({"path": "a.bin", "size": 10, "sha256": a.sha256},)


def test_the_storage_key_is_not_in_the_entry_nor_the_manifest() -> None:
    """Each write of a file has a key of its own: two writes of the same bytes seal the same."""
    a = _artifact("a.bin", 10)
    assert a.key == ""  # not given: no key yet
    keyed = [Artifact(a.path, a.size, a.sha256, WHEN, "alice", f"1/1/{n * 32}/a.bin") for n in "01"]
    assert keyed[0] != keyed[1] and keyed[0].key == "1/1/" + "0" * 32 + "/a.bin"
    assert keyed[0].entry() == keyed[1].entry() == a.entry() == {
        "path": "a.bin", "size": 10, "sha256": a.sha256}
    assert Manifest.of([keyed[0]]).digest == Manifest.of([keyed[1]]).digest == Manifest.of([a]).digest
    assert "key" not in Manifest.of(keyed[:1]).canonical()


def test_empty_manifest_digest_is_the_one_migration_0005_writes() -> None:
    assert Manifest.of([]).digest == EMPTY_MANIFEST_DIGEST
    assert EMPTY_MANIFEST_DIGEST == "sha256:" + hashlib.sha256(b'{"files":[]}').hexdigest()
