"""``eft-operator`` as a real process (``python -m eft_operator``) against the real control plane, for the
availability tests: leader election between processes, SIGKILL, restarts.

:class:`OperatorProcess` starts one replica with a kubeconfig and its own probe and metrics ports, reads its
probes (``/readyz``, ``/leader``) and its log, and stops it by pid. With ``restart_after`` it plays the
kubelet: a process that exits by itself (it lost the Lease) is started again after that many seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from real_cluster import TEST_IMAGE

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Each phase's test report, kept on the test item by the ``pytest_runtest_makereport`` hook in conftest.py.
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test of ``request`` failed in its set-up or its call (read at a fixture's teardown)."""
    return any(r.failed for r in request.node.stash.get(REPORTS, {}).values())


class OperatorProcess:
    """One operator replica as a process; ``identity`` names it in the Lease."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        identity: str,
        *,
        watch: tuple[str, ...],
        lease_namespace: str,
        restart_after: float | None = None,
        **env: str,
    ) -> None:
        self.identity = identity
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.log_path = workdir / f"{identity}.log"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(workdir),
            "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "trainer_image")]),
            "KUBECONFIG": str(kubeconfig),
            "EFT_WATCH_NAMESPACES": ",".join(watch),
            "EFT_TRAINER_IMAGE": TEST_IMAGE,
            "EFT_PROGRESS_INTERVAL": "0",
            "EFT_LEASE_NAMESPACE": lease_namespace,
            "EFT_LEADER_IDENTITY": identity,
            "EFT_HEALTH_PORT": str(self.health_port),
            "EFT_METRICS_PORT": str(self.metrics_port),
            **env,
        }
        self.restart_after = restart_after
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []
        self._stopping = threading.Event()
        self._kubelet: threading.Thread | None = None

    def start(self) -> OperatorProcess:
        self._spawn()
        if self.restart_after is not None:
            self._kubelet = threading.Thread(target=self._restart_on_exit, daemon=True)
            self._kubelet.start()
        return self

    def _spawn(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "eft_operator"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _restart_on_exit(self) -> None:
        while not self._stopping.is_set():
            proc = self.proc
            if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                self.exits.append(proc.returncode)
                time.sleep(self.restart_after or 0)
                if not self._stopping.is_set():
                    self._spawn()
            time.sleep(0.2)

    def probe(self, path: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of a probe; (0, {}) when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=2) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled metric on ``/metrics`` (None when absent or nothing answers)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    def leading(self) -> bool:
        return self.probe("/leader")[0] == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the process (SIGKILL: the leader dies without releasing the Lease)."""
        self._stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self) -> int | None:
        """SIGTERM (a graceful stop releases the Lease), SIGKILL after 20 s; returns the exit status."""
        self.kill(signal.SIGTERM)
        if self.proc is None:
            return None
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(10)
        return self.proc.returncode
