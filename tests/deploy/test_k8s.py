"""deploy/k8s: the base and the example overlay, rendered by the real ``kubectl kustomize`` and
every object validated against the Kubernetes schemas offline (``kubernetes-validate``, strict:
an unknown field is an error). Then the properties an operator relies on: probes, non-root,
resources, the right CLI command in each workload, secrets only by reference, the autoscaler
and disruption budget aimed at the API, and a connection budget PostgreSQL can hold."""

from __future__ import annotations

import os
import re
from pathlib import Path

import kubernetes_validate
import pytest

from registry.config import Settings
from tests.deploy.manifests import (
    CONFIG_NAMES,
    DEPLOY,
    K8S,
    SECRET_NAMES,
    container,
    env_file,
    env_of,
    find,
    kustomize,
    parse_cli,
    pod_spec,
    workloads,
)

TREES = {"base": K8S / "base", "example": K8S / "overlays" / "example"}
# The oldest Kubernetes these manifests promise to work on, and the newest the package knows.
K8S_VERSIONS = ("1.27", kubernetes_validate.latest_version())
CRD_GROUPS = ("monitoring.coreos.com/",)  # not in the core schemas: checked structurally below
RESERVED_CONNECTIONS = 3  # PostgreSQL's superuser_reserved_connections


ANNOTATIONS = K8S / "components" / "prometheus-annotations"
PROMETHEUS_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")


def _base_with_annotations(folder: Path) -> list[dict]:
    """What an installation without the Prometheus Operator renders: the base with the
    annotations component (kustomize wants the paths relative)."""
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(K8S / 'base', folder)}]\n"
        f"components: [{os.path.relpath(ANNOTATIONS, folder)}]\n")
    return kustomize(folder)


@pytest.fixture(scope="module", params=[*sorted(TREES), "annotated"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if request.param == "annotated":
        return _base_with_annotations(tmp_path_factory.mktemp("annotated"))
    return kustomize(TREES[request.param])


@pytest.fixture(scope="module")
def example() -> list[dict]:
    return kustomize(TREES["example"])


def test_every_object_validates_against_the_kubernetes_schemas(rendered: list[dict]) -> None:
    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job",
            "ConfigMap", "ServiceAccount"} <= kinds, kinds
    for obj in rendered:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)  # raises on any error


