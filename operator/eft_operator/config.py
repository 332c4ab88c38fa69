"""The operator's settings: one typed, documented :class:`Settings`, read from environment variables.

The Helm chart sets these variables; every one has a default that works for a single-namespace trial.

========================  ========================================  ==========================================
Variable                  Meaning                                   Default
========================  ========================================  ==========================================
EFT_WATCH_NAMESPACES      comma-separated namespaces to watch       empty: the whole cluster
EFT_TRAINER_IMAGE         trainer image for resources without       ghcr.io/eft-dev/eft-trainer:0.1.0
                          ``spec.image``
EFT_ALLOWED_IMAGES        comma-separated trainer image prefixes    the repository of EFT_TRAINER_IMAGE
                          a resource's ``spec.image`` may use: a    (ghcr.io/eft-dev/eft-trainer)
                          prefix ending in ``/`` allows every
                          repository under it, any other names one
                          repository (any tag or digest); ``*``
                          allows every image
EFT_TRAINER_SERVICE_      service account of trainer pods           empty: the namespace's default account
ACCOUNT                                                             (its token is never mounted)
EFT_DEFAULT_QUEUE_NAME    Kueue LocalQueue for resources that set   empty: no Kueue
                          no ``spec.scheduling.queueName``
EFT_METRICS_PORT          port of ``/metrics`` (Prometheus)         8080
EFT_HEALTH_PORT           port of ``/healthz`` (liveness probe)     8081
EFT_TRAINER_METRICS_PORT  the trainer's Prometheus port             9090
EFT_PROGRESS_INTERVAL     seconds between reads of a running        10
                          trainer's metrics port for
                          ``status.trainerStatus``; 0: none
EFT_POLICY                the platform policy: the chart's          empty: the closed defaults
                          ``policy`` values as JSON (see
                          :mod:`eft_api.policy`)
EFT_PEERING_NAME          kopf peering object (several replicas)    empty: standalone
EFT_LOG_LEVEL             DEBUG, INFO, WARNING or ERROR             INFO
EFT_LEADER_ELECTION       ``true``: replicas elect one leader by a  true
                          ``coordination.k8s.io`` Lease; ``false``:
                          this process acts alone (one replica only)
EFT_LEASE_NAME            the Lease's name                          eft-operator
EFT_LEASE_NAMESPACE       the Lease's namespace                     $POD_NAMESPACE, else the service
                                                                    account's namespace, else default
EFT_LEASE_DURATION        seconds a standby waits after the last    15
                          renewal it saw before it takes over
EFT_RENEW_DEADLINE        seconds the leader keeps trying to renew  10
                          before it stops (exits 1)
EFT_RETRY_PERIOD          seconds between tries to acquire or renew 2
EFT_LEADER_IDENTITY       this replica's name in the Lease          $HOSTNAME plus a random suffix
========================  ========================================  ==========================================

EFT_PEERING_NAME is read for compatibility but kopf always runs standalone: the Lease, not kopf peering,
decides which replica acts (kopf peering pauses every replica when two have equal priority).
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eft_api import contract, policy
from eft_api.spec import DNS_LABEL

DEFAULT_TRAINER_IMAGE = "ghcr.io/eft-dev/eft-trainer:0.1.0"
_DNS_LABEL = re.compile(DNS_LABEL)
#: The operator's default ``/metrics`` and ``/healthz`` ports.
METRICS_PORT = 8080
HEALTH_PORT = 8081
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use; the message names the variable."""


