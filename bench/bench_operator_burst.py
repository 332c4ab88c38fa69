"""Burst benchmark: N EmbeddingFinetune resources created at once, with the real kopf loop, on two servers.

Three processes, as in a cluster: the API server, the operator (kopf over the real handlers, logged in
over HTTP(S)), and this driver, which creates the resources in one burst and watches Jobs appear. It
reports the time from each create to its Job (p50, p90, p99), the time until every Job exists, duplicate
Jobs (must be 0), and the operator process's peak RSS. The baseline, measured in the same run, is the same
burst against the same API server with no operator: the time the API alone needs.

The two servers:

* ``kmock``: the in-memory emulator (what the fault-injection tests use), on uvloop.
* ``envtest``: the real kube-apiserver, etcd and kube-controller-manager (v1.36, ``$KUBEBUILDER_ASSETS``
  or ``.envtest/bin``), with TLS and RBAC, where the Job controller creates a pod for every Job and the
  operator also sees each pod appear. The operator logs in with a kubeconfig, as ``eft-operator`` does
  outside a cluster.

    python bench/bench_operator_burst.py [--count 300] [--creators 8] [--idle 60] [--server kmock|envtest|both]

``--creators`` clients create the resources in parallel (each creates its share one after another), and the
API server's own create latency (p50, p99 of one create) is measured in the same run, in a namespace the
operator ignores until it starts, as the baseline the create -> Job ratios are printed against. The operator
counts its own API requests (an aiohttp trace), so the report says how many requests each resource cost;
its RSS is read after the burst and again after ``--idle`` seconds without work.

``BURST_PROFILE=FILE`` writes a cProfile of the operator process, timed by its CPU time (a wall-clock
profile charges the time the process waited for a core to whatever frame it was in). Targets on the 2-core development
machine: p99 under 2 s on kmock and under 1 s on the real server, operator RSS under 150 MB, 0 duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # controlplane.py: the real server

from eft_api.spec import API_GROUP, API_VERSION, KIND, PLURAL

REPO = Path(__file__).resolve().parents[1]

EFT_URL = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{{ns}}/{PLURAL}"
JOBS_URL = "/apis/batch/v1/jobs"
OWNER_LABEL = "finetune.eft.dev/name"


def speed_up_kmock_request_matching() -> None:
    """Make kmock's reaction matching O(1) per request instead of O(all requests so far).

    To choose the reaction that serves a request, kmock asks ``request in view`` for each reaction's view,
    and a view answers by walking every request the server has ever recorded (an identity match through
    the view tree). A burst of a few thousand requests then spends minutes inside the emulator, and the
    benchmark would time kmock instead of the operator. For the views kmock's fallbacks use (plain filters,
    priorities and the root), membership is exactly "the criteria match and the source holds it", so it
    is answered directly here; any other view keeps kmock's own check. Tests do not need this.
    """
    from kmock._internal import dsl, rendering

    original = dsl.View.__contains__

    def contains(self: Any, item: Any) -> bool:
        if isinstance(item, rendering.Request):
            if type(self) is dsl.Filter:
                return bool(self.criteria(item)) and contains(self._source, item)
            if type(self) in (dsl.Chained, dsl.Priority):
                return contains(self._source, item)
            if isinstance(self, dsl.Root):
                return any(r is item for r in reversed(self._requests))
        return bool(original(self, item))

    dsl.View.__contains__ = contains  # type: ignore[method-assign]

    # Likewise, kmock finds the object of a named request (get, create, patch, delete) by scanning every
    # object it stores; its store is a mapping keyed by (resource, namespace, name), so look it up.
    from kmock._internal import k8s

    scan = k8s.KubernetesEmulator._KubernetesEmulator__get_objs  # type: ignore[attr-defined]

    def get_objs(self: Any, request: Any, strict: bool) -> list[Any]:
        if strict and request.name is not None and request.resource is not None:
            key = (request.resource, request.namespace, request.name)
            return [self._objects[key]] if key in self._objects else []
        return list(scan(self, request, strict))

    k8s.KubernetesEmulator._KubernetesEmulator__get_objs = get_objs  # type: ignore[attr-defined]


# --- process 1: the API server ------------------------------------------------------------------------


async def serve_api(port: int) -> None:
    import kmock

    speed_up_kmock_request_matching()
    async with kmock.KubernetesEmulator() as km, kmock.Server(km, host="127.0.0.1", port=port):
        km.resources.load_bundled()
        km.resources[f"{API_GROUP}/{API_VERSION}/{PLURAL}"] = kmock.ResourceInfo(
            kind=KIND,
            namespaced=True,
            verbs={"get", "list", "watch", "create", "patch", "delete"},
            subresources={"status"},
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()


# --- process 2: the operator --------------------------------------------------------------------------


def request_kind(method: str, path: str) -> str:
    """``PATCH embeddingfinetunes/status``: the method and what a request is about, without names."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2 :]
    else:
        rest = parts[2:] if parts[:1] == ["apis"] else parts[1:]
        rest = rest[1:] if rest else rest
    plural = rest[0] if rest else "?"
    return f"{method} {plural}" + (f"/{rest[2]}" if len(rest) > 2 else "")


