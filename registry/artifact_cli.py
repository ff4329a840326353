"""``python -m registry artifacts upload|download|verify``: clients of a running service.

``verify`` trusts what the service serves, not what it says: it downloads every file (following
the presigned redirect on S3), hashes it here, rebuilds the manifest from those hashes, and checks
it against the version's ``manifest_digest`` and against the manifest recorded in the audit log when
the version was sealed (its ``artifacts_sealed`` entry, or the move out of none that sealed it).
Exit 0 when everything matches, 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.cli import FAILED, OK, UsageError, http_command
from registry.client import RegistryClient
from registry.domain.artifacts import Artifact, Manifest

SEALED, STAGE_CHANGED = "model_version.artifacts_sealed", "model_version.stage_changed"
BLOCK = 1024 * 1024


def _hash_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            sha.update(block)
    return sha.hexdigest()


@http_command
def upload(client: RegistryClient, args: argparse.Namespace) -> int:
    source: Path = args.file
    if not source.is_file():
        raise UsageError(f"{source} is not a file")
    target = args.path or source.name
    sha256 = _hash_file(source)
    with source.open("rb") as f:
        answer = client.upload_artifact(args.model, args.version, target, f, sha256)
    print(f"{answer['path']}\t{answer['size']}\t{answer['sha256']}")
    return OK


@http_command
def download(client: RegistryClient, args: argparse.Namespace) -> int:
    output: Path = args.output or Path(args.path.rsplit("/", 1)[-1])
    partial = output.with_name(output.name + ".part")
    sha = hashlib.sha256()
    try:
        with client.download_artifact(args.model, args.version, args.path) as response, \
                partial.open("wb") as out:
            for block in response.iter_bytes(BLOCK):
                sha.update(block)
                out.write(block)
        files = {f["path"]: f for f in client.list_artifacts(args.model, args.version)}
        expected = files.get(args.path, {}).get("sha256")
        if sha.hexdigest() != expected:
            print(f"MISMATCH {args.path}: downloaded sha256 {sha.hexdigest()}, listed {expected}",
                  file=sys.stderr)
            return FAILED
        partial.replace(output)  # only a checked file takes the output's name
    finally:
        partial.unlink(missing_ok=True)
    print(f"{output}\t{sha.hexdigest()}")
    return OK


def _served(client: RegistryClient, model: str, version: int, listed: dict[str, Any]) -> Artifact:
    sha, size = hashlib.sha256(), 0
    with client.download_artifact(model, version, listed["path"]) as response:
        for block in response.iter_bytes(BLOCK):
            sha.update(block)
            size += len(block)
    return Artifact(listed["path"], size, sha.hexdigest(), datetime.now(UTC), "")


def _recorded_seal(client: RegistryClient, model: str, version: int) -> tuple[int, str] | None:
    """The (seq, manifest digest) of the audit entry that sealed the version: its
    artifacts_sealed entry, or the move out of none that recorded the (empty) manifest."""
    for entry in client.audit_entries(model, version=version):
        after = entry.get("after") or {}
        if entry["action"] == SEALED:
            return entry["seq"], after.get("digest")
        artifacts = after.get("artifacts")
        if entry["action"] == STAGE_CHANGED and isinstance(artifacts, dict) and "files" in artifacts:
            return entry["seq"], artifacts.get("digest")
    return None


@http_command
def verify(client: RegistryClient, args: argparse.Namespace) -> int:
    version = client.get_version(args.model, args.version)
    problems: list[str] = []
    served = []
    for listed in client.list_artifacts(args.model, args.version):
        got = _served(client, args.model, args.version, listed)
        served.append(got)
        ok = (got.size, got.sha256) == (listed["size"], listed["sha256"])
        print(f"{'ok' if ok else 'MISMATCH'}\t{listed['path']}\t{got.size}\t{got.sha256}")
        if not ok:
            problems.append(f"{listed['path']}: served {got.size} bytes with sha256 {got.sha256}, "
                            f"recorded {listed['size']} bytes with sha256 {listed['sha256']}")
    manifest = Manifest.of(served)
    if version.get("sealed_at") is None:
        print(f"not sealed: {len(served)} file(s) checked against their recorded digests")
    else:
        if manifest.digest != version.get("manifest_digest"):
            problems.append(f"the served files' manifest is {manifest.digest}; the version records "
                            f"{version.get('manifest_digest')}")
        seal = _recorded_seal(client, args.model, args.version)
        if seal is None and manifest.digest == Manifest(()).digest:
            print("sealed holding no files when it left none before artifacts existed "
                  "(migration 0005): no seal entry to compare")
        elif seal is None:
            problems.append("no entry in the audit log records this version's seal")
        elif seal[1] != manifest.digest:
            problems.append(f"the audit log's seal (seq {seal[0]}) records {seal[1]}, "
                            f"not {manifest.digest}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"verified: {len(served)} file(s), manifest {manifest.digest}")
    return FAILED if problems else OK


def add_commands(sub: Any) -> None:
    a = sub.add_parser("artifacts", help="upload, download and verify a version's files")
    asub = a.add_subparsers(dest="artifacts_command", required=True)
    up = asub.add_parser("upload", help="stream a file into an unsealed version (with its sha256)")
    up.add_argument("model")
    up.add_argument("version", type=int)
    up.add_argument("file", type=Path)
    up.add_argument("--path", help="the path in the version (default: the file's name)")
    up.set_defaults(fn=upload)
    down = asub.add_parser("download", help="download a file and check its sha256")
    down.add_argument("model")
    down.add_argument("version", type=int)
    down.add_argument("path")
    down.add_argument("--output", type=Path)
    down.set_defaults(fn=download)
    ver = asub.add_parser("verify", help="re-download and re-hash every file; check the seal; "
                                         "exit 1 on any difference")
    ver.add_argument("model")
    ver.add_argument("version", type=int)
    ver.set_defaults(fn=verify)
