"""A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager.

The binaries come from the folder named by ``KUBEBUILDER_ASSETS`` (controller-runtime's envtest
convention; ``make envtest`` unpacks v1.36 binaries into ``.envtest/bin``, elsewhere ``setup-envtest use``
gives the same files). :class:`ControlPlane` picks free loopback ports, makes its own certificates with
openssl, starts the three processes, waits for ``/readyz`` and stops exactly the pids it started.

What it is: a real API server (structural schemas, CEL with its cost budget, defaulting, pruning,
server-side apply and dry run, RBAC, admission) and a real controller manager (Job controller, garbage
collector, TTL-after-finished). What it is not: no kubelet and no scheduler, so Pods stay Pending; a test
plays the kubelet by patching a Pod's status.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
HOW_TO_GET = (
    "run `make envtest` (unpacks ../shared/envtest into .envtest/bin), or point KUBEBUILDER_ASSETS at a folder "
    "with etcd, kube-apiserver and kube-controller-manager (`setup-envtest use -p path` prints one)"
)


def assets_dir() -> Path | None:
    """The envtest assets folder: ``$KUBEBUILDER_ASSETS``, else the repository's ``.envtest/bin``; None if absent."""
    env = os.environ.get("KUBEBUILDER_ASSETS")
    folder = Path(env) if env else REPO / ".envtest" / "bin"
    if all(os.access(folder / b, os.X_OK) for b in BINARIES[:2]):
        return folder
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1, an admin client certificate and the service-account keys."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=eft-envtest-ca", cwd=pki)  # fmt: skip
    (pki / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    )
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
    for name, subject, ext in (
        ("apiserver", "/CN=kube-apiserver", "server.ext"),
        ("admin", "/O=system:masters/CN=envtest-admin", "client.ext"),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=pki)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "3650", "-extfile", ext, cwd=pki)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig_text(server: str, pki: Path, *, user: str = "admin") -> str:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return f"""apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {server}
    certificate-authority-data: {b64("ca.crt")}
users:
- name: {user}
  user:
    client-certificate-data: {b64(f"{user}.crt")}
    client-key-data: {b64(f"{user}.key")}
contexts:
- name: envtest
  context: {{cluster: envtest, user: {user}}}
current-context: envtest
"""


#: Audit what ServiceAccounts do (the operator under the chart's RBAC: which verbs its code really uses),
#: metadata only, once per request.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


