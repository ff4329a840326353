"""Benchmark: artifact upload/download MiB/s through the service against the minio client talking to
the same S3 server directly, and the server process's peak RSS growth during each transfer.

    .venv/bin/python -m tests.benchmarks.artifacts --size-mib 1024 --store both --backend sqlite

S3 is moto's server in a process of its own (``python -m moto.server``), checking SigV4 signatures,
with an IAM user made for the run. The artifact is pseudo-random 1 MiB blocks made on the fly (one
``os.urandom`` block, rotated by a different offset each time), never held whole; its sha256 is
computed once up front and every transfer is checked against it. Rates are MiB/s (2**20 bytes);
the issue's targets: service >= 70 % of direct, peak RSS growth under 100 MB (95.4 MiB).

The service's upload time includes its move of the object from ``.uploads/`` into place (a
server-side copy on S3). Its S3 download is a 307 to a presigned URL: moto 5.2.5 answers presigned
requests with 500 while it checks signatures, so signature checks are switched off for that phase
(the direct download ran with them on; they cost moto a header signature, not per byte). The local
store's download streams through the service. Client, server and moto share the machine's cores, so
the numbers are a floor. PostgreSQL needs REGISTRY_TEST_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import httpx
import urllib3
from minio import Minio
from minio.error import S3Error

from tests.support import REPO, Server, create_pg_database, drop_pg_database, free_port, run_server, sqlite_url, stop

MiB = 1024 * 1024
PART_SIZE = 16 * MiB
REGION = "us-east-1"
TIMEOUT = httpx.Timeout(600.0)
RSS_TARGET_MIB = 100e6 / MiB
RATIO_TARGET = 0.70
_ALLOW_S3 = json.dumps({"Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


# -- the artifact ------------------------------------------------------------------------------------

class Artifact:
    """``size`` bytes made 1 MiB at a time; block i is one random block rotated by i * a prime
    (odd, so the 2**20 rotations are all distinct): incompressible, never the same block twice."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._base = os.urandom(MiB)
        sha = hashlib.sha256()
        for block in self.blocks():
            sha.update(block)
        self.sha256 = sha.digest()

    def blocks(self) -> Iterator[bytes]:
        for i, offset in enumerate(range(0, self.size, MiB)):
            k = (i * 104729) % MiB
            block = self._base[k:] + self._base[:k]
            yield block if self.size - offset >= MiB else block[: self.size - offset]

    def reader(self) -> BlockReader:
        return BlockReader(self.blocks())

    @property
    def content_digest(self) -> str:
        return f"sha-256=:{base64.b64encode(self.sha256).decode()}:"


class BlockReader:
    """A file-like ``read(n)`` over blocks, for minio's put_object."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._buf = bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buf += block
        if n < 0 or n >= len(self._buf):
            data = bytes(self._buf)
            self._buf.clear()
            return data
        with memoryview(self._buf) as view:
            data = bytes(view[:n])
        del self._buf[:n]  # O(1) from the front of a bytearray
        return data


def _check(data: Artifact, chunks: Iterator[bytes]) -> None:
    sha, size = hashlib.sha256(), 0
    for chunk in chunks:
        sha.update(chunk)
        size += len(chunk)
    if (size, sha.digest()) != (data.size, data.sha256):
        raise AssertionError(f"downloaded {size} bytes with sha256 {sha.hexdigest()}, "
                             f"expected {data.size} bytes with {data.sha256.hex()}")


# -- memory of a process tree -----------------------------------------------------------------------

def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (uvicorn --workers > 1 serves from child processes)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(parents.get(pid, []))
    return pids


def socket_holders(port: int, pids: list[int]) -> list[int]:
    """Which of ``pids`` hold the socket listening on 127.0.0.1:``port``."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1] == f"0100007F:{port:04X}" and cols[3] == "0A":
                inodes.add(f"socket:[{cols[9]}]")
    holders = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        if any(_readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
            holders.append(pid)
    return holders


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


@dataclass
class RssWatch:
    """Sums VmRSS over a process tree every ``interval`` s while the block runs. Also resets the
    kernel's high-water mark first (``clear_refs`` 5), so VmHWM catches a peak between samples."""

    root: int
    interval: float = 0.05
    pids: list[int] = field(default_factory=list)
    baseline: int = 0  # KiB
    peak: int = 0
    hwm: int | None = None  # None: the high-water mark could not be reset
    hwm_reset: bool = True
    _stop: threading.Event = field(default_factory=threading.Event)

    def _rss(self) -> int:
        return sum(_status_kib(pid).get("VmRSS", 0) for pid in self.pids)

    def __enter__(self) -> RssWatch:
        self.pids = _tree(self.root)
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.hwm_reset = False
        self.baseline = self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        if self.hwm_reset:
            self.hwm = sum(_status_kib(pid).get("VmHWM", 0) for pid in self.pids)

    @property
    def growth_mib(self) -> float:
        return (max(self.peak, self.hwm or 0) - self.baseline) / 1024


# -- moto in a process of its own -------------------------------------------------------------------

@dataclass
class Moto:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]

    def client(self, secret_key: str | None = None) -> Minio:
        return Minio(endpoint=self.endpoint.removeprefix("http://"), access_key=self.access_key,
                     secret_key=secret_key or self.secret_key, secure=False, region=REGION)

    def check_signatures(self, on: bool) -> None:
        _reset_auth(self.endpoint, on)

    def rss_mib(self) -> float:
        return _status_kib(self.process.pid).get("VmRSS", 0) / 1024


