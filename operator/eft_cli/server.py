"""Ask a real API server for its verdict on an EmbeddingFinetune: a server-side dry run (``eft validate --server``).

The dry run goes through everything ``kubectl apply`` would meet (the CRD's structural schema and CEL
rules, defaulting, strict field validation, admission webhooks and policies) and persists nothing. A
refusal comes back as :class:`~eft_api.spec.SpecProblem` items with the server's field paths, so the
output reads like the offline check's.
"""

from __future__ import annotations

import json
import re
from typing import Any

from eft_api.spec import API_GROUP, API_VERSION, PLURAL, SpecProblem

FIELD_MANAGER = "eft-validate"
_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')
_DUPLICATE_FIELD = re.compile(r'duplicate field "([^"]+)"')


class ClientMissing(RuntimeError):
    """The ``kubernetes`` package, which the commands that talk to a cluster use, is not installed."""


def load_client(kubeconfig: str | None = None, context: str | None = None) -> tuple[Any, str]:
    """An API client from a kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``) and the context's namespace."""
    try:
        from kubernetes import config
    except ImportError:
        raise ClientMissing(
            "talking to a cluster needs the kubernetes package, which is not installed here (the operator image "
            "leaves it out): pip install 'embedding-finetune-operator[cli]'"
        ) from None

    contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
    client = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    return client, namespace


def problems_of(status_body: str | bytes | None, fallback: str) -> list[SpecProblem]:
    """The problems in a Kubernetes ``Status`` (the body of a refused request), each with its field path."""
    try:
        status = json.loads(status_body or b"")
    except ValueError:
        return [SpecProblem(path="(server)", message=fallback)]
    message = str(status.get("message") or fallback)
    causes = (status.get("details") or {}).get("causes") or []
    # Causes without a field ("<nil>": "some validation rules were not checked...") only echo the others.
    named = [c for c in causes if c.get("field") not in (None, "", "<nil>")]
    problems = [
        SpecProblem(path=_field(c.get("field")), message=str(c.get("message") or c.get("reason")))
        for c in (named or causes)
    ]
    if not problems:
        for pattern, what in ((_UNKNOWN_FIELD, "unknown field"), (_DUPLICATE_FIELD, "duplicate field")):
            problems += [SpecProblem(path=p.lstrip("."), message=what) for p in pattern.findall(message)]
    return problems or [SpecProblem(path="(document)", message=message)]


def _field(field: Any) -> str:
    """A cause's field path; rules on the whole object (metadata.name's length) come back as ``<nil>``."""
    return "(document)" if field in (None, "", "<nil>") else str(field)


def server_problems(api_client: Any, doc: dict[str, Any], namespace: str) -> list[SpecProblem]:
    """The API server's verdict on ``doc``: [] if it would accept it, else its problems. Persists nothing.

    A dry-run create with strict field validation; where an object of that name exists already, a
    dry-run server-side apply instead (what ``kubectl apply --server-side`` would do).
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client)
    ns = (doc.get("metadata") or {}).get("namespace") or namespace
    common: dict[str, Any] = {"dry_run": "All", "field_validation": "Strict"}
    try:
        api.create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, doc, **common)
        return []
    except ApiException as exc:
        if exc.status != 409 or (json.loads(exc.body or b"{}").get("reason") != "AlreadyExists"):
            return problems_of(exc.body, f"{exc.status} {exc.reason}")
    name = doc["metadata"]["name"]
    path = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{ns}/{PLURAL}/{name}"
    query = [("dryRun", "All"), ("fieldValidation", "Strict"), ("fieldManager", FIELD_MANAGER), ("force", "true")]
    headers = {"Accept": "application/json", "Content-Type": "application/apply-patch+yaml"}
    # A server-side apply through the client's public request API (param_serialize, call_api), with the
    # apply content type that the typed patch method only takes as a private keyword.
    request = api_client.param_serialize(
        "PATCH", path, query_params=query, header_params=headers, body=doc, auth_settings=["BearerToken"]
    )
    method, url, sent_headers, body, post_params = request
    response = api_client.call_api(method, url, header_params=sent_headers, body=body, post_params=post_params)
    data = response.read()
    if 200 <= response.status < 300:
        return []
    return problems_of(data, f"{response.status} {response.reason}")