def count_requests(path: str) -> None:
    """Count every HTTP request of this process's aiohttp sessions (kopf's and the reconciler's) by kind,
    written to ``path`` as JSON every 0.2 s (replaced whole): a public aiohttp TraceConfig added to each
    session made."""
    counts: dict[str, int] = {}

    async def started(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        kind = request_kind(params.method, params.url.path)
        counts[kind] = counts.get(kind, 0) + 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(started)
    original = aiohttp.ClientSession.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["trace_configs"] = [*(kwargs.get("trace_configs") or []), trace]
        original(self, *args, **kwargs)

    aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign]

    async def write() -> None:
        while True:  # whole files only (a reader must never see a half-written one: it reads as no requests)
            Path(path + ".tmp").write_text(json.dumps(counts))
            os.replace(path + ".tmp", path)
            await asyncio.sleep(0.2)

    asyncio.get_running_loop().create_task(write())


async def run_operator(url: str, kubeconfig: str | None) -> None:
    """The operator against kmock (``url``, plain HTTP) or a real server (``kubeconfig``)."""
    import kopf

    if os.environ.get("BURST_REQUESTS"):
        count_requests(os.environ["BURST_REQUESTS"])

    from eft_operator import connection
    from eft_operator.config import Settings
    from eft_operator.handlers import register
    from eft_operator.reconciler import Reconciler

    logging.basicConfig(level=logging.WARNING)
    registry = register(kopf.OperatorRegistry())
    memo = kopf.Memo(reconciler=Reconciler(Settings(log_level="ERROR")), metrics_port=None)
    if kubeconfig:  # as eft-operator logs in outside a cluster ($KUBECONFIG is set by the driver)
        kopf.on.login(id="kubeconfig", registry=registry)(connection.login)
        memo["kubeconfig"] = kubeconfig
    else:
        info = kopf.ConnectionInfo(server=url, insecure=True)
        kopf.on.login(id="kmock", registry=registry)(lambda **_: info)
        memo["connection"] = info

        def kmock_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
            # kmock assigns no resourceVersion, so after each of its own patches kopf would wait the whole
            # consistency timeout for a version that never comes; a real API server answers with one at once.
            settings.persistence.consistency_timeout = 0.2

        kopf.on.startup(id="bench", registry=registry)(kmock_settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await kopf.operator(registry=registry, memo=memo, clusterwide=True, standalone=True, stop_flag=stop)


# --- process 3: the driver ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def resource(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        # kmock assigns no uid or generation; a real server overwrites both
        "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "generation": 1},
        "spec": {
            "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
            "data": {"train": {"uri": "s3://bucket/pairs.jsonl", "format": "pairs"}},
            "output": {"uri": "s3://bucket/runs/"},
            "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi", "workDirSize": "1Gi"},
        },
    }


async def _create_all(
    http: aiohttp.ClientSession, url: str, ns: str, queue: list[str], created: dict[str, float], took: list[float]
) -> None:
    """One creator: takes the next name and creates it, until none is left."""
    while queue:
        name = queue.pop(0)
        t0 = time.monotonic()
        async with http.post(url + EFT_URL.format(ns=ns), json=resource(ns, name)) as resp:
            assert resp.status < 300, (resp.status, await resp.text())
        created[name] = time.monotonic()
        took.append(created[name] - t0)