def _reset_auth(endpoint: str, on: bool) -> None:
    # "0": no request goes unchecked from now on; "inf": none is checked.
    httpx.post(endpoint + "/moto-api/reset-auth", content=b"0" if on else b"inf").raise_for_status()


@contextmanager
def moto_server(log_dir: Path) -> Iterator[Moto]:
    """``python -m moto.server`` on loopback checking signatures, with an IAM user allowed s3:*
    (moto accepts no other credentials once it checks)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    with (log_dir / "moto.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _reset_auth(endpoint, on=False)  # to create the user
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start:\n{(log_dir / 'moto.log').read_text()}") from None
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        user = f"bench-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="allow-s3", PolicyDocument=_ALLOW_S3)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        moto = Moto(endpoint, key["AccessKeyId"], key["SecretAccessKey"], proc)
        moto.check_signatures(True)
        try:  # signatures really are checked
            moto.client(secret_key="wrong" + moto.secret_key).list_buckets()
            raise RuntimeError("moto accepted a wrong secret key: signature checking is off")
        except S3Error:
            pass
        yield moto
    finally:
        stop(proc)


# -- the measurements -------------------------------------------------------------------------------

@dataclass
class Row:
    phase: str
    size: int
    seconds: float
    rss: RssWatch | None = None
    direction: str = ""  # "up" / "down": compared with the direct baseline of that direction
    service: bool = False
    failed: str | None = None

    @property
    def rate(self) -> float:
        return float("nan") if self.failed else self.size / MiB / self.seconds


def direct(moto: Moto, data: Artifact) -> list[Row]:
    """minio's put_object (16 MiB parts, 1 and 3 in flight) and get_object in 1 MiB reads."""
    client = moto.client()
    bucket = f"direct-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket_name=bucket)
    rows = []
    for parallel in (3, 1):  # the one-in-flight object stays for the download
        name = f"direct/p{parallel}.bin"
        t0 = time.perf_counter()
        client.put_object(bucket_name=bucket, object_name=name, data=data.reader(), length=data.size,
                          part_size=PART_SIZE, num_parallel_uploads=parallel)
        rows.append(Row(f"direct put_object ({parallel} part{'s' if parallel > 1 else ''} in flight)",
                        data.size, time.perf_counter() - t0, direction="up"))
        if parallel != 1:
            client.remove_object(bucket_name=bucket, object_name=name)
    t0 = time.perf_counter()
    response = client.get_object(bucket_name=bucket, object_name=name)
    try:
        _check(data, response.stream(MiB))
    finally:
        response.close()
        response.release_conn()
    rows.append(Row("direct get_object (1 MiB reads)", data.size, time.perf_counter() - t0,
                    direction="down"))
    client.remove_object(bucket_name=bucket, object_name=name)  # moto holds objects in memory
    return rows