#: Where a pod finds its own namespace (the service account's mount).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class LeaseSettings:
    """Leader election by a ``coordination.k8s.io`` Lease, with controller-runtime's timings and defaults."""

    enabled: bool = True
    name: str = "eft-operator"
    namespace: str = "default"
    #: Seconds a standby waits, after the last change of the Lease it saw, before it takes the Lease over.
    duration: float = 15.0
    #: Seconds the leader keeps trying to renew before it gives up leading (and exits).
    renew_deadline: float = 10.0
    #: Seconds between tries to acquire or renew.
    retry_period: float = 2.0
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")

    @classmethod
    def from_env(cls, env: Mapping[str, str], sa_namespace: Path = SERVICE_ACCOUNT_NAMESPACE) -> LeaseSettings:
        """Read the ``EFT_LEADER_ELECTION`` / ``EFT_LEASE_*`` variables; raise :class:`SettingsError` naming one."""
        raw = env.get("EFT_LEADER_ELECTION", "true").strip().lower() or "true"
        if raw not in _TRUE + _FALSE:
            raise SettingsError(f"EFT_LEADER_ELECTION={raw!r}: must be true or false")
        name = env.get("EFT_LEASE_NAME", "").strip() or "eft-operator"
        namespace = env.get("EFT_LEASE_NAMESPACE", "").strip() or env.get("POD_NAMESPACE", "").strip()
        if not namespace and sa_namespace.is_file():
            namespace = sa_namespace.read_text().strip()
        namespace = namespace or "default"
        for key, value in (("EFT_LEASE_NAME", name), ("EFT_LEASE_NAMESPACE", namespace)):
            if not _DNS_LABEL.match(value):
                raise SettingsError(f"{key}={value!r}: must be a DNS label (lowercase letters, digits, '-')")
        duration = _seconds(env, "EFT_LEASE_DURATION", 15.0)
        deadline = _seconds(env, "EFT_RENEW_DEADLINE", 10.0)
        period = _seconds(env, "EFT_RETRY_PERIOD", 2.0)
        if not duration > deadline > period:
            raise SettingsError(
                f"EFT_LEASE_DURATION ({duration:g}) > EFT_RENEW_DEADLINE ({deadline:g}) > EFT_RETRY_PERIOD "
                f"({period:g}) must hold, so that a leader stops before a standby may take over"
            )
        identity = env.get("EFT_LEADER_IDENTITY", "").strip()
        return cls(
            enabled=raw in _TRUE,
            name=name,
            namespace=namespace,
            duration=duration,
            renew_deadline=deadline,
            retry_period=period,
            **({"identity": identity} if identity else {}),
        )