async def burst(
    http: aiohttp.ClientSession, url: str, ns: str, names: list[str], creators: int
) -> tuple[dict[str, float], list[float]]:
    """Create ``names`` with ``creators`` parallel clients: when each create returned, and each one's latency."""
    created: dict[str, float] = {}
    took: list[float] = []
    queue = list(names)
    await asyncio.gather(*(_create_all(http, url, ns, queue, created, took) for _ in range(creators)))
    return created, sorted(took)


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (nearest rank)."""
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def current_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def operator_requests(path: Path) -> dict[str, int]:
    """The API requests the operator process has made so far, by kind (it writes them every 0.2 s)."""
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text() or "{}").items()}
    except (OSError, ValueError):
        return {}


async def list_jobs(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    """Every Job, in pages (a loaded API server may time out one big list: tried again a few times)."""
    jobs: list[dict[str, Any]] = []
    params = {"limit": "200"}
    for attempt in range(10):
        async with http.get(url + JOBS_URL, params=params) as resp:
            if resp.status >= 500 and attempt < 9:
                await asyncio.sleep(2.0)
                continue
            assert resp.status < 300, (resp.status, await resp.text())
            page = await resp.json()
        jobs += page["items"]
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return jobs
        params = {"limit": "200", "continue": token}
    raise SystemExit("the API server kept failing the list of Jobs")


async def run_created_events(http: aiohttp.ClientSession, url: str, names: list[str]) -> int:
    """How many of ``names`` (in the bench namespace) have their RunCreated Event: posted after the status
    write, which waits for the burst's creations, so counted once the idle time is over."""
    params = {"fieldSelector": "reason=RunCreated", "limit": "1000"}
    async with http.get(url + "/api/v1/namespaces/bench/events", params=params) as resp:
        if resp.status >= 300:  # not served (kmock may not list Events): not counted
            return -1
        page = await resp.json()
    items = [e for e in page.get("items") or [] if e.get("reason") == "RunCreated"]  # a server may ignore selectors
    named = {(e.get("involvedObject") or {}).get("name") for e in items}
    return sum(1 for n in names if n in named)


async def watch_jobs(http: aiohttp.ClientSession, url: str, seen: dict[str, list[float]]) -> None:
    """Record when each Job first appears (by its owner's name), from a watch stream.

    The stream is opened again whenever it ends or fails (a loaded real API server may refuse or close
    it): a watch that silently ended would otherwise read as an operator that made no Job at all.
    """
    while True:
        try:
            timeout = aiohttp.ClientTimeout(total=None)
            async with http.get(url + JOBS_URL, params={"watch": "true"}, timeout=timeout) as resp:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ADDED":
                        owner = ((event["object"].get("metadata") or {}).get("labels") or {}).get(OWNER_LABEL)
                        if owner and owner not in seen:
                            seen[owner] = [time.monotonic()]
        except (aiohttp.ClientError, ValueError) as exc:
            print(f"the Job watch failed ({exc!r}); watching again", file=sys.stderr, flush=True)
        await asyncio.sleep(0.2)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, start_new_session=True
    )