def through_service(server: Server, data: Artifact, store: str, moto: Moto | None) -> list[Row]:
    """PUT the artifact streamed (Content-Length and Content-Digest given), then GET it."""
    name = f"bench-artifacts-{uuid.uuid4().hex[:8]}"
    rows = []
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=TIMEOUT) as api:
        api.post("/models", json={"name": name}).raise_for_status()
        r = api.post(f"/models/{name}/versions", json={"source": "s3://bench/m"})
        r.raise_for_status()
        path = f"/models/{name}/versions/{r.json()['version']}/artifacts/weights/model.bin"
        headers = {"Content-Length": str(data.size), "Content-Digest": data.content_digest,
                   "Content-Type": "application/octet-stream"}
        # Warm up first (thread pools, S3 connections, lazily imported code, the allocator's
        # arenas), so the RSS growth measured next is what one transfer costs, not first use.
        warm = Artifact(40 * MiB)
        warm_path = path.replace("model.bin", "warm-up.bin")
        api.put(warm_path, content=warm.blocks(), headers={
            "Content-Length": str(warm.size), "Content-Digest": warm.content_digest}).raise_for_status()
        if moto is None:
            with api.stream("GET", warm_path) as resp:
                _check(warm, resp.iter_bytes(MiB))
        with RssWatch(server.process.pid) as rss:
            t0 = time.perf_counter()
            r = api.put(path, content=data.blocks(), headers=headers)
            seconds = time.perf_counter() - t0
        if r.status_code != 201 or r.json()["sha256"] != data.sha256.hex() or r.json()["size"] != data.size:
            raise AssertionError(f"upload: {r.status_code} {r.text[:500]}")
        rows.append(Row(f"service PUT ({store})", data.size, seconds, rss, "up", True))

        if moto is not None:
            moto.check_signatures(False)  # moto 5.2.5 cannot serve presigned URLs while checking
            # The redirect is followed with urllib3, the HTTP library the direct minio baseline
            # uses, so the comparison measures the service's part (the 307), not two libraries.
            s3 = urllib3.PoolManager()
            with RssWatch(server.process.pid) as rss:
                t0 = time.perf_counter()
                r = api.get(path)
                redirect = time.perf_counter() - t0
                if r.status_code == 307:  # no bearer token to S3
                    resp = s3.request("GET", r.headers["location"], preload_content=False)
                    if resp.status != 200:
                        raise AssertionError(f"presigned GET: {resp.status}")
                    _check(data, resp.stream(MiB))
                    resp.release_conn()
                seconds = time.perf_counter() - t0
            phase = f"service GET ({store}: 307 + presigned GET)"
            if r.status_code != 307:  # reported, so the other phases still run
                print(f"  {phase} FAILED: {r.status_code} {r.text[:300]}")
                return rows + [Row(phase, data.size, seconds, rss, "down", True,
                                   failed=f"HTTP {r.status_code}")]
            latencies = [redirect]
            for _ in range(20):
                t0 = time.perf_counter()
                if api.get(path).status_code != 307:
                    raise AssertionError("download: no redirect")
                latencies.append(time.perf_counter() - t0)
            print(f"  service GET 307 latency: first {redirect * 1000:.1f} ms, "
                  f"median of 21 {statistics.median(latencies) * 1000:.1f} ms, "
                  f"max {max(latencies) * 1000:.1f} ms")
            rows.append(Row(phase, data.size, seconds, rss, "down", True))
        else:
            with RssWatch(server.process.pid) as rss:
                t0 = time.perf_counter()
                with api.stream("GET", path) as resp:
                    if resp.status_code != 200:
                        raise AssertionError(f"download: {resp.status_code} {resp.read()[:500]!r}")
                    _check(data, resp.iter_bytes(MiB))
                seconds = time.perf_counter() - t0
            rows.append(Row(f"service GET ({store}: streamed by the service)", data.size, seconds,
                            rss, "down", True))
    return rows


@contextmanager
def registry_server(args: argparse.Namespace, data_dir: Path, extra_env: dict[str, str]) -> Iterator[Server]:
    data_dir.mkdir(parents=True)
    url = sqlite_url(data_dir) if args.backend == "sqlite" else asyncio.run(create_pg_database())
    try:
        with run_server(url, data_dir, workers=args.workers, extra_env=extra_env) as server:
            pids = _tree(server.process.pid)
            holders = socket_holders(int(server.url.rsplit(":", 1)[1]), pids)
            print(f"  server: pid {server.process.pid}, process tree {pids}, "
                  f"socket held by {holders} (RSS is summed over the tree)")
            try:
                yield server
            except BaseException:
                print(f"server log (last 4000 chars):\n{server.log.read_text()[-4000:]}", file=sys.stderr)
                raise
    finally:
        if args.backend == "postgresql":
            asyncio.run(drop_pg_database(url))


