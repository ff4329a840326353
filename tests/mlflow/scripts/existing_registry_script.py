"""Register a trained model and release it: the kind of script a team already runs against an
MLflow registry, unchanged. It registers the model, adds two versions with their tags, moves each
through Staging to Production (archiving what held the stage before), points the "champion"
alias at the release, reads the release back the ways a serving job does, and finds versions
by their training run.

    MLFLOW_TRACKING_URI=... MLFLOW_TRACKING_TOKEN=... python existing_registry_script.py \\
        --model fraud-detector --artifacts /path/to/model-v1 /path/to/model-v2 --run-prefix train
"""

import argparse
import json
import os
import tempfile

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--artifacts", nargs="+", required=True, help="one model directory per version")
    parser.add_argument("--run-prefix", default="train")
    return parser.parse_args()


def ensure_registered_model(client, name):
    try:
        client.create_registered_model(name, tags={"team": "risk", "use-case": "fraud"},
                                       description="Scores card transactions for fraud.")
        print(f"registered model {name}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        print(f"model {name} already registered")


def add_version(client, name, source, run_id, metrics):
    tags = {"framework": "xgboost", "validation_status": "passed"}
    tags.update({f"metric.{k}": str(v) for k, v in metrics.items()})
    version = client.create_model_version(name, source, run_id=run_id, tags=tags,
                                          description=f"trained by run {run_id}")
    print(f"created version {version.version} from {source}")
    return version


def release(client, name, version):
    for stage in ("Staging", "Production"):
        moved = client.transition_model_version_stage(name, version, stage, archive_existing_versions=True)
        print(f"version {moved.version} is now in {moved.current_stage}")
    client.set_registered_model_alias(name, "champion", version)
    print(f"champion -> version {version}")


def main():
    args = parse_args()
    client = MlflowClient()
    ensure_registered_model(client, args.model)

    versions = []
    for i, source in enumerate(args.artifacts, start=1):
        run_id = f"{args.run_prefix}-{i}"
        versions.append(add_version(client, args.model, os.path.abspath(source), run_id, {"auc": 0.9 + i / 100}))
    for version in versions:
        release(client, args.model, version.version)

    production = client.get_latest_versions(args.model, stages=["Production"])
    assert len(production) == 1, production
    champion = client.get_model_version_by_alias(args.model, "champion")
    assert champion.version == production[0].version, (champion, production)
    local = mlflow.artifacts.download_artifacts(f"models:/{args.model}@champion", dst_path=tempfile.mkdtemp())
    served = sorted(os.listdir(local))

    by_run = {}
    for i in range(1, len(args.artifacts) + 1):
        found = client.search_model_versions(f"run_id = '{args.run_prefix}-{i}'")
        by_run[f"{args.run_prefix}-{i}"] = [(v.name, v.version, v.current_stage) for v in found]

    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name = '{args.model}'")}
    with open(os.path.join(local, "weights.txt")) as f:
        weights = f.read()
    print(json.dumps({"model": args.model, "production": production[0].version, "champion": champion.version,
                      "champion_tags": champion.tags, "served_files": served, "served_weights": weights,
                      "by_run": by_run, "stages": stages}, sort_keys=True))


if __name__ == "__main__":
    main()
