"""deploy/compose.yaml cannot be started here (no Docker engine), so it is checked by parsing:
every registry container runs a command this CLI accepts, reads only settings the service
knows, takes its secrets from the env file, and the pieces agree with each other (the bucket
the service writes is the one created, the proxy reaches the API replicas, the example env files
give the service a configuration it accepts)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from registry.config import Settings
from tests.deploy.manifests import (
    CONFIG_NAMES,
    DEPLOY,
    SECRET_NAMES,
    env_file,
    interpolate,
    parse_cli,
)

REGISTRY_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]


def test_every_registry_container_runs_a_cli_command(services: dict[str, dict]) -> None:
    built = {name for name, s in services.items() if "build" in s}
    assert built == set(REGISTRY_SERVICES)
    commands = {name: parse_cli(services[name]["command"]).command for name in REGISTRY_SERVICES}
    assert commands == {"migrate": "migrate", "api": "serve", "worker": "worker"}
    assert parse_cli(services["api"]["command"]).host == "0.0.0.0"  # reachable by the proxy


def test_two_api_replicas_without_workers_and_one_worker(services: dict[str, dict]) -> None:
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["api"]["environment"]["REGISTRY_RUN_WORKERS"] == "false"
    assert "ports" not in services["api"], "replicas are reached through the proxy only"
    assert services["worker"]["deploy"]["replicas"] == 1
    assert parse_cli(services["worker"]["command"]).metrics_port is not None


def test_start_order(services: dict[str, dict]) -> None:
    def waits_for(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert waits_for("migrate") == {"postgres": "service_healthy"}
    for name in ("api", "worker"):
        assert waits_for(name) == {"migrate": "service_completed_successfully",
                                   "bucket": "service_completed_successfully"}
    assert waits_for("bucket") == {"minio": "service_healthy"}
    assert waits_for("proxy") == {"api": "service_healthy"}
    assert services["migrate"]["restart"] == "no"  # one-shot


def test_settings_are_known_and_secrets_come_from_the_env_file(services: dict[str, dict]) -> None:
    for name in REGISTRY_SERVICES:
        env = services[name]["environment"]
        assert set(env) <= CONFIG_NAMES, set(env) - CONFIG_NAMES
        assert not set(env) & SECRET_NAMES, f"{name} writes a secret in compose.yaml"
        assert services[name]["env_file"] == "registry.env"
    secrets = env_file(DEPLOY / "registry.env.example")
    assert set(secrets) == SECRET_NAMES
    assert SECRET_NAMES <= CONFIG_NAMES, SECRET_NAMES - CONFIG_NAMES
    stores = env_file(DEPLOY / "stores.env.example")
    for name in ("postgres", "minio"):
        assert services[name]["env_file"] == "stores.env"
    assert len(stores["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses shorter
    # The real files hold the secrets and are never committed.
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert {"registry.env", "stores.env"} <= set(ignored)


def _service_env(services: dict[str, dict], name: str) -> dict[str, str]:
    """What the container's process sees: the env file, then `environment:` (which wins)."""
    env = env_file(DEPLOY / "registry.env.example")
    env.update({k: interpolate(str(v), {}) for k, v in services[name]["environment"].items()})
    return env


def test_the_example_env_gives_a_configuration_the_service_accepts(services: dict[str, dict]) -> None:
    stores = env_file(DEPLOY / "stores.env.example")
    for name in REGISTRY_SERVICES:
        settings = Settings.from_env(_service_env(services, name))  # raises ConfigError
        assert not settings.is_sqlite
        assert settings.artifact_store.is_s3  # replicas share no folder
        assert settings.artifact_store.s3_endpoint == "http://minio:9000"
        assert settings.secret_key is not None  # the same key in every process
    url = _service_env(services, "api")["REGISTRY_DATABASE_URL"]
    user, password, host, db = re.fullmatch(r"postgresql\+asyncpg://(\w+):([^@]+)@(\w+):5432/(\w+)", url).groups()
    assert (user, db) == (services["postgres"]["environment"]["POSTGRES_USER"],
                          services["postgres"]["environment"]["POSTGRES_DB"])
    assert host == "postgres" and password == stores["POSTGRES_PASSWORD"]


def test_the_bucket_job_creates_what_the_service_uses(services: dict[str, dict]) -> None:
    artifacts = services["api"]["environment"]["REGISTRY_ARTIFACTS_URL"]
    bucket, _, prefix = artifacts.removeprefix("s3://").partition("/")
    script = " ".join(services["bucket"]["command"])
    assert f"mc mb --ignore-existing local/{bucket};" in script
    assert f"--prefix {prefix}/.uploads/ --expire-days 1" in script
    # The service's own user, limited to its bucket, with the keys the service is given.
    assert 'mc admin user add local "$$REGISTRY_S3_ACCESS_KEY" "$$REGISTRY_S3_SECRET_KEY"' in script
    mount = next(v for v in services["bucket"]["volumes"] if v.startswith("./minio-policy.json:"))
    policy = json.loads((DEPLOY / "minio-policy.json").read_text())
    assert mount.split(":")[1] in script
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}


def test_the_proxy_spreads_requests_over_the_api_replicas(services: dict[str, dict]) -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    proxy = services["proxy"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    api_port = parse_cli(services["api"]["command"]).port
    assert re.search(rf"^\s*server api:{api_port} resolve\b", conf, re.M)
    assert "resolver 127.0.0.11" in conf  # Docker's DNS, re-read as replicas come and go
    listen = re.search(r"^\s*listen (\d+);", conf, re.M).group(1)
    assert proxy["ports"] == [f"{listen}:{listen}"]
    # every path the service answers its metrics at, /metrics/ too: a prefix match
    assert re.search(r"location \^~ /metrics \{\s*return 404;", conf)
    assert "location = /metrics" not in conf
    assert "client_max_body_size 0;" in conf and "proxy_request_buffering off;" in conf
    assert conf.count("{") == conf.count("}")


def test_the_api_health_check_is_the_image_s(services: dict[str, dict]) -> None:
    """The API replicas rely on the image's HEALTHCHECK (/healthz on the serve port); the worker
    asks /healthz on its metrics port, and the one-shot migration has none."""
    assert "healthcheck" not in services["api"]
    assert services["migrate"]["healthcheck"] == {"disable": True}
    port = parse_cli(services["worker"]["command"]).metrics_port
    assert f"'http://127.0.0.1:{port}/healthz'" in " ".join(services["worker"]["healthcheck"]["test"])
