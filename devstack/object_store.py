"""A local S3 server (moto) on a loopback port, where the broker keeps its data.

Tansu's ``memory://`` engine keeps topics, records and committed offsets inside the
broker process, so a broker restart is an empty cluster. Its ``s3://`` engine keeps them
in a bucket instead; with this server as the bucket, the broker can be killed and started
again on the same port and finds its topics, records and group offsets (the broker-kill
fault of ``benchmarks.faults``). The server itself keeps the objects in its own memory:
they outlive the broker, not this server. Dev and tests only (``pip install moto[server]``).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from devstack.process import LOOPBACK, DevStackError, ManagedProcess, port_accepts
from devstack.service import ServiceProcess

ACCESS_KEY = "devstack"
SECRET_KEY = "devstack-secret"
REGION = "us-east-1"


class S3Store(ServiceProcess):
    """An S3-compatible server with one bucket, for ``KafkaBroker(storage=...)``."""

    name = "s3"

    def __init__(self, *, bucket: str = "tansu", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise DevStackError("moto is not installed: pip install 'moto[server]'") from exc
        self.bucket = bucket

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def storage_engine(self) -> str:
        """The broker's ``--storage-engine`` for this bucket."""
        return f"s3://{self.bucket}/"

    def broker_env(self) -> dict[str, str]:
        """The environment the broker reads its S3 endpoint and credentials from."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def _argv(self, port: int, run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]

    def _probe(self, port: int, process: ManagedProcess) -> bool:
        if not port_accepts(port):
            return False
        # create the bucket (an anonymous PUT is accepted by moto; 409 when it exists)
        req = urllib.request.Request(f"http://{LOOPBACK}:{port}/{self.bucket}", method="PUT")
        try:
            with urllib.request.urlopen(req, timeout=5):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 409
        except OSError:
            return False
