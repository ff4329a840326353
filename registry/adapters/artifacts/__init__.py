"""Artifact stores: a local folder (the embedded default) and S3 through the minio client."""