@dataclass
class ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager on free loopback ports, under ``workdir``."""

    assets: Path
    workdir: Path
    apiserver_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _apiserver_args: list[str] = field(default_factory=list)

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def log(self, name: str) -> Path:
        return self.workdir / "log" / f"{name}.log"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: one JSON event per request made by a ServiceAccount (metadata only)."""
        return self.workdir / "log" / "audit.log"

    def requests_of(self, username: str) -> set[tuple[str, str, str]]:
        """(apiGroup, resource[/subresource], verb) of every request ``username`` made, from the audit log."""
        out: set[tuple[str, str, str]] = set()
        for line in self.audit_log.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (event.get("user") or {}).get("username") != username or not ref.get("resource"):
                continue
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            out.add((ref.get("apiGroup") or "", resource, event["verb"]))
        return out

    def _spawn(self, name: str, args: list[str], *, append: bool = False) -> None:
        self.log(name).parent.mkdir(parents=True, exist_ok=True)
        out = self.log(name).open("ab" if append else "wb")
        self.procs[name] = subprocess.Popen(
            [str(self.assets / name), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _wait(self, name: str, ready: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}; see {self.log(name)}")
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} was not ready within {timeout:.0f} s; see {self.log(name)}")

    def _admin_tls(self) -> ssl.SSLContext:
        """TLS to the API server as the admin: the cluster's CA, the admin's client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _apiserver_ready(self) -> bool:
        ctx = self._admin_tls()
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def start(self) -> None:
        make_pki(self.pki)
        etcd_port, peer_port = free_port(), free_port()
        self.apiserver_port = free_port()
        data = self.workdir / "etcd-data"
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._spawn(
            "etcd",
            ["--name", "envtest", "--data-dir", str(data),
             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-cluster", f"envtest=http://127.0.0.1:{peer_port}",
             "--unsafe-no-fsync", "--quota-backend-bytes", "2147483648"],
        )  # fmt: skip

        def etcd_ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{etcd_port}/health", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        self._wait("etcd", etcd_ready, 30)
        pki = self.pki
        audit_policy = self.workdir / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY)
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        self._apiserver_args = (
            ["--etcd-servers", f"http://127.0.0.1:{etcd_port}",
             "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
             "--secure-port", str(self.apiserver_port),
             "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
             "--client-ca-file", str(pki / "ca.crt"),
             "--authorization-mode", "RBAC",
             "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
             "--service-account-key-file", str(pki / "sa.pub"),
             "--service-account-signing-key-file", str(pki / "sa.key"),
             "--service-cluster-ip-range", "10.96.0.0/16",
             "--allow-privileged=true", "--v", "1",
             "--audit-policy-file", str(audit_policy), "--audit-log-path", str(self.audit_log),
             "--audit-log-format", "json", "--audit-log-mode", "blocking"]
        )  # fmt: skip
        self._spawn("kube-apiserver", self._apiserver_args)
        self._wait("kube-apiserver", self._apiserver_ready, 90)
        self.kubeconfig.write_text(kubeconfig_text(self.server, pki))
        self.kubeconfig.chmod(0o600)
        if os.access(self.assets / "kube-controller-manager", os.X_OK):
            kc = str(self.kubeconfig)
            self._spawn(
                "kube-controller-manager",
                ["--kubeconfig", kc, "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
                 "--controllers", "*", "--use-service-account-credentials=false",
                 "--service-account-private-key-file", str(pki / "sa.key"), "--root-ca-file", str(pki / "ca.crt"),
                 "--cluster-signing-cert-file", str(pki / "ca.crt"),
                 "--cluster-signing-key-file", str(pki / "ca.key"),
                 "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
                 "--leader-elect=false", "--v", "1"],
            )  # fmt: skip

    def stop(self) -> None:
        """Stop exactly the processes started here, newest first (SIGTERM, then SIGKILL after 10 s)."""
        for name in reversed(list(self.procs)):
            _terminate(self.procs[name])
        self.procs.clear()

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone, by pid (SIGTERM, SIGKILL after 10 s): an API outage. etcd and the
        controller manager keep running; :meth:`start_apiserver` brings it back on the same port."""
        _terminate(self.procs.pop("kube-apiserver"))

    def start_apiserver(self) -> None:
        """Start kube-apiserver again with the same flags: the same port, etcd, certificates and data."""
        self._spawn("kube-apiserver", self._apiserver_args, append=True)
        self._wait("kube-apiserver", self._apiserver_ready, 90)

    def wait_controllers(self, timeout: float = 180) -> float:
        """Wait until the controller manager serves a new namespace again; return how long that took.

        After an API outage the controller manager's informers reconnect with client-go's backoff (up to
        30 s a try, measured: 40-55 s after a 30 s outage). Until then a new namespace gets no ``default``
        ServiceAccount, and a Job in it no Pod ("serviceaccount default not found"): a test that runs after
        the outage test would wait for Pods that never come. This creates a namespace with a Job in it and
        waits for the Job's Pod (the ServiceAccount and Job controllers both working), then deletes it.
        """
        started = time.monotonic()
        ns = f"cp-probe-{os.urandom(4).hex()}"
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        job = {
            "metadata": {"name": "probe"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "probe"}]},
                },
            },
        }
        try:
            self.request("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job)
            wait_for(
                lambda: self.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"],
                timeout,
                interval=1,
                what="the controller manager to create a Pod for a Job in a new namespace",
            )
        finally:
            self.request("DELETE", f"/api/v1/namespaces/{ns}")
        return time.monotonic() - started

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request to the API server as the admin (stdlib only); the decoded JSON answer."""
        ctx = self._admin_tls()
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def client_certificate(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for ``user`` (in ``groups``) with a client certificate signed by the cluster's CA."""
        subject = "".join(f"/O={g}" for g in groups) + f"/CN={user}"
        key = user.replace(":", "_")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{key}.key", "-out", f"{key}.csr",
                 "-subj", subject, cwd=self.pki)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{key}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{key}.crt", "-days", "1", "-extfile", "client.ext", cwd=self.pki)  # fmt: skip
        path = self.workdir / f"kubeconfig-{key}"
        path.write_text(kubeconfig_text(self.server, self.pki, user=key))
        path.chmod(0o600)
        return path


def wait_for(predicate: object, timeout: float = 30, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def apply(dyn: Any, doc: dict[str, Any], *, namespace: str | None = None, dry_run: bool = False) -> Any:
    """Server-side apply of one object with strict field validation (what ``kubectl apply --server-side`` does)."""
    resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    ns = (doc.get("metadata") or {}).get("namespace") or namespace if resource.namespaced else None
    return resource.server_side_apply(
        body=doc,
        namespace=ns,
        field_manager="eft-tests",
        force_conflicts=True,
        dry_run="All" if dry_run else None,
        query_params=[("fieldValidation", "Strict")],
    )


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Stop one process group we started: SIGTERM, then SIGKILL after 10 s (nothing when it already ended)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
