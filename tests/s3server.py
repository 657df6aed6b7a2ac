"""A real S3 server on 127.0.0.1 for the store tests: `from s3server import S3Server`.

moto's server mode speaks the S3 wire protocol over HTTP (werkzeug, one
thread per request), so s3fs, botocore and their retries, errors and
conditional writes are exercised as against any S3-compatible server. Its
buckets live in this process's memory and vanish when it stops.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

REGION = "us-east-1"
KEY = SECRET = "testing"  # moto accepts any credentials; botocore insists on some


@dataclass
class S3Server:
    endpoint: str

    @classmethod
    def start(cls):
        """(server, S3Server): call `server.stop()` when done."""
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        return server, cls(f"http://{host}:{port}")

    def storage_options(self) -> dict:
        """What `ArtifactStore(url, **options)` and `publish.storage_options` take to reach this server."""
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET, "client_kwargs": {"region_name": REGION}}

    def env(self) -> dict[str, str]:
        """The same as the usual AWS variables (what the CLI and a worker's environment use)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_DEFAULT_REGION": REGION, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}

    def new_bucket(self, prefix: str = "bertbuild") -> str:
        import boto3

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                     region_name=REGION).create_bucket(Bucket=name)
        return name
