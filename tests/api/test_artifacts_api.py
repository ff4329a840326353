"""Artifact files over real HTTP, on a served process per backend with the local store and with
the S3 store (moto on loopback, checking the registry's signatures): uploads and their digests,
what a refused upload leaves behind (nothing), path escapes, listing, downloads, presigned
uploads, sealing and its audit trail, the `artifact` policy field, URI resolution, racing writers,
and the ``artifacts`` CLI.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import rfc8785

from registry.domain.artifacts import Artifact, Manifest
from tests.api.helpers import (
    api_client,
    assert_problem,
    assert_utc,
    audit,
    create_model,
    events,
    model_id,
    move,
    pages,
    register,
    seg,
)
from tests.s3_support import S3Server, s3_server, signatures_unchecked
from tests.support import REPO, Server, free_port, run_server, server_for

MAX = 1_000_000  # REGISTRY_MAX_ARTIFACT_BYTES of every server here
PREFIX = "registry/files"
SEALED = "model_version.artifacts_sealed"
EMPTY_MANIFEST = "sha256:602e35a92eec4bc0a2ec6ae113f07bfc6933322fb69fe8dee416e5a67217e2a2"


@dataclass
class Site:
    """A served registry and the store behind it."""

    server: Server
    store: str  # "local" or "s3"
    data: Path
    s3: S3Server | None = None
    bucket: str | None = None
    endpoint: str | None = None  # the S3 endpoint the server was given

    def keys(self) -> set[str]:
        """Every object in the store, by its key under the store's root (or prefix)."""
        if self.store == "local":
            root = self.data / "artifacts"
            return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        assert self.s3 is not None and self.bucket is not None
        listed = self.s3.client().list_objects(bucket_name=self.bucket, prefix=PREFIX + "/", recursive=True)
        return {o.object_name.removeprefix(PREFIX + "/") for o in listed}

    def objects(self, name: str, path: str, version: int = 1) -> list[str]:
        """The keys holding ``path`` of the version: every write has a key of its own,
        ``<model id>/<version>/<32 hex>/<path>``, found here by listing the store."""
        pattern = re.compile(rf"{model_id(self.server, name)}/{version}/[0-9a-f]{{32}}/{re.escape(path)}")
        return sorted(k for k in self.keys() if pattern.fullmatch(k))

    def version_objects(self, name: str, version: int = 1) -> dict[str, list[str]]:
        """Every object under the version's part of the store, by the path it holds."""
        pattern = re.compile(rf"{model_id(self.server, name)}/{version}/[0-9a-f]{{32}}/(.+)")
        found: dict[str, list[str]] = {}
        for key in sorted(self.keys()):
            if match := pattern.fullmatch(key):
                found.setdefault(match[1], []).append(key)
        return found


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def local(server_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp(f"artifacts-local-{server_backend}")
    with server_for(server_backend, data, extra_env={"REGISTRY_MAX_ARTIFACT_BYTES": str(MAX)}) as srv:
        yield Site(srv, "local", data)


@pytest.fixture(scope="module")
def on_s3(server_backend: str, s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp(f"artifacts-s3-{server_backend}")
    bucket = s3.make_bucket("registry")
    env = {"REGISTRY_MAX_ARTIFACT_BYTES": str(MAX), "REGISTRY_ARTIFACTS_URL": f"s3://{bucket}/{PREFIX}",
           "REGISTRY_S3_ENDPOINT": s3.endpoint, "REGISTRY_S3_ACCESS_KEY": s3.access_key,
           "REGISTRY_S3_SECRET_KEY": s3.secret_key, "REGISTRY_S3_REGION": s3.region}
    with server_for(server_backend, data, extra_env=env) as srv:
        yield Site(srv, "s3", data, s3, bucket, s3.endpoint)


@pytest.fixture(scope="module")
def s3_down(on_s3: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A second server on the S3 site's database and bucket, stopping nothing: its
    REGISTRY_S3_ENDPOINT is a closed port, so every call it makes to the store fails."""
    data = tmp_path_factory.mktemp("artifacts-s3-down")
    assert on_s3.s3 is not None
    closed = f"http://127.0.0.1:{free_port()}"
    env = {"REGISTRY_MAX_ARTIFACT_BYTES": str(MAX), "REGISTRY_ARTIFACTS_URL": f"s3://{on_s3.bucket}/{PREFIX}",
           "REGISTRY_S3_ENDPOINT": closed, "REGISTRY_S3_ACCESS_KEY": on_s3.s3.access_key,
           "REGISTRY_S3_SECRET_KEY": on_s3.s3.secret_key, "REGISTRY_S3_REGION": on_s3.s3.region}
    with run_server(on_s3.server.database_url, data, extra_env=env, migrated=True) as srv:
        # The database has its tokens already: this server's bootstrap token was never created.
        yield Site(replace(srv, token=on_s3.server.token), "s3", data, on_s3.s3, on_s3.bucket, closed)


@pytest.fixture(params=["local", "s3"])
def site(request: pytest.FixtureRequest, server_backend: str) -> Site:
    """Each store in turn (``server_backend`` named so that both backends run it)."""
    return request.getfixturevalue("local" if request.param == "local" else "on_s3")


@pytest.fixture
def c(site: Site) -> Iterator[httpx.Client]:
    with api_client(site.server) as client:
        yield client


@pytest.fixture
def lc(local: Site) -> Iterator[httpx.Client]:
    with api_client(local.server) as client:
        yield client


@pytest.fixture
def sc(on_s3: Site) -> Iterator[httpx.Client]:
    with api_client(on_s3.server) as client:
        yield client


# -- helpers ----------------------------------------------------------------------------------------


def vpath(name: str, version: int = 1) -> str:
    return f"/models/{seg(name)}/versions/{version}"


def apath(name: str, path: str, version: int = 1) -> str:
    return f"{vpath(name, version)}/artifacts/{quote(path, safe='/')}"


def b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cd(data: bytes) -> str:
    return f"sha-256=:{b64(data)}:"


def put(c: httpx.Client, name: str, path: str, data: Any, version: int = 1,
        **headers: str) -> httpx.Response:
    return c.put(apath(name, path, version), content=data, headers=headers)


def fresh(c: httpx.Client, versions: int = 1) -> str:
    name = create_model(c, "art")
    register(c, name, versions)
    return name


def listed(c: httpx.Client, name: str, version: int = 1) -> list[dict[str, Any]]:
    return [item for page in pages(c, f"{vpath(name, version)}/artifacts", limit=1000) for item in page]


def files_of(c: httpx.Client, name: str, version: int = 1) -> list[tuple[str, int, str]]:
    return [(f["path"], f["size"], f["sha256"]) for f in listed(c, name, version)]


def version_of(c: httpx.Client, name: str, version: int = 1) -> dict[str, Any]:
    r = c.get(vpath(name, version))
    assert r.status_code == 200, r.text
    return r.json()


def stored(site: Site, key: str) -> bytes:
    """The bytes the store holds at ``key``, read behind the service's back."""
    if site.store == "local":
        return (site.data / "artifacts" / key).read_bytes()
    assert site.s3 is not None and site.bucket is not None
    response = site.s3.client().get_object(bucket_name=site.bucket, object_name=f"{PREFIX}/{key}")
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def held(site: Site, name: str, path: str, version: int = 1) -> bytes:
    """The bytes of the one object the store holds for ``path`` (exactly one: no orphan)."""
    keys = site.objects(name, path, version)
    assert len(keys) == 1, keys
    return stored(site, keys[0])


def assert_store_matches(site: Site, c: httpx.Client, name: str, version: int = 1) -> None:
    """The version's objects are exactly its listed files, one each, holding the listed bytes:
    no listed file without its bytes, no object left behind by a replace, delete or refusal."""
    files = {f["path"]: f for f in listed(c, name, version)}
    objects = site.version_objects(name, version)
    assert sorted(objects) == sorted(files), (objects, files)
    for path, keys in objects.items():
        assert len(keys) == 1, (path, keys)
        data = stored(site, keys[0])
        assert (len(data), sha(data)) == (files[path]["size"], files[path]["sha256"]), path


def download(site: Site, c: httpx.Client, name: str, path: str, version: int = 1) -> bytes:
    """The file's bytes as a client gets them: streamed (local) or through the presigned URL (S3)."""
    r = c.get(apath(name, path, version))
    if site.store == "local":
        assert r.status_code == 200, r.text
        return r.content
    assert r.status_code == 307, r.text
    with signatures_unchecked():  # moto cannot check presigned URLs (tests/s3_support.py)
        got = httpx.get(r.headers["location"], timeout=30)
    assert got.status_code == 200, got.text
    return got.content


class _RawConnection(http.client.HTTPConnection):
    """Sends the request line's bytes as given (http.client would refuse any non-ASCII byte)."""

    def _encode_request(self, request: str) -> bytes:
        return request.encode("latin-1")


def raw_request(server: Server, method: str, raw_path: str | bytes, content: bytes = b"x") -> httpx.Response:
    """A request whose path goes out byte for byte as written (bytes: not even percent-encoded).
    httpx removes dot segments even from a ``raw_path``, so this uses http.client, which sends
    the target untouched."""
    url = urlsplit(server.url)
    target = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else raw_path
    conn = _RawConnection(url.hostname or "", url.port, timeout=30)
    try:
        body = content if method == "PUT" else None
        conn.request(method, target, body=body, headers=server.headers)
        answer = conn.getresponse()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read(),
                              request=httpx.Request(method, server.url + quote(target, safe="/%")))
    finally:
        conn.close()


def manifest_of(files: list[dict[str, Any]]) -> Manifest:
    return Manifest.of(Artifact(f["path"], f["size"], f["sha256"], datetime.now(), "") for f in files)


def jcs_digest(files: list[dict[str, Any]]) -> str:
    """The manifest digest computed independently: RFC 8785 of {files: [{path, size, sha256}...]}."""
    entries = sorted(({"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in files),
                     key=lambda f: f["path"])
    return "sha256:" + hashlib.sha256(rfc8785.dumps({"files": entries})).hexdigest()


def no_uploads(site: Site) -> None:
    temps = [k for k in site.keys() if k.startswith(".uploads/")]
    assert temps == [], temps


# -- uploads ----------------------------------------------------------------------------------------


def test_upload_creates_then_replaces_with_either_digest_header(site: Site, c: httpx.Client) -> None:
    name = fresh(c)
    before = site.keys()
    first, second = os.urandom(3000), os.urandom(2000)

    r = put(c, name, "weights/model.bin", first, **{"Content-Digest": cd(first)})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["path"], body["size"], body["sha256"]) == ("weights/model.bin", 3000, sha(first))
    assert body["uploaded_by"] and assert_utc(body["uploaded_at"])
    assert r.headers["content-digest"] == cd(first)
    [first_key] = site.objects(name, "weights/model.bin")
    assert first_key.endswith("/weights/model.bin") and stored(site, first_key) == first

    r = put(c, name, "weights/model.bin", second, **{"x-amz-checksum-sha256": b64(second)})
    assert r.status_code == 200, r.text
    assert (r.json()["size"], r.json()["sha256"]) == (2000, sha(second))
    assert r.headers["content-digest"] == cd(second)
    [second_key] = site.objects(name, "weights/model.bin")  # the first write's object is gone
    assert second_key != first_key

    r = put(c, name, "no-digest.txt", b"plain")  # the digest header is optional
    assert r.status_code == 201, r.text
    assert files_of(c, name) == [("no-digest.txt", 5, sha(b"plain")), ("weights/model.bin", 2000, sha(second))]
    assert held(site, name, "weights/model.bin") == second
    assert download(site, c, name, "weights/model.bin") == second
    assert site.keys() - before == {second_key, *site.objects(name, "no-digest.txt")}
    assert_store_matches(site, c, name)
    no_uploads(site)


def test_a_replaced_file_leaves_no_object_behind(site: Site, c: httpx.Client) -> None:
    """Every write has its own object; the one a replace stops naming is removed after it."""
    name = fresh(c)
    keys = []
    for i, data in enumerate((os.urandom(4000), b"", os.urandom(100), os.urandom(70_000))):
        r = put(c, name, "w/m.bin", data, **({"Content-Digest": cd(data)} if i % 2 else {}))
        assert r.status_code == (201 if i == 0 else 200), r.text
        [key] = site.objects(name, "w/m.bin")
        assert key not in keys and stored(site, key) == data
        keys.append(key)
        assert site.keys().isdisjoint(keys[:-1])  # no earlier write's object is left
        assert download(site, c, name, "w/m.bin") == data
    assert_store_matches(site, c, name)
    assert c.delete(apath(name, "w/m.bin")).status_code == 204
    assert site.version_objects(name) == {}
    no_uploads(site)


def test_upload_to_unknown_model_or_version_is_404(local: Site, lc: httpx.Client) -> None:
    name = fresh(lc)
    before = local.keys()
    assert_problem(put(lc, name, "a.bin", b"x", version=2), 404, "not_found")
    assert_problem(put(lc, name + "-nope", "a.bin", b"x"), 404, "not_found")
    assert local.keys() == before


_OTHER = os.urandom(32)
MALFORMED = [
    ("Content-Digest", "sha-256=:" + hashlib.sha256(b"body").hexdigest() + ":"),  # hex, not base64
    ("Content-Digest", "sha-256=" + b64(b"body")),                                 # no colons
    ("Content-Digest", "sha-512=:" + base64.b64encode(hashlib.sha512(b"body").digest()).decode() + ":"),
    ("Content-Digest", "sha-256=:" + base64.b64encode(_OTHER[:31]).decode() + ":"),  # 31 bytes
    ("Content-Digest", "sha-256=:" + "!" * 43 + "=:"),                              # not base64
    ("Content-Digest", "sha-256=:" + b64(b"body") + ":, md5=:AAAAAAAAAAAAAAAAAAAAAA==:"),
    ("x-amz-checksum-sha256", hashlib.sha256(b"body").hexdigest()),
    ("x-amz-checksum-sha256", base64.b64encode(_OTHER[:31]).decode()),
    ("x-amz-checksum-sha256", base64.b64encode(_OTHER + b"x").decode()),            # 33 bytes
    ("x-amz-checksum-sha256", "sha-256=:" + b64(b"body") + ":"),                    # the other form
]


@pytest.mark.parametrize(("header", "value"), MALFORMED, ids=[f"{h}-{i}" for i, (h, _) in enumerate(MALFORMED)])
def test_malformed_digest_is_400_and_keeps_nothing(local: Site, lc: httpx.Client, header: str,
                                                   value: str) -> None:
    name = fresh(lc)
    assert put(lc, name, "m.bin", b"old").status_code == 201
    before = local.keys()
    problem = assert_problem(put(lc, name, "m.bin", b"body", **{header: value}), 400, "validation_error")
    assert header.lower() in problem["detail"].lower() or "digest" in problem["detail"].lower(), problem
    assert local.keys() == before
    assert files_of(lc, name) == [("m.bin", 3, sha(b"old"))]


def test_both_digest_headers_are_400(local: Site, lc: httpx.Client) -> None:
    name = fresh(lc)
    before = local.keys()
    r = put(lc, name, "m.bin", b"body", **{"Content-Digest": cd(b"body"), "x-amz-checksum-sha256": b64(b"body")})
    assert "not both" in assert_problem(r, 400, "validation_error")["detail"]
    assert local.keys() == before and listed(lc, name) == []


def test_digest_mismatch_is_400_and_leaves_nothing_behind(site: Site, c: httpx.Client) -> None:
    name = fresh(c)
    old, body, claimed = b"old bytes", os.urandom(5000), os.urandom(5000)
    assert put(c, name, "m.bin", old).status_code == 201
    before = site.keys()

    for header, value in (("Content-Digest", cd(claimed)), ("x-amz-checksum-sha256", b64(claimed))):
        for path in ("m.bin", "new.bin"):  # a replacement and a new file
            r = put(c, name, path, body, **{header: value})
            assert_problem(r, 400, "validation_error", expected_sha256=sha(claimed), actual_sha256=sha(body))
            assert site.keys() == before, (header, path)
    assert files_of(c, name) == [("m.bin", len(old), sha(old))]
    assert held(site, name, "m.bin") == old
    assert_store_matches(site, c, name)
    no_uploads(site)


def _chunks(total: int, block: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(block, total - sent)
        yield b"\x5a" * n
        sent += n


def test_too_large_by_content_length_is_413_before_the_body(site: Site, c: httpx.Client) -> None:
    name = fresh(c)
    before = site.keys()
    # Only the head goes out: the server must answer from Content-Length alone.
    url = urlsplit(site.server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall((f"PUT /api/v1{apath(name, 'big.bin')} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                      f"Authorization: Bearer {site.server.token}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {MAX + 1}\r\n\r\n").encode())
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413 "), head
    # A real client that sends the whole body gets the same answer.
    assert_problem(put(c, name, "big.bin", b"\0" * (MAX + 1)), 413, "validation_error")
    assert site.keys() == before and listed(c, name) == []


def test_too_large_chunked_body_is_413_and_leaves_nothing(site: Site, c: httpx.Client) -> None:
    name = fresh(c)
    before = site.keys()
    r = put(c, name, "big.bin", _chunks(MAX + 1))  # a generator: no Content-Length, chunked
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "validation_error")
    assert site.keys() == before and listed(c, name) == []
    r = put(c, name, "exact.bin", _chunks(MAX))  # the limit itself is allowed
    assert r.status_code == 201 and r.json()["size"] == MAX, r.text


# -- paths ------------------------------------------------------------------------------------------


ESCAPES = [
    "..", "../x", "a/../../x", "./x", "a/./b",            # dot segments, sent as they are
    "%2e%2e/x", "a/%2E%2E/%2e%2e/x", "%2e%2e",           # percent-encoded dots
    "%252e%252e/x", "a%252Fb",                            # double-encoded: a trick, not a name
    "x%2F..%2F..%2Fy", "%2F..%2Fetc%2Fpasswd",            # an encoded '/' hiding '..'
    "..%5Cx", "a%5Cb",                                    # backslashes
    "a%00b", "a%00", "a%0Ab",                             # NUL and control characters
    "C:/x", "C:%5Cx",                                     # drive letters
    "/etc/passwd", "//etc/passwd", "%2Fetc%2Fpasswd", "a//b", "a/",  # absolute, empty segments
]


@pytest.mark.parametrize("raw", ESCAPES)
def test_path_escapes_are_400_and_store_nothing(local: Site, lc: httpx.Client, raw: str) -> None:
    """Refused before any store is touched, so the local store stands for both."""
    site, c = local, lc
    name = fresh(c)
    before = site.keys()
    base = f"/api/v1/models/{seg(name)}/versions/1/artifacts/"
    for method in ("PUT", "GET", "DELETE"):
        r = raw_request(site.server, method, base + raw)
        assert_problem(r, 400, "validation_error")
    assert site.keys() == before
    assert listed(c, name) == []


def test_an_encoded_slash_is_a_separator_not_part_of_a_name(local: Site, lc: httpx.Client) -> None:
    """``a%2Fb`` is the path ``a/b`` once decoded (a name cannot hold '/'): stored as ``a/b``."""
    name = fresh(lc)
    r = raw_request(local.server, "PUT", f"/api/v1/models/{seg(name)}/versions/1/artifacts/a%2Fb", b"slash")
    assert r.status_code in (201, 400), r.text
    if r.status_code == 201:
        assert r.json()["path"] == "a/b"
        assert files_of(lc, name) == [("a/b", 5, sha(b"slash"))]
    else:
        assert listed(lc, name) == []


def test_a_utf8_path_is_stored_under_its_utf8_name(site: Site, c: httpx.Client) -> None:
    """Percent-encoded UTF-8 in the request line is decoded once, as UTF-8: the file, and the
    object holding it, carry the name itself."""
    name = fresh(c)
    path = "dossier/modèle-été.bin"
    target = f"/api/v1/models/{seg(name)}/versions/1/artifacts/{quote(path, safe='/')}"
    assert "%C3%A8" in target
    r = raw_request(site.server, "PUT", target, b"utf-8")
    assert r.status_code == 201, r.text
    assert r.json()["path"] == path
    assert files_of(c, name) == [(path, 5, sha(b"utf-8"))]
    assert held(site, name, path) == b"utf-8"  # the object's key ends with the UTF-8 name
    assert download(site, c, name, path) == b"utf-8"
    assert_store_matches(site, c, name)


@pytest.mark.parametrize("raw", ["modèle.bin".encode(), "dossier/été.bin".encode(), b"\xff.bin",
                                 b"caf\xe9.bin"], ids=["utf8", "utf8-in-folder", "raw-FF", "raw-latin1"])
def test_a_raw_non_ascii_path_is_refused_by_the_http_server(local: Site, lc: httpx.Client, raw: bytes) -> None:
    """Bytes above 0x7F sent unencoded: a request-target is ASCII (RFC 9112, section 3.2), and
    the served process's HTTP parser (uvicorn with httptools) answers 400 before the application
    sees the request, so the service's own UTF-8 decoding of raw paths is never reached here.
    Nothing is stored; clients percent-encode (test above)."""
    name = fresh(lc)
    before = local.keys()
    base = f"/api/v1/models/{seg(name)}/versions/1/artifacts/".encode()
    for method in ("PUT", "GET", "DELETE"):
        r = raw_request(local.server, method, base + raw)
        assert r.status_code == 400, r.text
    assert local.keys() == before and listed(lc, name) == []
    assert local.server.process.poll() is None


@pytest.mark.parametrize("raw", ["%FF.bin", "a/%C3%28", "%C3", "%ED%A0%80", "%E9t%E9.bin", "a/%C0%AF"],
                         ids=["FF", "bad-continuation", "truncated", "surrogate", "latin1", "overlong-slash"])
def test_invalid_utf8_in_a_path_is_400(local: Site, lc: httpx.Client, raw: str) -> None:
    name = fresh(lc)
    before = local.keys()
    base = f"/api/v1/models/{seg(name)}/versions/1/artifacts/"
    for method in ("PUT", "GET", "DELETE"):
        problem = assert_problem(raw_request(local.server, method, base + raw), 400, "validation_error")
        assert "UTF-8" in problem["detail"], problem
    assert local.keys() == before and listed(lc, name) == []


def test_unicode_paths_are_stored_nfc(local: Site, lc: httpx.Client) -> None:
    name = fresh(lc)
    decomposed = "cafe\u0301/mode\u0300le.bin"  # NFD
    r = put(lc, name, decomposed, b"u")
    assert r.status_code == 201, r.text
    assert r.json()["path"] == "caf\u00e9/mod\u00e8le.bin"
    assert lc.get(apath(name, "caf\u00e9/mod\u00e8le.bin")).content == b"u"


# -- listing, downloading, deleting ------------------------------------------------------------------


def test_list_is_ordered_by_code_point_and_pages(site: Site, c: httpx.Client) -> None:
    name = fresh(c)
    paths = ["b", "a/z", "a/b", "Z", "\u00e9.bin", "e.bin", "c/d/e.txt", "a-b", "a.b"]
    for p in paths:
        assert put(c, name, p, p.encode()).status_code == 201
    found = pages(c, f"{vpath(name)}/artifacts", limit=2)
    assert [len(p) for p in found] == [2, 2, 2, 2, 1]
    assert [f["path"] for page in found for f in page] == sorted(paths)  # str order is code point order
    body = c.get(f"{vpath(name)}/artifacts").json()
    assert (body["sealed_at"], body["manifest_digest"], body["next_cursor"]) == (None, None, None)
    assert_problem(c.get(f"{vpath(name)}/artifacts", params={"cursor": "garbage"}), 400, "validation_error")
    assert_problem(c.get(f"{vpath(name)}/artifacts", params={"limit": 0}), 400, "validation_error")
    assert_problem(c.get(f"{vpath(name, 2)}/artifacts"), 404, "not_found")


def test_local_download_streams_bytes_with_digest_headers(local: Site, lc: httpx.Client) -> None:
    name = fresh(lc)
    data = os.urandom(300_000)
    assert put(lc, name, "w/model.onnx", data).status_code == 201
    r = lc.get(apath(name, "w/model.onnx"))
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["content-type"].startswith("application/octet-stream")
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["content-digest"] == cd(data)
    assert r.headers["etag"] == f'"{sha(data)}"'
    assert_problem(lc.get(apath(name, "w/other.onnx")), 404, "not_found")
    assert_problem(lc.get(apath(name, "w/model.onnx", version=2)), 404, "not_found")


def test_s3_download_redirects_to_a_presigned_url(on_s3: Site, sc: httpx.Client) -> None:
    name = fresh(sc)
    data = os.urandom(20_000)
    assert put(sc, name, "w/model.onnx", data).status_code == 201
    r = sc.get(apath(name, "w/model.onnx"))
    assert r.status_code == 307, r.text
    assert r.headers["content-digest"] == cd(data) and r.headers["etag"] == f'"{sha(data)}"'
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == on_s3.s3.endpoint  # type: ignore[union-attr]
    [key] = on_s3.objects(name, "w/model.onnx")
    assert location.path == f"/{on_s3.bucket}/{PREFIX}/{key}"
    assert "X-Amz-Signature=" in location.query
    with signatures_unchecked():
        got = httpx.get(r.headers["location"], timeout=30)
    assert got.status_code == 200 and got.content == data
    assert "model.onnx" in got.headers.get("content-disposition", "")
    assert_problem(sc.get(apath(name, "w/other.onnx")), 404, "not_found")


def test_delete_removes_the_file_then_404_and_409_once_sealed(site: Site, c: httpx.Client) -> None:
    name = fresh(c)
    for p in ("keep.bin", "drop.bin"):
        assert put(c, name, p, p.encode()).status_code == 201
    [key] = site.objects(name, "drop.bin")
    r = c.delete(apath(name, "drop.bin"))
    assert r.status_code == 204, r.text
    assert key not in site.keys() and site.objects(name, "drop.bin") == []
    assert [f["path"] for f in listed(c, name)] == ["keep.bin"]
    assert_problem(c.get(apath(name, "drop.bin")), 404, "not_found")
    assert_problem(c.delete(apath(name, "drop.bin")), 404, "not_found")
    sealed_at = move(c, name, 1, "staging")["version"]["sealed_at"]
    assert_problem(c.delete(apath(name, "keep.bin")), 409, "conflict", sealed_at=sealed_at)
    assert [f["path"] for f in listed(c, name)] == ["keep.bin"]
    assert held(site, name, "keep.bin") == b"keep.bin"
    assert_store_matches(site, c, name)


# -- sealing ----------------------------------------------------------------------------------------


def _entries(c: httpx.Client, name: str, action: str, version: int = 1) -> list[dict[str, Any]]:
    return [e for e in audit(c, name) if e["action"] == action and e["version"] == version]


def test_submit_seals_and_withdraw_does_not_unseal(site: Site, c: httpx.Client) -> None:
    name = fresh(c)
    data = {"model.onnx": os.urandom(4000), "cfg/params.json": b'{"k": 1}'}
    for path, body in data.items():
        assert put(c, name, path, body).status_code == 201
    assert (version_of(c, name)["sealed_at"], version_of(c, name)["manifest_digest"]) == (None, None)

    moved = move(c, name, 1, "staging")["version"]
    files = listed(c, name)
    digest = manifest_of(files).digest
    assert digest == jcs_digest(files)
    assert moved["sealed_at"] is not None and moved["manifest_digest"] == digest
    assert version_of(c, name)["sealed_at"] == moved["sealed_at"]
    body = c.get(f"{vpath(name)}/artifacts").json()
    assert (body["sealed_at"], body["manifest_digest"]) == (moved["sealed_at"], digest)

    for r in (put(c, name, "model.onnx", b"new"), put(c, name, "extra.bin", b"new"),
              c.delete(apath(name, "model.onnx"))):
        assert_problem(r, 409, "conflict", sealed_at=moved["sealed_at"])
    after = move(c, name, 1, "none")["version"]  # withdraw
    assert (after["sealed_at"], after["manifest_digest"]) == (moved["sealed_at"], digest)
    assert_problem(put(c, name, "extra.bin", b"new"), 409, "conflict", sealed_at=moved["sealed_at"])
    assert_problem(c.post(f"{vpath(name)}/seal"), 409, "conflict", sealed_at=moved["sealed_at"])
    assert files_of(c, name) == [(f["path"], f["size"], f["sha256"]) for f in files]
    for path, body in data.items():
        assert held(site, name, path) == body
    assert_store_matches(site, c, name)

    # The audit log proves what was sealed: one seal entry, and the move's own entry.
    manifest = [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in files]
    seals = _entries(c, name, SEALED)
    assert len(seals) == 1, seals
    assert seals[0]["after"] == {"sealed_at": moved["sealed_at"], "files": manifest, "digest": digest}
    changes = _entries(c, name, "model_version.stage_changed")
    assert changes[0]["after"]["artifacts"] == {"files": manifest, "digest": digest}
    assert "artifacts" not in changes[1]["after"]  # the withdrawal
    move(c, name, 1, "staging")  # submitted again: the entry names the earlier seal
    changes = _entries(c, name, "model_version.stage_changed")
    assert changes[2]["after"]["artifacts"] == {"digest": digest}
    assert len(_entries(c, name, SEALED)) == 1
    sealed_events = [e for e in events(c, name) if e["type"] == SEALED]
    assert [(e["version"], e["data"]["after"]) for e in sealed_events] == [
        (1, {"sealed_at": moved["sealed_at"], "files": manifest, "digest": digest})], sealed_events


def test_archive_from_none_seals_too(local: Site, lc: httpx.Client) -> None:
    name = fresh(lc)
    assert put(lc, name, "m.bin", b"archived").status_code == 201
    archived = move(lc, name, 1, "archived")["version"]
    assert archived["sealed_at"] is not None
    assert archived["manifest_digest"] == manifest_of(listed(lc, name)).digest
    assert_problem(put(lc, name, "m.bin", b"x"), 409, "conflict", sealed_at=archived["sealed_at"])
    assert len(_entries(lc, name, SEALED)) == 1


def test_a_version_without_files_seals_the_empty_manifest(local: Site, lc: httpx.Client) -> None:
    name = fresh(lc)
    assert move(lc, name, 1, "staging")["version"]["manifest_digest"] == EMPTY_MANIFEST == jcs_digest([])


def test_post_seal_on_local_seals_the_current_files(local: Site, lc: httpx.Client) -> None:
    name = fresh(lc)
    for path in ("b.bin", "a.bin"):
        assert put(lc, name, path, path.encode() * 10).status_code == 201
    files = listed(lc, name)
    r = lc.post(f"{vpath(name)}/seal")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == (name, 1)
    assert body["files"] == [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in files]
    assert body["manifest_digest"] == manifest_of(files).digest == jcs_digest(files)
    v = version_of(lc, name)
    assert (assert_utc(v["sealed_at"]), v["manifest_digest"]) == (assert_utc(body["sealed_at"]),
                                                                  body["manifest_digest"])
    assert_problem(lc.post(f"{vpath(name)}/seal"), 409, "conflict", sealed_at=v["sealed_at"])
    assert_problem(put(lc, name, "c.bin", b"late"), 409, "conflict")
    seals = _entries(lc, name, SEALED)
    assert [s["after"]["digest"] for s in seals] == [body["manifest_digest"]]
    move(lc, name, 1, "staging")  # already sealed: the move names that seal, seals nothing again
    assert _entries(lc, name, "model_version.stage_changed")[0]["after"]["artifacts"] == {
        "digest": body["manifest_digest"]}
    assert len(_entries(lc, name, SEALED)) == 1
    assert_problem(lc.post(f"{vpath(name, 2)}/seal"), 404, "not_found")


# -- presigned uploads (S3) ----------------------------------------------------------------------------


def _ticket(c: httpx.Client, name: str, path: str, data: bytes, version: int = 1) -> dict[str, Any]:
    r = c.post(f"{vpath(name, version)}/artifact-uploads", json={"path": path, "size": len(data),
                                                                 "sha256": sha(data)})
    assert r.status_code == 201, r.text
    return r.json()


def _send(url: str, data: bytes) -> None:
    with signatures_unchecked():  # moto cannot check presigned URLs (tests/s3_support.py)
        r = httpx.put(url, content=data, timeout=30)
    assert r.status_code == 200, r.text


def test_presigned_upload_then_seal(on_s3: Site, sc: httpx.Client) -> None:
    name = fresh(sc)
    direct, big = b"through the service", os.urandom(50_000)
    assert put(sc, name, "small.txt", direct).status_code == 201
    ticket = _ticket(sc, name, "big/model.bin", big)
    assert (ticket["path"], ticket["method"]) == ("big/model.bin", "PUT")
    assert assert_utc(ticket["expires_at"]) > datetime.now().astimezone()
    url = urlsplit(ticket["url"])
    assert f"{url.scheme}://{url.netloc}" == on_s3.s3.endpoint  # type: ignore[union-attr]
    assert url.path.startswith(f"/{on_s3.bucket}/{PREFIX}/.uploads/")
    _send(ticket["url"], big)
    assert listed(sc, name) == [f for f in listed(sc, name) if f["path"] == "small.txt"]  # not yet listed

    r = sc.post(f"{vpath(name)}/seal")
    assert r.status_code == 200, r.text
    expected = [("big/model.bin", len(big), sha(big)), ("small.txt", len(direct), sha(direct))]
    assert [(f["path"], f["size"], f["sha256"]) for f in r.json()["files"]] == expected
    assert files_of(sc, name) == expected
    assert held(on_s3, name, "big/model.bin") == big  # a key of its own, not the upload's
    assert download(on_s3, sc, name, "big/model.bin") == big
    assert_store_matches(on_s3, sc, name)
    no_uploads(on_s3)
    v = version_of(sc, name)
    assert v["sealed_at"] is not None and v["manifest_digest"] == r.json()["manifest_digest"]
    seals = _entries(sc, name, SEALED)
    assert [f["path"] for f in seals[0]["after"]["files"]] == ["big/model.bin", "small.txt"]


def test_a_presigned_url_used_again_after_the_seal_changes_nothing(on_s3: Site, sc: httpx.Client) -> None:
    """The seal keeps a copy of what was uploaded at a key of its own: new bytes PUT to the
    still-valid URL after ``POST seal`` answered land beside it and are never served. The
    presigned file replaces one PUT earlier, whose object is removed."""
    name = fresh(sc)
    old, data, other = b"put through the service", os.urandom(20_000), os.urandom(20_000)
    assert put(sc, name, "m.bin", old).status_code == 201
    [old_key] = on_s3.objects(name, "m.bin")
    ticket = _ticket(sc, name, "m.bin", data)
    _send(ticket["url"], data)
    sealed = sc.post(f"{vpath(name)}/seal")
    assert sealed.status_code == 200, sealed.text
    assert old_key not in on_s3.keys()  # the replaced write's object
    [key] = on_s3.objects(name, "m.bin")
    temp = urlsplit(ticket["url"]).path.removeprefix(f"/{on_s3.bucket}/{PREFIX}/")
    assert temp.startswith(".uploads/") and key != temp and temp not in on_s3.keys()
    assert_store_matches(on_s3, sc, name)

    _send(ticket["url"], other)  # the URL has not expired
    try:
        assert stored(on_s3, temp) == other  # it did land, where nothing reads it
        assert files_of(sc, name) == [("m.bin", len(data), sha(data))]
        assert on_s3.objects(name, "m.bin") == [key] and stored(on_s3, key) == data
        assert download(on_s3, sc, name, "m.bin") == data
        v = version_of(sc, name)
        assert (v["sealed_at"], v["manifest_digest"]) == (sealed.json()["sealed_at"],
                                                          sealed.json()["manifest_digest"])
        assert v["manifest_digest"] == manifest_of(listed(sc, name)).digest
    finally:  # what the late PUT left, so that no_uploads() holds for the other tests
        on_s3.s3.client().remove_object(bucket_name=on_s3.bucket,  # type: ignore[union-attr]
                                        object_name=f"{PREFIX}/{temp}")


@pytest.mark.parametrize("sent", ["other-bytes", "short", "nothing"])
def test_a_bad_or_missing_presigned_upload_refuses_the_seal(on_s3: Site, sc: httpx.Client, sent: str) -> None:
    name = fresh(sc)
    data = os.urandom(10_000)
    assert put(sc, name, "ok.bin", b"ok").status_code == 201
    ticket = _ticket(sc, name, "big.bin", data)
    if sent != "nothing":
        _send(ticket["url"], os.urandom(10_000) if sent == "other-bytes" else data[:-1])
    before = on_s3.keys()
    problem = assert_problem(sc.post(f"{vpath(name)}/seal"), 409, "conflict")
    assert [u["path"] for u in problem["uploads"]] == ["big.bin"], problem
    word = {"other-bytes": "sha256", "short": "bytes", "nothing": "not uploaded"}[sent]
    assert word in problem["uploads"][0]["problem"], problem
    assert version_of(sc, name)["sealed_at"] is None
    assert files_of(sc, name) == [("ok.bin", 2, sha(b"ok"))]
    assert on_s3.keys() == before
    assert _entries(sc, name, SEALED) == []
    # Asking again for the path replaces the ticket; the right bytes then seal.
    again = _ticket(sc, name, "big.bin", data)
    _send(again["url"], data)
    r = sc.post(f"{vpath(name)}/seal")
    assert r.status_code == 200, r.text
    assert [f["path"] for f in r.json()["files"]] == ["big.bin", "ok.bin"]
    no_uploads(on_s3)


def test_an_open_presigned_upload_refuses_a_submit_out_of_none(on_s3: Site, sc: httpx.Client) -> None:
    name = fresh(sc)
    _ticket(sc, name, "pending.bin", b"pending")
    problem = assert_problem(sc.post(f"{vpath(name)}/transitions", json={"to_stage": "staging"}), 409, "conflict")
    assert [u["path"] for u in problem["uploads"]] == ["pending.bin"], problem
    v = version_of(sc, name)
    assert (v["stage"], v["sealed_at"]) == ("none", None)
    assert _entries(sc, name, SEALED) == []


def test_an_archive_out_of_none_drops_open_presigned_uploads_and_names_them(on_s3: Site,
                                                                          sc: httpx.Client) -> None:
    """Archiving retires the version: it does not wait for uploads, it seals what is there and
    the seal's audit entry names the tickets it dropped."""
    name = fresh(sc)
    _ticket(sc, name, "pending.bin", b"pending")
    move(sc, name, 1, "archived")
    v = version_of(sc, name)
    assert v["stage"] == "archived" and v["sealed_at"] is not None
    [entry] = _entries(sc, name, SEALED)
    assert entry["after"]["files"] == [] and entry["after"]["dropped_uploads"] == ["pending.bin"]


def test_presigned_uploads_are_refused_on_the_local_store(local: Site, lc: httpx.Client) -> None:
    name = fresh(lc)
    r = lc.post(f"{vpath(name)}/artifact-uploads", json={"path": "a.bin", "size": 1, "sha256": sha(b"a")})
    assert "PUT the file" in assert_problem(r, 409, "conflict")["detail"]
    assert version_of(lc, name)["sealed_at"] is None
    move(lc, name, 1, "staging")  # nothing was left open


# -- policies ---------------------------------------------------------------------------------------


def test_policy_can_require_an_artifact(local: Site, lc: httpx.Client) -> None:
    name = fresh(lc)
    r = lc.put(f"/models/{seg(name)}/policies/staging", json={"required_fields": ["artifact"]})
    assert r.status_code == 200, r.text
    refused = assert_problem(lc.post(f"{vpath(name)}/transitions", json={"to_stage": "staging"}),
                             422, "gate_failed")
    assert refused["failed"] == ["field:artifact"]
    assert version_of(lc, name)["sealed_at"] is None  # a refused move seals nothing
    assert put(lc, name, "m.bin", b"m").status_code == 201
    gates = lc.get(f"{vpath(name)}/gates", params={"to_stage": "staging"}).json()
    assert {g["gate"]: g["passed"] for g in gates["results"]}["field:artifact"] is True
    assert move(lc, name, 1, "staging")["version"]["sealed_at"] is not None


# -- resolving model URIs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resolvable(local: Site) -> str:
    """A model with v1 in production (aliased champion), v2 and v3 in staging, v4 in none."""
    with api_client(local.server) as c:
        name = create_model(c, "resolve")
        register(c, name, 4)
        assert put(c, name, "model.bin", b"v1").status_code == 201
        move(c, name, 1, "staging")
        move(c, name, 1, "production")
        move(c, name, 2, "staging")
        move(c, name, 3, "staging")
        assert c.put(f"/models/{seg(name)}/aliases/champion", json={"version": 1}).status_code == 200
    return name


@pytest.mark.parametrize(("suffix", "version", "stage"), [
    ("/Production", 1, "production"), ("/production", 1, "production"), ("/PRODUCTION", 1, "production"),
    ("/Staging", 3, "staging"), ("/sTaGiNg", 3, "staging"), ("/None", 4, "none"),
    ("@champion", 1, "production"), ("/latest", 4, "none"), ("/2", 2, "staging"), ("/4", 4, "none"),
])
def test_resolve_every_uri_form(local: Site, lc: httpx.Client, resolvable: str, suffix: str, version: int,
                                stage: str) -> None:
    r = lc.get("/resolve", params={"uri": f"models:/{resolvable}{suffix}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"], body["stage"]) == (resolvable, version, stage)
    v = version_of(lc, resolvable, version)
    assert (body["manifest_digest"], body["sealed_at"]) == (v["manifest_digest"], v["sealed_at"])
    assert (body["sealed_at"] is None) == (stage == "none")
    assert body["artifacts_url"] == f"{local.server.api}{vpath(resolvable, version)}/artifacts"
    files = lc.get(body["artifacts_url"])
    assert files.status_code == 200
    assert [f["path"] for f in files.json()["items"]] == (["model.bin"] if version == 1 else [])


@pytest.mark.parametrize("uri", [
    "model:/{m}/1", "models:{m}/1", "models:/{m}", "models:/{m}/", "models:/{m}/0", "models:/{m}/-1",
    "models:/{m}/2147483648", "models:/{m}/staging2", "models:/{m}/1/2", "models:/{m}@", "models:/@x",
    "models:/{m}/Latest ", "models:/{m}@bad alias",
])
def test_resolve_malformed_uri_is_400(lc: httpx.Client, resolvable: str, uri: str) -> None:
    assert_problem(lc.get("/resolve", params={"uri": uri.format(m=resolvable)}), 400, "validation_error")


def test_resolve_without_uri_is_400(lc: httpx.Client) -> None:
    assert_problem(lc.get("/resolve"), 400, "validation_error")


@pytest.mark.parametrize("uri", [
    "models:/nobody-{m}/1", "models:/{m}@nobody", "models:/{m}/99", "models:/{m}/archived",
    "models:/{m}/Archived",
])
def test_resolve_what_does_not_exist_is_404(lc: httpx.Client, resolvable: str, uri: str) -> None:
    assert_problem(lc.get("/resolve", params={"uri": uri.format(m=resolvable)}), 404, "not_found")


def test_resolve_latest_of_a_model_without_versions_is_404(lc: httpx.Client) -> None:
    name = create_model(lc, "empty")
    assert_problem(lc.get("/resolve", params={"uri": f"models:/{name}/latest"}), 404, "not_found")


def test_resolve_outside_the_token_scope_is_404(local: Site, lc: httpx.Client, resolvable: str) -> None:
    tokens = {}
    for scope in (["elsewhere-*"], [resolvable]):
        r = lc.post("/tokens", json={"name": f"viewer-{scope[0]}", "role": "viewer", "models": scope})
        assert r.status_code == 201, r.text
        tokens[scope[0]] = r.json()["token"]
    with httpx.Client(base_url=local.server.api, timeout=30) as viewer:
        for uri in (f"models:/{resolvable}/1", f"models:/{resolvable}@champion", f"models:/{resolvable}/Production"):
            outside = viewer.get("/resolve", params={"uri": uri},
                                 headers={"Authorization": f"Bearer {tokens['elsewhere-*']}"})
            assert_problem(outside, 404, "not_found")
            inside = viewer.get("/resolve", params={"uri": uri},
                                headers={"Authorization": f"Bearer {tokens[resolvable]}"})
            assert inside.status_code == 200 and inside.json()["version"] == 1, inside.text


# -- racing writers, for real against the served process ------------------------------------------


def _paused(first: bytes, rest: bytes, wait: Callable[[], None]) -> Iterator[bytes]:
    """A body that sends ``first``, waits (the request is then in flight), then sends ``rest``."""
    yield first
    wait()
    yield rest


def test_overlapping_puts_to_one_path_leave_the_row_matching_the_object(site: Site, c: httpx.Client) -> None:
    name = fresh(c)
    bodies = [os.urandom(200_000), os.urandom(150_000)]
    barrier = threading.Barrier(2, timeout=20)

    def upload(body: bytes) -> httpx.Response:
        with api_client(site.server) as own:
            return put(own, name, "race/model.bin", _paused(body[:70_000], body[70_000:], barrier.wait))

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(upload, bodies))
    assert sorted(r.status_code for r in results) == [200, 201], [r.text for r in results]
    [row] = listed(c, name)
    kept = held(site, name, "race/model.bin")  # one object: the loser's is gone
    assert row["sha256"] == sha(kept) and row["size"] == len(kept)
    assert kept in bodies
    assert download(site, c, name, "race/model.bin") == kept
    assert_store_matches(site, c, name)
    no_uploads(site)


def test_a_put_paused_across_the_seal_is_refused(site: Site, c: httpx.Client) -> None:
    """The PUT passes the first check, the version is sealed while its body is still arriving:
    the PUT must get 409 and leave nothing; the seal holds exactly the files listed."""
    name = fresh(c)
    assert put(c, name, "before.bin", b"before").status_code == 201
    started, go = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        assert go.wait(20)

    with ThreadPoolExecutor(1) as pool, api_client(site.server) as own:
        pending = pool.submit(put, own, name, "late.bin", _paused(b"x" * 50_000, b"y" * 50_000, hold))
        assert started.wait(20)
        moved = move(c, name, 1, "staging")["version"]
        go.set()
        late = pending.result(timeout=30)
    assert_problem(late, 409, "conflict", sealed_at=moved["sealed_at"])
    files = listed(c, name)
    assert [f["path"] for f in files] == ["before.bin"]
    assert moved["manifest_digest"] == manifest_of(files).digest
    assert site.objects(name, "late.bin") == []
    assert_store_matches(site, c, name)
    no_uploads(site)


@pytest.mark.parametrize("round_", range(4))
def test_a_put_racing_a_move_out_of_none_is_sealed_or_refused(site: Site, c: httpx.Client, round_: int) -> None:
    name = fresh(c)
    barrier = threading.Barrier(2, timeout=20)
    body = os.urandom(40_000)

    def upload() -> httpx.Response:
        with api_client(site.server) as own:
            return put(own, name, "raced.bin", _paused(body[:1000], body[1000:], barrier.wait))

    def submit() -> httpx.Response:
        barrier.wait()
        with api_client(site.server) as own:
            return own.post(f"{vpath(name)}/transitions", json={"to_stage": "staging"})

    with ThreadPoolExecutor(2) as pool:
        uploaded, submitted = pool.submit(upload), pool.submit(submit)
        r_put, r_move = uploaded.result(timeout=30), submitted.result(timeout=30)
    assert r_move.status_code == 200, r_move.text
    digest = r_move.json()["version"]["manifest_digest"]
    files = listed(c, name)
    assert manifest_of(files).digest == digest  # never a listed file missing from the seal
    # The move's own audit entry records the seal (an empty one is announced nowhere else).
    seal = _entries(c, name, "model_version.stage_changed")[0]["after"]["artifacts"]
    assert seal["digest"] == digest
    assert [f["path"] for f in seal["files"]] == [f["path"] for f in files]
    if r_put.status_code == 201:
        assert [f["path"] for f in files] == ["raced.bin"] and files[0]["sha256"] == sha(body)
    else:
        assert_problem(r_put, 409, "conflict")
        assert files == [] and site.objects(name, "raced.bin") == []
    assert_store_matches(site, c, name)
    no_uploads(site)


RACE_MODES = ["mid-body", "after-body", "together", "after-answer"]


@pytest.mark.parametrize("mode", RACE_MODES * 2)
def test_a_delete_racing_a_put_of_the_path_never_lists_missing_bytes(site: Site, c: httpx.Client,
                                                                     mode: str) -> None:
    """The DELETE goes while the PUT's body is mid-way (it wins), once the whole body is sent
    (while the PUT stores and records it: either wins), together with the PUT, or after the
    PUT's answer (the PUT wins). Whichever wins, every listed file downloads with its listed
    sha256, and the store holds exactly the listed files."""
    name = fresh(c)
    old, new = os.urandom(30_000), os.urandom(60_000)
    assert put(c, name, "m.bin", old).status_code == 201
    barrier = threading.Barrier(2, timeout=20)

    def body() -> Iterator[bytes]:
        yield new[:20_000]
        if mode == "mid-body":
            barrier.wait()
        yield new[20_000:]
        if mode == "after-body":  # runs when the client asks for more: the body is all sent
            barrier.wait()

    def upload() -> httpx.Response:
        with api_client(site.server) as own:
            if mode == "together":
                barrier.wait()
            answer = put(own, name, "m.bin", body())
            if mode == "after-answer":
                barrier.wait()
            return answer

    def remove() -> httpx.Response:
        with api_client(site.server) as own:
            barrier.wait()
            return own.delete(apath(name, "m.bin"))

    with ThreadPoolExecutor(2) as pool:
        uploaded, removed = pool.submit(upload), pool.submit(remove)
        r_put, r_delete = uploaded.result(timeout=30), removed.result(timeout=30)
    assert r_delete.status_code == 204, r_delete.text  # a file was there, whichever it was
    assert r_put.status_code in (200, 201), r_put.text
    if mode == "mid-body":
        assert r_put.status_code == 201, "the DELETE came first"
    elif mode == "after-answer":
        assert r_put.status_code == 200, "the PUT came first"
    files = listed(c, name)
    # 201: the DELETE took the old file first, the new one stays; 200: the PUT replaced the old
    # file first, then the DELETE removed the new one.
    assert files_of(c, name) == ([("m.bin", len(new), sha(new))] if r_put.status_code == 201 else [])
    for f in files:
        got = download(site, c, name, f["path"])
        assert (len(got), sha(got)) == (f["size"], f["sha256"])
    assert_store_matches(site, c, name)
    no_uploads(site)


# -- an unreachable S3 store --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outage(on_s3: Site, s3_down: Site) -> dict[str, Any]:
    """Files put through the healthy server, then a PUT replacing one and a DELETE of another
    sent at once to the server whose store is unreachable (each waits out minio's retries,
    about 6 s, so they run together)."""
    with api_client(on_s3.server) as c:
        name = fresh(c)
        files = {"keep.bin": os.urandom(3000), "drop.bin": os.urandom(3000)}
        for path, data in files.items():
            assert put(c, name, path, data).status_code == 201
    with api_client(s3_down.server) as down, ThreadPoolExecutor(2) as pool:
        replacing = pool.submit(put, down, name, "keep.bin", b"never stored")
        deleting = pool.submit(down.delete, apath(name, "drop.bin"))
        get = down.get(apath(name, "keep.bin"))
        file_list = down.get(f"{vpath(name)}/artifacts")
        return {"name": name, "files": files, "put": replacing.result(timeout=60),
                "delete": deleting.result(timeout=60), "get": get, "list": file_list}


def test_an_unreachable_store_is_503_for_a_put_and_keeps_the_file(on_s3: Site, sc: httpx.Client,
                                                                 outage: dict[str, Any]) -> None:
    problem = assert_problem(outage["put"], 503, "unavailable")
    assert "artifact store" in problem["detail"], problem
    name, data = outage["name"], outage["files"]["keep.bin"]
    assert [f for f in files_of(sc, name) if f[0] == "keep.bin"] == [("keep.bin", len(data), sha(data))]
    assert held(on_s3, name, "keep.bin") == data
    assert download(on_s3, sc, name, "keep.bin") == data
    no_uploads(on_s3)


def test_an_unreachable_s3_store_still_lists_and_redirects(s3_down: Site, outage: dict[str, Any]) -> None:
    """A GET of a listed file never calls S3 (the URL is presigned locally): not 500, nor 503,
    but the redirect, to the endpoint the server was configured with."""
    assert outage["list"].status_code == 200, outage["list"].text
    assert outage["get"].status_code == 307, outage["get"].text
    location = urlsplit(outage["get"].headers["location"])
    assert f"{location.scheme}://{location.netloc}" == s3_down.endpoint
    assert location.path.startswith(f"/{s3_down.bucket}/{PREFIX}/") and location.path.endswith("/keep.bin")


def test_a_delete_on_an_unreachable_store_answers_for_what_it_committed(
        on_s3: Site, s3_down: Site, sc: httpx.Client, outage: dict[str, Any]) -> None:
    """The row goes first (committed), the object after: when the store cannot remove it, the
    DELETE still succeeded (204, not 503 for a change that was made) and the object is left
    unlisted and logged, never a listed file without its bytes."""
    name, r = outage["name"], outage["delete"]
    assert r.status_code == 204, r.text
    assert [f[0] for f in files_of(sc, name)] == ["keep.bin"]
    assert_problem(sc.get(apath(name, "drop.bin")), 404, "not_found")
    [orphan] = on_s3.objects(name, "drop.bin")  # the store really was out of reach
    assert stored(on_s3, orphan) == outage["files"]["drop.bin"]
    logged = [json.loads(line) for line in s3_down.server.log.read_text().splitlines() if line.startswith("{")]
    assert [e["key"] for e in logged if e.get("event") == "artifact_orphaned"] == [orphan]


# -- the artifacts CLI --------------------------------------------------------------------------------


def cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_URL=site.server.url, REGISTRY_TOKEN=site.server.token)
    return subprocess.run([sys.executable, "-m", "registry", "artifacts", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_upload_download_verify_and_tampering(local: Site, lc: httpx.Client, tmp_path: Path) -> None:
    name = fresh(lc)
    source = tmp_path / "model.onnx"
    source.write_bytes(os.urandom(100_000))
    up = cli(local, "upload", name, "1", str(source), "--path", "w/model.onnx")
    assert up.returncode == 0, up.stderr
    assert up.stdout.split() == ["w/model.onnx", "100000", sha(source.read_bytes())]
    assert put(lc, name, "cfg.json", b"{}").status_code == 201
    move(lc, name, 1, "staging")

    got = tmp_path / "got.onnx"
    down = cli(local, "download", name, "1", "w/model.onnx", "--output", str(got))
    assert down.returncode == 0, down.stderr
    assert got.read_bytes() == source.read_bytes()

    ok = cli(local, "verify", name, "1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verified" in ok.stdout and "2 file(s)" in ok.stdout

    # The stored file, found by walking the data dir: <model id>/<version>/<write id>/w/model.onnx.
    mid = model_id(local.server, name)
    walked = [Path(root, f) for root, _, names in os.walk(local.data) for f in names]
    found = [p for p in walked if re.fullmatch(rf"artifacts/{mid}/1/[0-9a-f]{{32}}/w/model\.onnx",
                                               p.relative_to(local.data).as_posix())]
    assert len(found) == 1, found
    [on_disk] = found
    assert on_disk.read_bytes() == source.read_bytes()
    on_disk.write_bytes(b"tampered" + source.read_bytes()[8:])
    bad = cli(local, "verify", name, "1")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "verified" not in bad.stdout
    assert "MISMATCH\tw/model.onnx" in bad.stdout and "w/model.onnx" in bad.stderr
    down = cli(local, "download", name, "1", "w/model.onnx", "--output", str(tmp_path / "bad.onnx"))
    assert down.returncode == 1 and "MISMATCH w/model.onnx" in down.stderr


def test_cli_verify_follows_the_presigned_redirect(on_s3: Site, sc: httpx.Client) -> None:
    name = fresh(sc)
    assert put(sc, name, "m.bin", os.urandom(5000)).status_code == 201
    move(sc, name, 1, "staging")
    with signatures_unchecked():
        ok = cli(on_s3, "verify", name, "1")
    assert ok.returncode == 0 and "verified: 1 file(s)" in ok.stdout, ok.stdout + ok.stderr


@pytest.mark.parametrize("how", ["submit", "seal"])
def test_cli_verify_a_version_sealed_without_files(local: Site, lc: httpx.Client, how: str) -> None:
    """Sealed holding nothing: by the move out of none (no artifacts_sealed entry; the move's own
    entry records the empty manifest) or by POST seal (which announces it)."""
    name = fresh(lc)
    if how == "submit":
        assert move(lc, name, 1, "staging")["version"]["manifest_digest"] == EMPTY_MANIFEST
        assert _entries(lc, name, SEALED) == []
    else:
        r = lc.post(f"{vpath(name)}/seal")
        assert r.status_code == 200 and r.json()["manifest_digest"] == EMPTY_MANIFEST, r.text
    ok = cli(local, "verify", name, "1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"verified: 0 file(s), manifest {EMPTY_MANIFEST}" in ok.stdout, ok.stdout