def test_the_api_runs_serve_without_workers_with_both_probes(rendered: list[dict]) -> None:
    api = container(find(rendered, "Deployment", "registry-api"))
    args = parse_cli(api["command"])
    assert args.command == "serve" and args.host == "0.0.0.0"
    assert env_of(api)["REGISTRY_RUN_WORKERS"]["value"] == "false"
    port = next(p for p in api["ports"] if p["name"] == "http")
    assert port["containerPort"] == args.port
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"),
                        ("startupProbe", "/healthz")):
        assert api[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # /readyz answers within 2 s whatever the database does (README): the probe waits longer.
    assert api["readinessProbe"]["timeoutSeconds"] >= 3


def test_the_worker_and_the_migration_run_their_commands(rendered: list[dict]) -> None:
    worker = container(find(rendered, "Deployment", "registry-worker"))
    args = parse_cli(worker["command"])
    assert args.command == "worker" and args.metrics_host == "0.0.0.0"
    assert {"name": "metrics", "containerPort": args.metrics_port, "protocol": "TCP"} in worker["ports"]
    for probe in ("livenessProbe", "startupProbe"):
        assert worker[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, worker[probe]
    job = find(rendered, "Job", "registry-migrate")
    assert parse_cli(container(job)["command"]).command == "migrate"
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")


def test_every_pod_runs_as_non_root_with_a_read_only_root_and_limits(rendered: list[dict]) -> None:
    for workload in workloads(rendered):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"] + spec.get("initContainers", []):
            where = f"{workload['metadata']['name']}/{c['name']}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert set(c["resources"][bound]) == {"cpu", "memory"}, (where, bound)
            # The read-only root needs a writable /tmp (metrics files of `serve --workers N`).
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, where


def test_secrets_are_referenced_never_written(rendered: list[dict]) -> None:
    secret_names = set()
    for workload in workloads(rendered):
        for c in pod_spec(workload)["containers"]:
            for name, entry in env_of(c).items():
                assert name in CONFIG_NAMES, f"{name}: a setting the service does not read"
                if name in SECRET_NAMES:
                    assert "value" not in entry, f"{name} written in {workload['metadata']['name']}"
                    secret_names.add(entry["valueFrom"]["secretKeyRef"]["name"])
                    assert entry["valueFrom"]["secretKeyRef"]["key"] == name
            for source in c.get("envFrom", []):
                assert "configMapRef" in source or "secretRef" in source, source
    assert secret_names == {"registry-secrets"}
    assert not [o for o in rendered if o["kind"] == "Secret"], "secrets belong outside git"
    config = find(rendered, "ConfigMap", "registry-config")
    assert set(config["data"]) <= CONFIG_NAMES - SECRET_NAMES, set(config["data"]) & SECRET_NAMES
    api = container(find(rendered, "Deployment", "registry-api"))
    assert {"REGISTRY_DATABASE_URL", "REGISTRY_SECRET_KEY", "REGISTRY_METRICS_TOKEN"} <= set(env_of(api))
    # Every process must be given the same key to read the webhook secrets the others encrypt.
    worker = container(find(rendered, "Deployment", "registry-worker"))
    assert env_of(worker)["REGISTRY_SECRET_KEY"] == env_of(api)["REGISTRY_SECRET_KEY"]


def test_each_process_gets_a_configuration_the_service_accepts(rendered: list[dict]) -> None:
    """The ConfigMap, the literal values and the Secret made from deploy/registry.env.example
    (as the overlay's instructions say), put together as the kubelet does."""
    secret = env_file(DEPLOY / "registry.env.example")
    config = find(rendered, "ConfigMap", "registry-config")["data"]
    for workload in workloads(rendered):
        c = container(workload)
        env = dict(config) if c.get("envFrom") else {}
        for name, entry in env_of(c).items():
            if "value" in entry:
                env[name] = entry["value"]
            elif entry["valueFrom"]["secretKeyRef"]["key"] in secret:
                env[name] = secret[entry["valueFrom"]["secretKeyRef"]["key"]]
            else:
                assert entry["valueFrom"]["secretKeyRef"].get("optional"), name
        settings = Settings.from_env(env)  # raises ConfigError
        assert not settings.is_sqlite and settings.log_format == "json"


def test_config_names_the_generated_configmap_and_s3(rendered: list[dict]) -> None:
    config = find(rendered, "ConfigMap", "registry-config")
    # Replicas on different nodes share no folder: artifacts must live in S3.
    assert config["data"]["REGISTRY_ARTIFACTS_URL"].startswith("s3://")
    assert config["data"]["REGISTRY_LOG_FORMAT"] == "json"
    for workload in ("registry-api", "registry-worker"):
        refs = [s["configMapRef"]["name"] for s in container(find(rendered, "Deployment", workload))["envFrom"]]
        assert refs == [config["metadata"]["name"]], refs  # kustomize's hashed name, so edits roll


def test_the_autoscaler_and_the_budget_aim_at_the_api_pods(rendered: list[dict]) -> None:
    api = find(rendered, "Deployment", "registry-api")
    hpa = find(rendered, "HorizontalPodAutoscaler", "registry-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": api["metadata"]["name"]}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = find(rendered, "PodDisruptionBudget", "registry-api")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can proceed
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    for selector in (pdb["spec"]["selector"]["matchLabels"], api["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    for other in workloads(rendered):  # selects the API's pods and no others
        if other is not api:
            assert not pdb["spec"]["selector"]["matchLabels"].items() <= \
                other["spec"]["template"]["metadata"]["labels"].items()


def test_services_reach_the_named_ports(rendered: list[dict]) -> None:
    for name, workload, port in (("registry-api", "registry-api", "metrics"),
                                 ("registry-worker-metrics", "registry-worker", "metrics")):
        service = find(rendered, "Service", name)
        pod = find(rendered, "Deployment", workload)
        assert service["spec"]["selector"].items() <= pod["spec"]["template"]["metadata"]["labels"].items()
        container_ports = {p["name"] for p in container(pod)["ports"]}
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert port in ports and ports[port]["targetPort"] in container_ports


def test_annotation_discovery_is_opt_in_and_aims_at_the_metrics_ports(
        tmp_path: Path, example: list[dict]) -> None:
    """Annotations make an annotation-based Prometheus scrape every pod: beside a ServiceMonitor
    that is each pod twice, the second time without the token (401, a target down). The base
    and the example (which has the ServiceMonitor) carry none; the component adds them, aimed
    at the Services' `metrics` ports."""
    for tree in (kustomize(TREES["base"]), example):
        for service in (o for o in tree if o["kind"] == "Service"):
            notes = service["metadata"].get("annotations", {})
            assert not notes.keys() & set(PROMETHEUS_ANNOTATIONS), service["metadata"]
    annotated = _base_with_annotations(tmp_path)
    assert not [o for o in annotated if o["kind"] == "ServiceMonitor"]
    scraped = {}
    for service in (o for o in annotated if o["kind"] == "Service"):
        notes = service["metadata"]["annotations"]
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
        scraped[service["metadata"]["name"]] = int(notes["prometheus.io/port"]) == ports["metrics"]
    assert scraped == {"registry-api": True, "registry-worker-metrics": True}


def test_the_service_monitor_scrapes_both_with_the_token(example: list[dict]) -> None:
    monitor = find(example, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == find(example, "Deployment", "registry-api")["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in example if s["kind"] == "Service"
                and selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in selected} == {"registry-api", "registry-worker-metrics"}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    for service in selected:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {
        "name": "registry-secrets", "key": "REGISTRY_METRICS_TOKEN"}}


def test_shutdown_fits_the_grace_period(rendered: list[dict]) -> None:
    """A pod is killed after terminationGracePeriodSeconds: the preStop pause plus the service's
    own drain (requests, then deliveries, each up to REGISTRY_SHUTDOWN_GRACE, default 10 s)
    must end before that."""
    for name in ("registry-api", "registry-worker"):
        deployment = find(rendered, "Deployment", name)
        c = container(deployment)
        pause = int(c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["", "0"])[1])
        grace = float(env_of(c).get("REGISTRY_SHUTDOWN_GRACE", {}).get("value", 10))
        assert pause + 2 * grace < pod_spec(deployment)["terminationGracePeriodSeconds"], name


def _connections(objects: list[dict]) -> int:
    """README's budget: serve --workers N holds N x (pool + 1 for /readyz [+ 1 for LISTEN when it
    runs workers]); a worker holds pool + 1; the migration 1."""
    pool = int(find(objects, "ConfigMap", "registry-config")["data"].get("REGISTRY_DB_POOL_SIZE", 20))
    api = find(objects, "Deployment", "registry-api")
    serve = parse_cli(container(api)["command"])
    listen = 0 if env_of(container(api))["REGISTRY_RUN_WORKERS"]["value"] == "false" else 1
    api_pods = find(objects, "HorizontalPodAutoscaler", "registry-api")["spec"]["maxReplicas"]
    workers = find(objects, "Deployment", "registry-worker")["spec"]["replicas"]
    return api_pods * serve.workers * (pool + 1 + listen) + workers * (pool + 1) + 1


@pytest.mark.parametrize(("tree", "note"), [("base", "api-hpa.yaml"),
                                          ("example", "kustomization.yaml")])
def test_the_largest_fleet_fits_postgresql_connections(tree: str, note: str) -> None:
    """The HPA's maximum is what PostgreSQL can hold; the comment beside it gives the sum and
    the max_connections it assumes (the base: PostgreSQL's default, 100)."""
    objects = kustomize(TREES[tree])
    text = (TREES[tree] / note).read_text()
    limit = int(re.search(r"max_connections = (\d+)", text).group(1))
    needed = _connections(objects)
    assert f"= {needed - 1} connections" in text, f"the comment's sum is stale: {needed - 1}"
    assert needed <= limit - RESERVED_CONNECTIONS, (needed, limit)
