"""How the operator reaches the API server: one login, for kopf's watches and the operator's own requests.

A kubeconfig named by ``--kubeconfig`` or ``$KUBECONFIG``; else, in a cluster, the Pod's service account (its
projected token, re-read at every login, so a rotated token is picked up); else ``~/.kube/config``.
Both are read by kopf's own public login functions, so the operator needs no Kubernetes client library:
``kubernetes`` and ``kubernetes_asyncio`` each import every API model (about 30 MB apiece, and kopf imports
whichever is installed), and the operator image installs neither (operator/requirements.lock).

A kubeconfig whose user gets its token from a command (``exec``, as EKS, GKE and AKS configure) or an
``auth-provider`` has no credential kopf can read; then, where the ``kubernetes`` package is installed
(``pip install 'embedding-finetune-operator[cli]'``), ``kopf.login_via_client`` runs the command.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

log = logging.getLogger(__name__)


class LoginError(RuntimeError):
    """No way to reach the API server was found; the message says what was tried."""


def _has_credentials(info: kopf.ConnectionInfo) -> bool:
    return bool(info.token or info.certificate_path or info.certificate_data or (info.username and info.password))


def connection_info(
    kubeconfig: str | None = None, settings: kopf.OperatorSettings | None = None
) -> kopf.ConnectionInfo:
    """The API server and credentials: ``kubeconfig`` (or ``$KUBECONFIG``) when given, else the in-cluster
    service account, else ``~/.kube/config``. Raises :class:`LoginError` saying what was tried."""
    settings = settings or kopf.OperatorSettings()
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's kubeconfig reader takes its path from there
    info = None if os.environ.get("KUBECONFIG") else kopf.login_with_service_account(settings=settings)
    if info is None:
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise LoginError(
            "no in-cluster service account token (/var/run/secrets/kubernetes.io/serviceaccount/token) and no "
            "kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config): run the operator in a Pod, or point "
            "$KUBECONFIG at a kubeconfig"
        )
    if not info.insecure and not _has_credentials(info) and info.server.startswith("https"):
        return _login_via_client(info, settings)
    return info


def _login_via_client(info: kopf.ConnectionInfo, settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """A kubeconfig user whose token comes from a command: the ``kubernetes`` package runs it, if installed."""
    try:
        via_client = kopf.login_via_client(settings=settings, logger=log)  # None without the package
    except kopf.LoginError as exc:
        raise LoginError(f"the kubernetes package could not log in to {info.server}: {exc}") from None
    if via_client is None:
        raise LoginError(
            f"the kubeconfig's user for {info.server} has no token, client certificate or password that can be "
            "read from the file (an exec plugin or auth-provider?): install the kubernetes package "
            "(pip install 'embedding-finetune-operator[cli]') so that it can run the command, or use a "
            "kubeconfig with a token or client certificate"
        )
    return via_client


def login(*, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """kopf's login handler: the same credentials the operator's own client uses (:func:`connection_info`)."""
    try:
        return connection_info(settings=settings)
    except LoginError as exc:
        raise kopf.LoginError(str(exc)) from None