def _seconds(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise SettingsError(f"{key}={raw!r}: must be seconds between 0 and 3600")
    return value


@dataclass(frozen=True)
class Settings:
    """What the operator is configured with (see the module docstring for the variables)."""

    watch_namespaces: tuple[str, ...] = ()
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    trainer_service_account: str | None = None
    default_queue_name: str | None = None
    metrics_port: int = METRICS_PORT
    health_port: int = HEALTH_PORT
    trainer_metrics_port: int = contract.TRAINER_METRICS_PORT
    #: Seconds between reads of a running trainer's gauges (``status.trainerStatus``); 0: never read.
    progress_interval: float = 10.0
    peering_name: str | None = None
    log_level: str = "INFO"
    #: Image prefixes ``spec.image`` may use (see :func:`image_allowed`); empty: the default image's repository.
    allowed_images: tuple[str, ...] = ()
    #: Leader election among replicas (``EFT_LEADER_ELECTION``, ``EFT_LEASE_*``).
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    #: The platform policy (EFT_POLICY); resources are held to ``platform_policy.for_namespace(ns)``.
    platform_policy: policy.PlatformPolicy = field(default_factory=policy.PlatformPolicy)

    @property
    def image_prefixes(self) -> tuple[str, ...]:
        return self.allowed_images or (image_repository(self.trainer_image),)

    def image_allowed(self, image: str) -> bool:
        """Whether a resource may run ``image`` (the operator's own default image always may)."""
        return image == self.trainer_image or image_allowed(image, self.image_prefixes)

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces

    @property
    def standalone(self) -> bool:
        return not self.peering_name

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: ``os.environ``); raise :class:`SettingsError` naming the variable."""
        env = os.environ if env is None else env

        def text(key: str) -> str | None:
            value = env.get(key, "").strip()
            return value or None

        def port(key: str, default: int) -> int:
            raw = text(key)
            if raw is None:
                return default
            if not raw.isdigit() or not 1 <= int(raw) <= 65535:
                raise SettingsError(f"{key}={raw!r}: must be a port number between 1 and 65535")
            return int(raw)

        namespaces = tuple(ns.strip() for ns in (text("EFT_WATCH_NAMESPACES") or "").split(",") if ns.strip())
        for ns in namespaces:
            if not _DNS_LABEL.match(ns):
                raise SettingsError(f"EFT_WATCH_NAMESPACES: {ns!r} is not a namespace name")
        queue = text("EFT_DEFAULT_QUEUE_NAME")
        if queue is not None and not _DNS_LABEL.match(queue):
            raise SettingsError(f"EFT_DEFAULT_QUEUE_NAME={queue!r}: must be a LocalQueue name (a DNS label)")
        level = (text("EFT_LOG_LEVEL") or "INFO").upper()
        if level not in _LOG_LEVELS:
            raise SettingsError(f"EFT_LOG_LEVEL={level!r}: must be one of {', '.join(_LOG_LEVELS)}")
        interval_raw = text("EFT_PROGRESS_INTERVAL") or "10"
        try:
            interval = float(interval_raw)
        except ValueError:
            interval = -1.0
        if not 0 <= interval <= 3600:
            raise SettingsError(f"EFT_PROGRESS_INTERVAL={interval_raw!r}: must be seconds between 0 and 3600")
        image = text("EFT_TRAINER_IMAGE") or DEFAULT_TRAINER_IMAGE
        if any(c.isspace() for c in image):
            raise SettingsError(f"EFT_TRAINER_IMAGE={image!r}: must be an image reference without spaces")
        allowed = tuple(p.strip() for p in (text("EFT_ALLOWED_IMAGES") or "").split(",") if p.strip())
        for prefix in allowed:
            if any(c.isspace() for c in prefix):
                raise SettingsError(f"EFT_ALLOWED_IMAGES: {prefix!r} is not an image prefix")
        return cls(
            platform_policy=_platform_policy(text("EFT_POLICY")),
            allowed_images=allowed,
            watch_namespaces=namespaces,
            trainer_image=image,
            trainer_service_account=text("EFT_TRAINER_SERVICE_ACCOUNT"),
            default_queue_name=queue,
            metrics_port=port("EFT_METRICS_PORT", METRICS_PORT),
            health_port=port("EFT_HEALTH_PORT", HEALTH_PORT),
            trainer_metrics_port=port("EFT_TRAINER_METRICS_PORT", contract.TRAINER_METRICS_PORT),
            progress_interval=interval,
            peering_name=text("EFT_PEERING_NAME"),
            log_level=level,
            lease=LeaseSettings.from_env(env),
        )


def _platform_policy(raw: str | None) -> policy.PlatformPolicy:
    try:
        return policy.load(json.loads(raw) if raw else None)
    except (ValueError, policy.PolicyError) as exc:
        raise SettingsError(f"EFT_POLICY: {exc}") from None


def image_repository(image: str) -> str:
    """``registry/path/name`` of an image reference, without its tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def image_allowed(image: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``image`` matches one of ``prefixes``.

    ``*`` allows every image; a prefix ending in ``/`` allows every repository under that registry or path;
    any other prefix names one repository, with any tag or digest (``ghcr.io/a/b`` allows ``ghcr.io/a/b:1``
    and ``ghcr.io/a/b@sha256:...`` but not ``ghcr.io/a/b-evil``).
    """
    for prefix in prefixes:
        if prefix == "*":
            return True
        if prefix.endswith("/"):
            if image.startswith(prefix):
                return True
        elif image == prefix or image.startswith((prefix + ":", prefix + "@")):
            return True
    return False
