"""An S3 server for tests: moto's threaded server on loopback, with SigV4 signature checking on.

Needs ``moto[server]`` (not in constraints.txt). moto has no default credentials once auth is on:
only access keys of IAM users in its IAM backend are accepted (any other key, including
AKIAIOSFODNN7EXAMPLE, gets 403 InvalidAccessKeyId), and the user also needs a policy allowing
``s3:*`` or every call gets 403 AccessDenied. So ``s3_server()`` creates such a user first.

moto (5.2.5) with auth on does not check, and cannot serve, presigned URLs: any request signed in the
query string gets a 500 (KeyError on the missing Authorization header). ``signatures_unchecked()``
turns the check off so presigned URLs work, but then moto accepts any signature, tampered or expired.
Nor does moto verify x-amz-checksum-*, Content-MD5 or the signed payload hash against the body.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from minio import Minio

REGION = "us-east-1"
_ALLOW_S3 = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    access_key: str
    secret_key: str
    region: str = REGION

    def client(self, *, secret_key: str | None = None) -> Minio:
        """A minio client for this server; ``region`` spares minio its GetBucketLocation call."""
        return Minio(
            self.endpoint.removeprefix("http://"),
            access_key=self.access_key,
            secret_key=self.secret_key if secret_key is None else secret_key,
            secure=False,
            region=self.region,
        )

    def make_bucket(self, prefix: str = "test") -> str:
        """A new empty bucket with a unique name, which it returns."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().make_bucket(bucket_name=name)
        return name


@contextmanager
def signatures_unchecked() -> Iterator[None]:
    """Within: moto checks no signature (needed for presigned URLs, see above)."""
    from moto import settings

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """A running moto S3 server that checks signatures; its state (all of moto's) is reset on exit."""
    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends
    from moto.moto_api._internal.models import moto_api_backend
    from moto.server import ThreadedMotoServer

    # moto.settings reads the INITIAL_NO_AUTH_ACTION_COUNT environment variable once, at its first
    # import, which in a pytest session may already have happened; the auth check reads this
    # attribute on every request, so set it here (0: no request goes unchecked).
    saved_count = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
        user = f"s3-test-{uuid.uuid4().hex[:8]}"
        iam.create_user(region_name=REGION, user_name=user)
        iam.put_user_policy(user, "allow-s3", _ALLOW_S3)
        key = iam.create_access_key(user)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield S3Server(f"http://{host}:{port}", key.access_key_id, key.secret_access_key)
        finally:
            server.stop()
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved_count
        # The backends are process-global (shared with any mock_aws): drop our users, buckets and data.
        moto_api_backend.reset()
