"""The `artifact` required field, the artifact settings read from the environment, and the store
the composition root builds from them (no network: the S3 store is only constructed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from registry.adapters.artifacts.local import LocalStore
from registry.adapters.artifacts.s3 import S3Store
from registry.bootstrap import artifact_store
from registry.config import MAX_ARTIFACT_BYTES, ArtifactSettings, ConfigError, Settings
from registry.domain.errors import ValidationError
from registry.domain.gates import Candidate, GateContext, Policy, evaluate
from registry.domain.stages import Stage, Trigger

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GiB = 1024**3


# -- the gate ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", [Stage.STAGING, Stage.PRODUCTION])
def test_policy_accepts_artifact_as_a_required_field(stage: Stage) -> None:
    policy = Policy.parse({"required_fields": ["artifact", "description", "artifact"]}, stage)
    assert policy.required_fields == ("artifact", "description")
    assert policy.to_dict()["required_fields"] == ["artifact", "description"]


def test_policy_still_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="artifact") as caught:
        Policy.parse({"required_fields": ["artifacts"]}, Stage.STAGING)
    assert "'artifacts'" in caught.value.detail


def _gates(files: int, trigger: Trigger = Trigger.SUBMIT, target: Stage = Stage.STAGING,
           ) -> dict[str, tuple[bool, str]]:
    cand = Candidate(version=3, description="d", run_id="r", metrics={}, stage_since=None,
                     artifacts=files)
    ctx = GateContext(candidate=cand, now=NOW,
                      policy=Policy.parse({"required_fields": ["artifact"]}, target))
    return {r.gate: (r.passed, r.detail) for r in evaluate(trigger, target, ctx)}


def test_artifact_gate_fails_without_files() -> None:
    assert _gates(0) == {"field:artifact": (False, "the version holds no artifact files")}


@pytest.mark.parametrize("files", [1, 2, 1000])
def test_artifact_gate_passes_with_files(files: int) -> None:
    passed, detail = _gates(files)["field:artifact"]
    assert passed
    assert str(files) in detail


def test_artifact_gate_applies_to_production_too() -> None:
    assert _gates(0, Trigger.PROMOTE, Stage.PRODUCTION)["field:artifact"][0] is False
    assert _gates(1, Trigger.PROMOTE, Stage.PRODUCTION)["field:artifact"][0] is True


def test_candidate_has_no_files_unless_told() -> None:
    cand = Candidate(version=1, description="", run_id=None, metrics={}, stage_since=None)
    assert cand.artifacts == 0


# -- settings ---------------------------------------------------------------------------------

def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"REGISTRY_DATA_DIR": str(tmp_path / "data"),
                              "REGISTRY_LOG_FORMAT": "json", **env})


S3 = {
    "REGISTRY_ARTIFACTS_URL": "s3://models/registry/",
    "REGISTRY_S3_ENDPOINT": "http://127.0.0.1:1",  # nothing listens: constructing must not connect
    "REGISTRY_S3_ACCESS_KEY": "access",
    "REGISTRY_S3_SECRET_KEY": "secret",
}


def test_artifact_defaults(tmp_path: Path) -> None:
    art = settings(tmp_path).artifact_store
    assert art == ArtifactSettings(str((tmp_path / "data" / "artifacts").resolve()))
    assert not art.is_s3
    assert art.max_bytes == 20 * GiB
    assert art.upload_ttl == 3600.0
    assert art.threads == 16
    assert art.s3_region == "us-east-1"


def test_blank_artifacts_url_means_the_default(tmp_path: Path) -> None:
    art = settings(tmp_path, REGISTRY_ARTIFACTS_URL="  ").artifact_store
    assert art.url == str((tmp_path / "data" / "artifacts").resolve())


def test_folder_and_file_url(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    assert settings(tmp_path, REGISTRY_ARTIFACTS_URL=str(folder)).artifact_store.url == str(folder)
    url = settings(tmp_path, REGISTRY_ARTIFACTS_URL=folder.as_uri()).artifact_store.url
    assert url == str(folder)
    assert not settings(tmp_path, REGISTRY_ARTIFACTS_URL=folder.as_uri()).artifact_store.is_s3


def test_relative_folder_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert settings(tmp_path, REGISTRY_ARTIFACTS_URL="arts").artifact_store.url == str(tmp_path / "arts")


@pytest.mark.parametrize(("url", "folder"), [
    ("file://localhost/srv/arts", "/srv/arts"),
    ("file:///srv/my%20arts", "/srv/my arts"),
])
def test_file_url_means_the_folder_it_names(tmp_path: Path, url: str, folder: str) -> None:
    assert settings(tmp_path, REGISTRY_ARTIFACTS_URL=url).artifact_store.url == folder


@pytest.mark.parametrize("url", ["gs://bucket/p", "http://host/p", "s4://b"])
def test_other_url_schemes_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="folder, file:///folder or s3://bucket/prefix"):
        settings(tmp_path, REGISTRY_ARTIFACTS_URL=url)


def test_s3_settings(tmp_path: Path) -> None:
    art = settings(tmp_path, **{**S3, "REGISTRY_S3_ENDPOINT": "https://minio.internal:9000/",
                                "REGISTRY_S3_PUBLIC_ENDPOINT": "https://files.example.com/",
                                "REGISTRY_S3_REGION": "eu-west-1"}).artifact_store
    assert art.is_s3
    assert art.url == "s3://models/registry/"
    assert art.s3_endpoint == "https://minio.internal:9000"
    assert art.s3_public_endpoint == "https://files.example.com"
    assert (art.s3_access_key, art.s3_secret_key, art.s3_region) == ("access", "secret", "eu-west-1")


def test_s3_region_and_public_endpoint_default(tmp_path: Path) -> None:
    art = settings(tmp_path, **S3, REGISTRY_S3_REGION=" ").artifact_store
    assert art.s3_region == "us-east-1"
    assert art.s3_public_endpoint is None


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix"])
def test_s3_url_needs_a_bucket(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="needs a bucket"):
        settings(tmp_path, **{**S3, "REGISTRY_ARTIFACTS_URL": url})


@pytest.mark.parametrize("bucket", ["b", "x" * 64, "-models", "a..b", "10.0.0.1"])
def test_s3_url_needs_a_valid_bucket_name(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(ConfigError, match="bucket"):
        settings(tmp_path, **{**S3, "REGISTRY_ARTIFACTS_URL": f"s3://{bucket}/p"})


def test_s3_needs_an_endpoint(tmp_path: Path) -> None:
    env = {k: v for k, v in S3.items() if k != "REGISTRY_S3_ENDPOINT"}
    with pytest.raises(ConfigError, match=r"REGISTRY_S3_ENDPOINT must be http\(s\)://host\[:port\]"):
        settings(tmp_path, **env)


@pytest.mark.parametrize("missing", ["REGISTRY_S3_ACCESS_KEY", "REGISTRY_S3_SECRET_KEY"])
def test_s3_needs_both_keys(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in S3.items() if k != missing}
    with pytest.raises(ConfigError, match="needs REGISTRY_S3_ACCESS_KEY and REGISTRY_S3_SECRET_KEY"):
        settings(tmp_path, **env)
    with pytest.raises(ConfigError, match="needs REGISTRY_S3_ACCESS_KEY"):
        settings(tmp_path, **{**S3, missing: ""})


def test_folder_store_ignores_s3_fields(tmp_path: Path) -> None:
    art = settings(tmp_path, REGISTRY_S3_ENDPOINT="not a url").artifact_store
    assert not art.is_s3 and art.s3_endpoint is None


@pytest.mark.parametrize("endpoint", [
    "ftp://minio:9000",
    "minio:9000",
    "127.0.0.1:9000",
    "http://",
    "http://minio:9000/bucket",
    "http://minio:9000?x=1",
    "http://mi nio:9000",
    "s3://minio",
])
@pytest.mark.parametrize("name", ["REGISTRY_S3_ENDPOINT", "REGISTRY_S3_PUBLIC_ENDPOINT"])
def test_bad_endpoints_are_refused(tmp_path: Path, name: str, endpoint: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name} must be http\(s\)://host\[:port\]"):
        settings(tmp_path, **{**S3, name: endpoint})


@pytest.mark.parametrize(("raw", "ttl"), [
    ("60", 60.0), ("604800", 604800.0), ("604801", 604800.0), ("31536000", 604800.0), ("90.5", 90.5),
])
def test_upload_ttl_is_clamped_to_seven_days(tmp_path: Path, raw: str, ttl: float) -> None:
    assert settings(tmp_path, REGISTRY_ARTIFACT_UPLOAD_TTL=raw).artifact_store.upload_ttl == ttl


@pytest.mark.parametrize(("name", "raw", "says"), [
    ("REGISTRY_ARTIFACT_UPLOAD_TTL", "59", "at least 60"),
    ("REGISTRY_ARTIFACT_UPLOAD_TTL", "-1", "at least 60"),
    ("REGISTRY_ARTIFACT_UPLOAD_TTL", "inf", "finite"),
    ("REGISTRY_ARTIFACT_UPLOAD_TTL", "nan", "finite"),
    ("REGISTRY_ARTIFACT_UPLOAD_TTL", "an hour", "must be a number"),
    ("REGISTRY_MAX_ARTIFACT_BYTES", "0", "at least 1"),
    ("REGISTRY_MAX_ARTIFACT_BYTES", "1.5", "whole number"),
    ("REGISTRY_MAX_ARTIFACT_BYTES", "1e9", "whole number"),
    ("REGISTRY_MAX_ARTIFACT_BYTES", "20GiB", "whole number"),
    ("REGISTRY_ARTIFACT_THREADS", "0", "at least 1"),
    ("REGISTRY_ARTIFACT_THREADS", "many", "whole number"),
])
def test_bad_numbers_are_refused(tmp_path: Path, name: str, raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        settings(tmp_path, **{name: raw})
    assert says in str(caught.value)


def test_numbers_are_read(tmp_path: Path) -> None:
    art = settings(tmp_path, REGISTRY_MAX_ARTIFACT_BYTES=" 1048576 ",
                   REGISTRY_ARTIFACT_THREADS="4").artifact_store
    assert (art.max_bytes, art.threads) == (1048576, 4)


def test_max_artifact_bytes_is_capped_at_what_16_mib_parts_can_carry(tmp_path: Path) -> None:
    """S3 takes at most 10,000 parts and the S3 store sends 16 MiB parts."""
    assert MAX_ARTIFACT_BYTES == 10_000 * 16 * 1024**2
    art = settings(tmp_path, REGISTRY_MAX_ARTIFACT_BYTES=str(MAX_ARTIFACT_BYTES)).artifact_store
    assert art.max_bytes == MAX_ARTIFACT_BYTES
    for above in (MAX_ARTIFACT_BYTES + 1, 200 * GiB):
        with pytest.raises(ConfigError, match="REGISTRY_MAX_ARTIFACT_BYTES is at most") as caught:
            settings(tmp_path, REGISTRY_MAX_ARTIFACT_BYTES=str(above))
        assert str(MAX_ARTIFACT_BYTES) in str(caught.value)
    # The cap holds whatever the store: the local one too.
    with pytest.raises(ConfigError, match="REGISTRY_MAX_ARTIFACT_BYTES"):
        settings(tmp_path, **S3, REGISTRY_MAX_ARTIFACT_BYTES=str(MAX_ARTIFACT_BYTES + 1))


@pytest.mark.parametrize("url", [
    "s3://bkt/../x",
    "s3://bkt/a/../b",
    "s3://bkt/a/./b",
    "s3://bkt/a//b",
    "s3://bkt/a\\b",
    "s3://bkt/a%2Fb",
    "s3://bkt/a%252e",
    "s3://bkt/tab\there",
    "s3://bkt/" + "x" * 256,
])
def test_an_s3_prefix_follows_the_artifact_path_rules(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="REGISTRY_ARTIFACTS_URL: the prefix .* is refused"):
        settings(tmp_path, **{**S3, "REGISTRY_ARTIFACTS_URL": url})


@pytest.mark.parametrize(("url", "stored"), [
    ("s3://bkt/models/v1/", "s3://bkt/models/v1/"),
    ("s3://bkt/modèles-ü/x_1.y", "s3://bkt/modèles-ü/x_1.y"),
    ("s3://bkt//p/q//", "s3://bkt//p/q//"),  # the slashes around it are no part of the prefix
])
def test_valid_s3_prefixes_are_accepted(tmp_path: Path, url: str, stored: str) -> None:
    assert settings(tmp_path, **{**S3, "REGISTRY_ARTIFACTS_URL": url}).artifact_store.url == stored


# -- the store the composition root builds ----------------------------------------------------

async def test_folder_settings_build_a_local_store(tmp_path: Path) -> None:
    store = artifact_store(settings(tmp_path).artifact_store)
    try:
        assert isinstance(store, LocalStore)
        root = (tmp_path / "data" / "artifacts").resolve()
        assert store.root == root
        assert store.location == root.as_uri()
        assert not root.exists()  # made on first write, not at start
    finally:
        await store.close()


@pytest.mark.parametrize(("url", "prefix", "location"), [
    ("s3://bkt", "", "s3://bkt/"),
    ("s3://bkt/", "", "s3://bkt/"),
    ("s3://bkt/p", "p/", "s3://bkt/p/"),
    ("s3://bkt/p/q/", "p/q/", "s3://bkt/p/q/"),
    ("s3://bkt//p/q//", "p/q/", "s3://bkt/p/q/"),
])
async def test_s3_settings_build_an_s3_store(tmp_path: Path, url: str, prefix: str,
                                             location: str) -> None:
    store = artifact_store(settings(tmp_path, **{**S3, "REGISTRY_ARTIFACTS_URL": url}).artifact_store)
    try:
        assert isinstance(store, S3Store)
        assert store.loc.bucket == "bkt"
        assert store.loc.prefix == prefix
        assert store.location == location
        assert store.loc.endpoint == "http://127.0.0.1:1"
        assert (store.loc.access_key, store.loc.secret_key, store.loc.region) == (
            "access", "secret", "us-east-1")
    finally:
        await store.close()


async def test_presigned_urls_name_the_public_endpoint_without_asking_the_server(
        tmp_path: Path) -> None:
    # The internal endpoint refuses connections: presigning works only because the region is known.
    env = {**S3, "REGISTRY_ARTIFACTS_URL": "s3://bkt/p/q",
           "REGISTRY_S3_PUBLIC_ENDPOINT": "https://files.example.com"}
    store = artifact_store(settings(tmp_path, **env).artifact_store)
    try:
        assert isinstance(store, S3Store)
        for url in (store.upload_url(".uploads/abc", 600),
                    store.download_url("m/1/model.onnx", "model.onnx")):
            assert url is not None
            parts = urlsplit(url)
            assert (parts.scheme, parts.netloc) == ("https", "files.example.com")
            assert parts.path.startswith("/bkt/p/q/")
            assert "X-Amz-Signature=" in parts.query
    finally:
        await store.close()
