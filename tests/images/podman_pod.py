"""Run one container of a Kubernetes Pod spec with podman, as a kubelet would run it (what the image tests need).

:func:`podman_args` turns the container of a rendered Pod template (the Job's from ``eft render``, the
Deployment's from the chart) into ``podman run`` arguments: its command and args, its env (``value`` and
``secretKeyRef`` from the Secrets given, optional keys skipped), its volume mounts (``configMap`` items
written to a folder and mounted read-only, ``emptyDir`` a fresh folder owned by the pod's fsGroup), the
termination-message file, and its security context (runAsUser/runAsGroup, readOnlyRootFilesystem without
podman's extra tmpfs mounts, capabilities dropped, no privilege escalation). Anything else in the spec that
would change how the container runs is refused, so a new field cannot be silently ignored here.

Not carried over: resource limits (cgroup v1 without a systemd manager here) and the network (the caller
chooses: the servers under test listen on the host's loopback).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Container fields that only describe or schedule the container; everything else must be handled below.
IGNORED = {"name", "image", "imagePullPolicy", "ports", "resources", "livenessProbe", "readinessProbe",
           "terminationMessagePolicy"}  # fmt: skip
HANDLED = {"command", "args", "env", "volumeMounts", "securityContext", "terminationMessagePath", "workingDir"}


@dataclass
class Pod:
    """What the cluster would supply to a pod: Secrets and ConfigMaps by name, and a folder for volumes."""

    root: Path
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    termination_log: Path | None = None


def _env(container: dict[str, Any], pod: Pod) -> list[str]:
    out: list[str] = []
    for var in container.get("env", []):
        if "value" in var:
            out += ["--env", f"{var['name']}={var['value']}"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        value = pod.secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            if ref.get("optional"):
                continue
            raise KeyError(f"env {var['name']}: Secret {ref['name']} has no key {ref['key']}")
        out += ["--env", f"{var['name']}={value}"]
    return out


def _volumes(spec: dict[str, Any], container: dict[str, Any], pod: Pod, fs_group: int | None) -> list[str]:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    out: list[str] = []
    for mount in container.get("volumeMounts", []):
        vol = volumes[mount["name"]]
        host = pod.root / "volumes" / mount["name"]
        host.mkdir(parents=True, exist_ok=True)
        if "configMap" in vol:
            data = pod.config_maps[vol["configMap"]["name"]]
            items = vol["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (host / item["path"]).write_text(data[item["key"]], encoding="utf-8")
                (host / item["path"]).chmod(0o644)
            host.chmod(0o755)
        elif "emptyDir" in vol:
            if fs_group is not None:
                os.chown(host, 0, fs_group)
                host.chmod(0o2775)
        else:
            raise ValueError(f"volume {mount['name']}: only configMap and emptyDir volumes are supported here")
        mode = "ro" if mount.get("readOnly") or "configMap" in vol else "rw"
        out += ["--volume", f"{host}:{mount['mountPath']}:{mode}"]
    return out


def podman_args(spec: dict[str, Any], name: str, pod: Pod, *, image: str | None = None) -> list[str]:
    """``podman run`` arguments (after ``run``, before none) for container ``name`` of the Pod ``spec``."""
    container = next(c for c in spec["containers"] if c["name"] == name)
    unknown = set(container) - IGNORED - HANDLED
    if unknown:
        raise ValueError(f"container {name}: fields not carried over to podman: {sorted(unknown)}")
    pod_sc = spec.get("securityContext", {})
    sc = {**pod_sc, **container.get("securityContext", {})}
    args: list[str] = []
    user, group = sc.get("runAsUser"), sc.get("runAsGroup")
    if user is not None:
        args += ["--user", f"{user}:{group if group is not None else user}"]
    if pod_sc.get("fsGroup") is not None:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    if sc.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    for cap in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("runAsNonRoot") and not user:
        raise ValueError(f"container {name}: runAsNonRoot without a numeric runAsUser")
    args += _env(container, pod)
    args += _volumes(spec, container, pod, pod_sc.get("fsGroup"))
    if pod.termination_log is not None:
        pod.termination_log.touch()
        pod.termination_log.chmod(0o666)
        args += ["--volume", f"{pod.termination_log}:{container.get('terminationMessagePath', '/dev/termination-log')}"]
    if "workingDir" in container:
        args += ["--workdir", container["workingDir"]]
    command = container.get("command")
    if command:
        args += ["--entrypoint", command[0]]
    args.append(image or container["image"])
    if command:
        args += command[1:]
    args += container.get("args", [])
    return args