def _report(rows: list[Row]) -> None:
    base = {r.direction: r for r in rows if not r.service and "3 parts" not in r.phase}
    print(f"\n{'phase':<46} {'MiB/s':>7} {'seconds':>8}  {'server RSS MiB: base':>20} {'peak':>6} "
          f"{'HWM':>6} {'growth':>7}  {'vs direct':>9}")
    for r in rows:
        if r.failed:
            print(f"{r.phase:<46} {'FAILED':>7} {r.failed}")
            continue
        rss = (f"{r.rss.baseline / 1024:>20.1f} {r.rss.peak / 1024:>6.1f} "
               f"{(r.rss.hwm or 0) / 1024:>6.1f} {r.rss.growth_mib:>7.1f}") if r.rss else " " * 43
        ratio = f"{_ratio(r, base):>9.0%}" if _ratio(r, base) is not None else ""
        print(f"{r.phase:<46} {r.rate:>7.1f} {r.seconds:>8.2f}  {rss}  {ratio}")
    print(f"\ntargets (issue 6): service >= {RATIO_TARGET:.0%} of direct on S3 (direct = 1 part in "
          f"flight, as the service uploads); server RSS growth < 100 MB = {RSS_TARGET_MIB:.1f} MiB "
          "(growth = max(sampled peak, VmHWM) - baseline)")
    for r in rows:
        if not r.service or r.failed or r.rss is None:
            continue
        marks = [f"RSS growth {r.rss.growth_mib:.1f} MiB "
                 f"{'ok' if r.rss.growth_mib < RSS_TARGET_MIB else 'MISSED'}"]
        ratio = _ratio(r, base)
        if ratio is not None:
            marks.insert(0, f"{ratio:.1%} of direct {'ok' if ratio >= RATIO_TARGET else 'MISSED'}")
        print(f"  {r.phase:<44} " + "; ".join(marks))


def _ratio(row: Row, base: dict[str, Row]) -> float | None:
    """Service over direct, for the S3 rows (the local store has no direct counterpart)."""
    if not row.service or "(s3" not in row.phase or row.direction not in base:
        return None
    return row.rate / base[row.direction].rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--store", choices=["s3", "local", "both"], default="both")
    p.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--workers", type=int, default=1, help="server processes (> 1 needs PostgreSQL)")
    args = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    import minio
    import moto

    print(f"commit={commit}{' (uncommitted changes)' if dirty else ''} backend={args.backend} "
          f"store={args.store} server=uvicorn workers={args.workers} size={args.size_mib} MiB "
          f"part_size={PART_SIZE // MiB} MiB cpus={os.cpu_count()} "
          f"load={' '.join(f'{x:.2f}' for x in os.getloadavg())} moto={moto.__version__} "
          f"minio={minio.__version__} python={sys.version.split()[0]}")
    t0 = time.perf_counter()
    data = Artifact(args.size_mib * MiB)
    print(f"  artifact: {data.size} bytes, sha256 {data.sha256.hex()} "
          f"(generated and hashed in {time.perf_counter() - t0:.2f} s)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.store in ("s3", "both"):
            with moto_server(Path(tmp)) as s3:
                print(f"  moto: pid {s3.process.pid} at {s3.endpoint}, signatures checked")
                rows += direct(s3, data)
                bucket = f"registry-{uuid.uuid4().hex[:8]}"
                s3.client().make_bucket(bucket_name=bucket)
                env = {"REGISTRY_ARTIFACTS_URL": f"s3://{bucket}/bench/", "REGISTRY_S3_ENDPOINT": s3.endpoint,
                       "REGISTRY_S3_ACCESS_KEY": s3.access_key, "REGISTRY_S3_SECRET_KEY": s3.secret_key,
                       "REGISTRY_S3_REGION": REGION}
                with registry_server(args, Path(tmp) / "s3", env) as server:
                    rows += through_service(server, data, "s3", s3)
                print(f"  moto RSS after: {s3.rss_mib():.0f} MiB")
        if args.store in ("local", "both"):
            with registry_server(args, Path(tmp) / "local", {}) as server:
                rows += through_service(server, data, "local", None)
    _report(rows)


if __name__ == "__main__":
    main()