class Server:
    """Where the burst goes: a URL, how to reach it (TLS), and how the operator logs in."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = ""
        self.ssl: Any = None
        self.kubeconfig: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._plane: Any = None
        self._tmp: Any = None

    def __enter__(self) -> Server:
        if self.name == "kmock":
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            self._proc = start("--serve-api", str(port))
            assert self._proc.stdout is not None and self._proc.stdout.readline().strip() == "ready"
            return self
        import ssl
        import tempfile

        import yaml
        from controlplane import ControlPlane, apply, assets_dir
        from kubernetes import config, dynamic

        assets = assets_dir()
        if assets is None:
            raise SystemExit("no envtest binaries: set KUBEBUILDER_ASSETS or run `make envtest`")
        self._tmp = tempfile.TemporaryDirectory(prefix="eft-burst-")
        self._plane = ControlPlane(assets, Path(self._tmp.name))
        self._plane.start()
        self.url, self.kubeconfig = self._plane.server, str(self._plane.kubeconfig)
        os.environ["KUBECONFIG"] = self.kubeconfig  # for the operator process
        pki = self._plane.pki
        self.ssl = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ssl.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        api = config.new_client_from_config(config_file=self.kubeconfig)
        dyn = dynamic.DynamicClient(api)
        crd = yaml.safe_load((REPO / "crds" / "embeddingfinetunes.yaml").read_text())
        apply(dyn, crd)
        for ns in ("baseline", "bench"):
            apply(dyn, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        time.sleep(3)  # the CRD Established and the namespaces' default ServiceAccounts made
        api.close()
        return self

    def __exit__(self, *_: Any) -> None:
        if self._proc is not None:
            stop(self._proc)
        if self._plane is not None:
            self._plane.stop()
            self._tmp.cleanup()

    def operator_args(self) -> list[str]:
        return ["--operator", self.url, *(["--kubeconfig", self.kubeconfig] if self.kubeconfig else [])]


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def wait_for(check: Any, timeout: float, what: str, progress: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(
                f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({progress()})" if progress else "")
            )
        await asyncio.sleep(0.02)


async def drive(server: Server, count: int, creators: int, idle: float) -> dict[str, float]:
    url = server.url
    operator: subprocess.Popen[str] | None = None
    counter = Path(os.environ.get("TMPDIR", "/tmp")) / f"eft-burst-requests-{uuid.uuid4().hex[:8]}"
    try:
        connector = aiohttp.TCPConnector(limit=100, ssl=server.ssl if server.ssl is not None else False)
        async with aiohttp.ClientSession(connector=connector) as http:
            # Baseline: the same burst against the API server alone.
            t0 = time.monotonic()
            _, api_took = await burst(http, url, "baseline", [f"r{i:04d}" for i in range(count)], creators)
            baseline = time.monotonic() - t0

            seen: dict[str, list[float]] = {}
            watcher = asyncio.create_task(watch_jobs(http, url, seen))
            os.environ["BURST_REQUESTS"] = str(counter)
            operator = start(*server.operator_args())
            # The operator is up and watching when it has made the baseline resources' Jobs.
            await wait_for(
                lambda: sum(1 for o in seen if o.startswith("r")) >= count,
                600,
                "the operator to settle",
                lambda: f"{sum(1 for o in seen if o.startswith('r'))} of {count} start-up Jobs seen",
            )
            await asyncio.sleep(3.0)
            requests_before, cpu_before = operator_requests(counter), cpu_seconds(operator.pid)
            names = [f"b{i:04d}" for i in range(count)]
            t_start = time.monotonic()
            created, _ = await burst(http, url, "bench", names, creators)
            await wait_for(
                lambda: all(n in seen for n in names),
                600,
                "every Job of the burst",
                lambda: f"{sum(1 for n in names if n in seen)} of {count} seen",
            )
            all_done = max(seen[n][0] for n in names) - t_start
            await asyncio.sleep(2.0)  # let late duplicates, if any, show up
            after, cpu = operator_requests(counter), cpu_seconds(operator.pid) - cpu_before
            by_kind = {k: n - requests_before.get(k, 0) for k, n in after.items() if n > requests_before.get(k, 0)}
            rss, rss_after = peak_rss_mb(operator.pid), current_rss_mb(operator.pid)
            idle_rss = []  # (seconds idle, MB): six readings, so that growth and a plateau can be told apart
            for step in range(1, 7):
                await asyncio.sleep(idle / 6)
                idle_rss.append((step * idle / 6, current_rss_mb(operator.pid)))
            rss_idle = idle_rss[-1][1]
            with_event = await run_created_events(http, url, names)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            jobs = await list_jobs(http, url)
    finally:
        if operator is not None:
            stop(operator)
        counter.unlink(missing_ok=True)
        Path(f"{counter}.tmp").unlink(missing_ok=True)

    per_owner: dict[str, int] = {}
    for j in jobs:
        owner = ((j.get("metadata") or {}).get("labels") or {}).get(OWNER_LABEL)
        per_owner[owner] = per_owner.get(owner, 0) + 1
    duplicates = sum(n - 1 for n in per_owner.values() if n > 1)
    latencies = sorted(seen[n][0] - created[n] for n in names)
    api_p50, api_p99 = statistics.median(api_took), quantile(api_took, 0.99)
    p50, p99 = statistics.median(latencies), quantile(latencies, 0.99)

    target = 2.0 if server.name == "kmock" else 1.0
    tag = f"[{server.name}]"
    print(f"{tag} resources in the burst: {count} by {creators} creators (after {count} reconciled at start-up)")
    print(
        f"{tag} create -> Job: p50 {p50:.3f} s, p90 {quantile(latencies, 0.9):.3f} s, p99 {p99:.3f} s, "
        f"max {latencies[-1]:.3f} s (target p99 < {target:g} s)"
    )
    print(
        f"{tag} the API server's own create latency (no operator): p50 {api_p50:.3f} s, p99 {api_p99:.3f} s; "
        f"create -> Job over it: p50 x{p50 / api_p50:.1f}, p99 x{p99 / api_p99:.1f}"
    )
    print(
        f"{tag} time until every Job exists: {all_done:.2f} s; the same burst of creates with no "
        f"operator: {baseline:.2f} s (ratio {all_done / baseline:.1f})"
    )
    requests = sum(by_kind.values())
    kinds = ", ".join(f"{k} {n / count:.2f}" for k, n in sorted(by_kind.items(), key=lambda kv: -kv[1]))
    print(f"{tag} operator API requests: {requests} ({requests / count:.1f} per resource: {kinds})")
    print(
        f"{tag} operator CPU during the burst: {cpu:.2f} s ({1000 * cpu / count:.1f} ms per resource; the same on "
        "a loaded machine, unlike the times)"
    )
    print(f"{tag} duplicate Jobs: {duplicates} (target 0); Jobs in all: {len(jobs)}")
    if with_event >= 0:
        print(f"{tag} resources with their RunCreated Event after the idle time: {with_event} of {count}")
    print(
        f"{tag} operator RSS: peak {rss:.0f} MB, after the burst {rss_after:.0f} MB, after {idle:g} s idle "
        f"{rss_idle:.0f} MB (target < 150 MB)",
        flush=True,
    )
    print(f"{tag} operator RSS while idle: " + ", ".join(f"{t:.0f} s {mb:.1f} MB" for t, mb in idle_rss), flush=True)
    return {"duplicates": duplicates, "p99": p99}


async def main(servers: list[str], count: int, creators: int, idle: float) -> int:
    failed = False
    for name in servers:
        with Server(name) as server:
            result = await drive(server, count, creators, idle)
        failed = failed or result["duplicates"] > 0
    return 1 if failed else 0


def operator_main(url: str, kubeconfig: str | None) -> None:
    # As in the operator image, which installs no Kubernetes client library (operator/requirements.lock): the
    # development venv has ``kubernetes`` for the CLI and the tests, and kopf imports the models of whichever
    # client it finds (about 30 MB each), which the operator never uses.
    for library in ("kubernetes", "kubernetes_asyncio"):
        sys.modules.setdefault(library, None)  # type: ignore[arg-type]
    import uvloop

    if not os.environ.get("BURST_PROFILE"):
        uvloop.run(run_operator(url, kubeconfig))
        return
    import cProfile

    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        uvloop.run(run_operator(url, kubeconfig))
    finally:
        profile.disable()
        profile.dump_stats(os.environ["BURST_PROFILE"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="resources in the burst (default 300)")
    parser.add_argument("--server", choices=("kmock", "envtest", "both"), default="both", help="default both")
    parser.add_argument("--creators", type=int, default=8, help="parallel creating clients (default 8)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds idle before RSS is read again (60)")
    parser.add_argument("--serve-api", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--operator", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_api:
        import uvloop

        uvloop.run(serve_api(args.serve_api))
    elif args.operator:
        operator_main(args.operator, args.kubeconfig)
    else:
        chosen = ["kmock", "envtest"] if args.server == "both" else [args.server]
        sys.exit(asyncio.run(main(chosen, args.count, args.creators, args.idle)))
