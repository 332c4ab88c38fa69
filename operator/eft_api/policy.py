"""The platform policy: what a tenant's EmbeddingFinetune may reach, owned by the platform team.

The policy is the chart's ``policy`` values (see docs/security.md), closed by default. Three places hold a
resource to it with the same verdict, field and rule: the ValidatingAdmissionPolicy the chart renders (at
``kubectl apply``), the operator (``Stalled=True``, reason ``PolicyViolation``, no Job) and
``eft validate --policy VALUES.yaml -n NAMESPACE`` (offline). A test runs one table of cases through all three.

The checks are a table (:data:`RULES`): each row names a policy key, the spec fields it governs and how one
value is judged. A new field that must obey a key (a new endpoint, a new ``s3://`` URI) is one more row.

Endpoint entries (``llmEndpoints``, ``storageEndpoints``, ``registryEndpoints``, ``notifyEndpoints``) are URL
prefixes. A URL matches an entry when scheme, host and port are equal (host compared without case and
without one trailing dot; the port defaults to 443 for https and 80 for http) and the entry's path is a
whole-segment prefix of the URL's path: ``https://api.example.com/v1`` allows ``.../v1`` and ``.../v1/chat``,
never ``.../v10`` nor ``https://api.example.com.evil.net``. An IP literal matches only the same literal. A URL
with user-info, a backslash, a query, a fragment or a ``.``/``..`` path segment is refused whatever the policy.

Bucket patterns: ``*`` allows every bucket; ``team-a-*`` (a ``*`` only at the end) every bucket whose name
starts with ``team-a-``; anything else names one bucket exactly. An ``s3://`` URI is judged by its bucket (the
text between ``s3://`` and the first ``/``), whatever its key says (``s3://other/../`` names bucket ``other``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.alias_generators import to_camel

from eft_api.spec import DNS_SUBDOMAIN, LABEL_KEY

#: An endpoint entry of the policy: a lower-case http(s) URL prefix without user-info, query or fragment.
ENDPOINT_ENTRY = r"^https?://([a-z0-9]([-a-z0-9.]*[a-z0-9])?|\[[0-9a-f:.]+\])(:[0-9]{1,5})?(/[^\s?#@\\'\"]*)?$"
BUCKET_ENTRY = r"^(\*|[a-z0-9][a-z0-9.-]{0,62}\*?)$"
QUANTITY_UNITS: dict[str, int | Decimal] = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$")

Endpoint = Annotated[str, StringConstraints(pattern=ENDPOINT_ENTRY, max_length=512)]
Bucket = Annotated[str, StringConstraints(pattern=BUCKET_ENTRY, max_length=64)]
PriorityClass = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, max_length=253)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY, max_length=317)]


class PolicyError(ValueError):
    """The policy values themselves are unusable; the message names the key."""


class Policy(BaseModel):
    """The policy of one namespace (the defaults with that namespace's overrides applied)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    allow_trust_remote_code: bool = False
    llm_endpoints: tuple[Endpoint, ...] = ()
    storage_endpoints: tuple[Endpoint, ...] = ()
    registry_endpoints: tuple[Endpoint, ...] = ()
    notify_endpoints: tuple[Endpoint, ...] = ()
    buckets: tuple[Bucket, ...] = ("*",)
    priority_classes: tuple[PriorityClass, ...] = ()
    toleration_keys: tuple[LabelKey, ...] = ()
    node_selector_keys: tuple[LabelKey, ...] = ()
    max_work_dir_size: str = "200Gi"

    @field_validator("max_work_dir_size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        quantity(value)
        return value


class PlatformPolicy(Policy):
    """The chart's ``policy`` values: defaults plus ``namespaces``, per-namespace overrides of any key."""

    namespaces: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("namespaces")
    @classmethod
    def _overrides(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for ns, override in value.items():
            Policy.model_validate(override)  # each override alone must be a valid (partial) policy
            if "namespaces" in override:
                raise ValueError(f"namespaces.{ns}: overrides cannot nest namespaces")
        return value

    def for_namespace(self, namespace: str) -> Policy:
        """The defaults with ``namespaces[namespace]`` applied key by key (a key set there replaces the default)."""
        base = self.model_dump(by_alias=True, exclude={"namespaces"})
        return Policy.model_validate({**base, **self.namespaces.get(namespace, {})})


def load(values: Mapping[str, Any] | None) -> PlatformPolicy:
    """The policy from the chart's ``policy`` values (None or {}: the closed defaults)."""
    try:
        return PlatformPolicy.model_validate(dict(values or {}))
    except ValueError as exc:
        raise PolicyError(f"policy values are invalid: {exc}") from None


def quantity(text: str | int) -> Decimal:
    """The value of a Kubernetes quantity (``200Gi``, ``1.5T``, ``500m``, ``1e9``); ValueError otherwise."""
    m = _QUANTITY.match(str(text))
    if m is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as 200Gi")
    number, suffix = Decimal(m.group(1)), m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number.scaleb(int(suffix[1:]))
    return number * QUANTITY_UNITS[suffix]


# --- URLs and buckets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class URL:
    """The parts of an http(s) URL that an endpoint entry is compared by."""

    scheme: str
    host: str
    port: str
    path: str
    #: Why it is refused whatever the policy says ("" when it is not).
    bad: str = ""


def parse_url(url: str) -> URL:
    """Split ``url`` as the admission policy's CEL does (same steps, same results)."""
    sep = url.find("://")
    scheme = url[:sep].lower() if sep >= 0 else ""
    rest = url[sep + 3 :] if sep >= 0 else url
    slash = rest.find("/")
    auth, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if auth.startswith("["):
        host, port = auth[: auth.find("]") + 1], auth[auth.find("]") + 1 :]
    elif ":" in auth:
        host, port = auth[: auth.find(":")], auth[auth.find(":") :]
    else:
        host, port = auth, ""
    host = host.lower()
    host = host[:-1] if host.endswith(".") else host
    port = ("443" if scheme == "https" else "80") if port == "" else port[1:]
    return URL(scheme, host, port, path[:-1] if path.endswith("/") else path, _bad_url(url, path))


def _bad_url(url: str, path: str) -> str:
    if "@" in url:
        return "must not contain user-info (user:password@) or any '@': credentials go in a Secret"
    if "\\" in url or "?" in url or "#" in url:
        return "must not contain a backslash, a query (?) or a fragment (#)"
    if "/../" in path + "/" or "/./" in path + "/" or "%2e" in path.lower():
        return "must not contain . or .. path segments"
    return ""


def url_allowed(url: str, entries: tuple[str, ...]) -> bool:
    """Whether ``url`` falls under one of the endpoint ``entries`` (see the module docstring)."""
    u = parse_url(url)
    for entry in entries:
        e = parse_url(entry)
        if (u.scheme, u.host, u.port) == (e.scheme, e.host, e.port) and (
            u.path == e.path or u.path.startswith(e.path + "/")
        ):
            return True
    return False


def bucket_of(uri: str) -> str:
    """The bucket an ``s3://`` URI names: the text between ``s3://`` and the first ``/``."""
    return uri[5:].split("/", 1)[0]


def bucket_allowed(bucket: str, patterns: tuple[str, ...]) -> bool:
    """``*`` allows every bucket, ``p*`` those starting with ``p``, anything else exactly that bucket."""
    return any(p == "*" or (bucket.startswith(p[:-1]) if p.endswith("*") else bucket == p) for p in patterns)


# --- the rules ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One refusal: the field (``spec.storage.endpoint``), the rule (``policy.storageEndpoints``) and why."""

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: refused by {self.rule}: {self.message}"


#: Judges one value of a governed field: None when allowed, else what is wrong (the field is prepended).
Check = Callable[[Any, Policy], str | None]

ASK = "ask your platform team to allow it in the policy values of the chart"


def _endpoint_check(key: str) -> Check:
    def check(value: Any, policy: Policy) -> str | None:
        url = str(value)
        bad = parse_url(url).bad
        if bad:
            return f"{url} {bad}"
        entries: tuple[str, ...] = getattr(policy, _snake(key))
        if url_allowed(url, entries):
            return None
        allowed = ", ".join(entries) if entries else "none"
        return f"{url} is not an endpoint the platform allows (policy.{key}: {allowed}): {ASK}"

    return check


def _bucket(value: Any, policy: Policy) -> str | None:
    uri = str(value)
    if not uri.startswith("s3://") or bucket_allowed(bucket_of(uri), policy.buckets):
        return None
    return (
        f"bucket {bucket_of(uri)} is not among the buckets the platform allows "
        f"(policy.buckets: {', '.join(policy.buckets) or 'none'}): {ASK}"
    )


def _trust_remote_code(value: Any, policy: Policy) -> str | None:
    if value is not True or policy.allow_trust_remote_code:
        return None
    return f"running code from the model repository is not allowed (policy.allowTrustRemoteCode is false): {ASK}"


def _priority_class(value: Any, policy: Policy) -> str | None:
    if value in policy.priority_classes:
        return None
    allowed = ", ".join(policy.priority_classes) or "none"
    return f"priority class {value} is not allowed (policy.priorityClasses: {allowed}): {ASK}"


def _toleration(value: Any, policy: Policy) -> str | None:
    key = (value or {}).get("key") or ""
    if key == "":
        return "a toleration without a key tolerates every taint and is never allowed: name the key of the taint"
    if key in policy.toleration_keys:
        return None
    allowed = ", ".join(policy.toleration_keys) or "none"
    return f"tolerating taint key {key} is not allowed (policy.tolerationKeys: {allowed}): {ASK}"


def _node_selector(value: Any, policy: Policy) -> str | None:
    if not policy.node_selector_keys:
        return None
    keys = sorted(k for k in (value or {}) if k not in policy.node_selector_keys)
    if not keys:
        return None
    allowed = ", ".join(policy.node_selector_keys)
    return f"node label key(s) {', '.join(keys)} not allowed (policy.nodeSelectorKeys: {allowed}): {ASK}"


def _work_dir_size(value: Any, policy: Policy) -> str | None:
    try:
        if quantity(value) <= quantity(policy.max_work_dir_size):
            return None
    except ValueError:
        return None  # the schema reports a malformed quantity
    return f"{value} is more scratch disk than the platform allows (policy.maxWorkDirSize: {policy.max_work_dir_size})"


@dataclass(frozen=True)
class Rule:
    """One row: the policy key, the spec fields it governs (``[*]`` for each item of a list) and the check."""

    key: str
    fields: tuple[str, ...]
    check: Check
    #: What the API server fills in when the field is absent (judged as if it were set); None: nothing.
    default: Any = None


#: Every ``s3://`` URI a spec may hold (a test checks this against the CRD: a new URI field needs a row here).
S3_FIELDS = (
    "spec.model.base",
    "spec.data.train.uri",
    "spec.data.eval.uri",
    "spec.data.generate.generator.seq2seq.model",
    "spec.training.teacher.base",
    "spec.training.crossEncoder.model",
    "spec.training.pretrain.data.uri",
    "spec.evaluation.guards[*].uri",
    "spec.evaluation.baselines[*].model.base",
    "spec.output.uri",
)

#: The policy, row by row, in the order the admission policy checks them (the first refusal is reported).
RULES: tuple[Rule, ...] = (
    Rule("allowTrustRemoteCode", ("spec.model.trustRemoteCode", "spec.training.teacher.trustRemoteCode",
                                  "spec.evaluation.baselines[*].model.trustRemoteCode"), _trust_remote_code),
    # An embeddings endpoint of a baseline is held to the same allowlist as the llm generator's endpoint.
    Rule("llmEndpoints", ("spec.data.generate.generator.llm.endpoint", "spec.evaluation.baselines[*].endpoint.url"),
         _endpoint_check("llmEndpoints")),
    Rule("storageEndpoints", ("spec.storage.endpoint",), _endpoint_check("storageEndpoints")),
    Rule("registryEndpoints", ("spec.output.registry.mlflow.trackingUri",), _endpoint_check("registryEndpoints")),
    Rule("notifyEndpoints", ("spec.notify[*].url",), _endpoint_check("notifyEndpoints")),
    Rule("buckets", S3_FIELDS, _bucket),
    Rule("priorityClasses", ("spec.scheduling.priorityClassName",), _priority_class),
    Rule("tolerationKeys", ("spec.scheduling.tolerations[*]",), _toleration),
    Rule("nodeSelectorKeys", ("spec.scheduling.nodeSelector",), _node_selector),
    Rule("maxWorkDirSize", ("spec.resources.workDirSize",), _work_dir_size, default="20Gi"),
)  # fmt: skip


def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def values_at(resource: Mapping[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    """The (concrete path, value) pairs ``path`` names in ``resource`` (``[*]`` expands lists); absent: none."""
    found: list[tuple[str, Any]] = [("", resource)]
    for part in path.split("."):
        name, each = (part[:-3], True) if part.endswith("[*]") else (part, False)
        step: list[tuple[str, Any]] = []
        for where, node in found:
            if not isinstance(node, Mapping) or node.get(name) is None:
                continue
            here = f"{where}.{name}" if where else name
            if each:
                items = node[name] if isinstance(node[name], list) else []
                step += [(f"{here}[{i}]", item) for i, item in enumerate(items)]
            else:
                step.append((here, node[name]))
        found = step
    return iter(found)


def violations(resource: Mapping[str, Any], policy: Policy) -> list[Violation]:
    """Every refusal of ``resource`` (an EmbeddingFinetune as a dict) under ``policy``, in :data:`RULES` order."""
    found: list[Violation] = []
    for rule in RULES:
        for path in rule.fields:
            found_at = list(values_at(resource, path))
            if not found_at and rule.default is not None:
                found_at = [(path, rule.default)]
            for where, value in found_at:
                problem = rule.check(value, policy)
                if problem is not None:
                    found.append(Violation(where, f"policy.{rule.key}", f"{problem}"))
    return found


def first_violation(resource: Mapping[str, Any], policy: Policy) -> Violation | None:
    """The refusal the admission policy reports (the first of :func:`violations`), or None."""
    found = violations(resource, policy)
    return found[0] if found else None
