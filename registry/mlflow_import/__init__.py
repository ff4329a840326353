"""``python -m registry import mlflow --from URL``: copy an MLflow model registry into this one.

An operator command, like ``migrate``: it writes to the database directly through the import
services (:mod:`registry.services.imports`), because it sets what no API client may (version
numbers with gaps, stages without the stage machine, original creation times). MLflow is only
read, over its REST API (:class:`MlflowReader`, retrying), so any MLflow 2.x or 3.x server will
do. Every model, version, alias and file is a unit of work of its own: a run cut off anywhere is
finished by the next, which skips what is here already.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from registry.mlflow_import.importer import Importer
from registry.mlflow_import.plan import Report
from registry.mlflow_import.reader import MlflowError, MlflowReader, MlflowUnreachable, UsageError, mlflow_url

if TYPE_CHECKING:
    from registry.bootstrap import Container

HELP = """\
Copy every registered model of an MLflow server into this registry, reading MLflow's REST API
at --from. Like `migrate`, it works on this registry's database directly (REGISTRY_DATABASE_URL,
on the server host), as the admin `import:mlflow`; every entry of one run carries the request id
`import-<uuid>` it prints.

Copied: models with their descriptions and tags, every live version under its own number (the
numbers of deleted versions stay unused here), with its stage, source, run id, description and
tags, and the aliases. Each import's audit entry (model.imported, model_version.imported) keeps
the original creation and update times and user. Prompts are not models: they are left out.
MLflow's REST API does not show a deleted version, so when a model's highest versions were
deleted their numbers are not known here and may be handed out again.

MLflow allows several versions in Production, this registry one: the one updated last stays in
production, the others arrive archived, each decision listed in the report.

Safe to run again: what is here already is skipped, and what a cut-off run left is finished. A
version number already taken here by a version not imported from this MLflow, or an alias that
points elsewhere here, is a conflict: left as it is and reported. A model whose version fails
to import stops there (later numbers would pass it for good) until a later run.

Artifacts: --copy-artifacts downloads each version's files through MLflow's artifact proxy (its
mlflow-artifacts:/, runs:/ and models:/ locations), stores them here checked against their
sha256, then seals the versions not in stage none (as leaving none seals a version here).
Without it no file is copied, and the versions not in stage none are sealed holding none: their
files stay where their source points, and nobody can add files to a version already past none.
Decide at the first run: a version sealed here takes no files later.

Credentials for MLflow: MLFLOW_TRACKING_TOKEN (Bearer), else MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD (Basic). Network errors and 408/429/5xx answers are retried with
backoff.

Progress goes to stderr, a line per model; the summary to stdout (--json: one JSON report).
Exit 0: everything is here; 1: some entries conflicted or failed (listed); 2: a usage error,
or MLflow unreachable or refusing the credentials."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``import mlflow`` under the ``import`` command's subparsers."""
    p = subparsers.add_parser("mlflow", help="copy an MLflow model registry into this one (on the "
                                             "server host)",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, type=mlflow_url, metavar="URL",
                   help="the MLflow server, e.g. http://mlflow.internal:5000")
    p.add_argument("--model", dest="models", action="append", metavar="NAME",
                   help="import only this model (repeatable; default: every model)")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be created, skipped and decided; change nothing")
    p.add_argument("--copy-artifacts", action="store_true",
                   help="copy each version's files here and seal versions not in stage none")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")
    return p


async def import_mlflow(args: argparse.Namespace, container: Container, env: Mapping[str, str] | None = None,
                        **reader_options: Any) -> int:
    """Run the import; returns the exit status. ``reader_options`` go to :class:`MlflowReader`
    (a transport, a sleep, the retries: for tests)."""
    try:
        reader = MlflowReader.open(args.source, os.environ if env is None else env, **reader_options)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    importer = Importer(reader, container, dry_run=args.dry_run, copy_artifacts=args.copy_artifacts)
    try:
        report = await importer.run(args.models)
    except (MlflowUnreachable, MlflowError) as exc:
        # Unreachable at any point, or refusing the first listing (a wrong URL or credentials).
        importer.report.stopped = str(exc)
        _print(importer.report, args.json)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await reader.aclose()
    _print(report, args.json)
    return 0 if report.ok else 1


def _print(report: Report, as_json: bool) -> None:
    print(report.to_json() if as_json else "\n".join(report.lines()), flush=True)
