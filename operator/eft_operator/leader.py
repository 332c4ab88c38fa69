"""Leader election by a ``coordination.k8s.io`` Lease, as controller-runtime (client-go) does it.

Several replicas run; the one that holds the Lease acts, the others stand by:

* **Acquire.** Every ``retry_period`` a replica reads the Lease. It takes it when the Lease is absent, has
  no holder (released), names this replica, or has not changed for ``duration`` seconds *as this replica
  observed it* (its own clock measures how long the record stood still, so clock skew between nodes does
  not matter). Taking it is an update with the Lease's ``resourceVersion`` as a precondition: of two
  standbys racing, exactly one wins (the other gets 409 and keeps waiting).
* **Renew.** The leader renews every ``retry_period``. When no renewal succeeded for ``renew_deadline``
  seconds (the API server unreachable, a network partition), or another replica holds the Lease, it has
  lost: the caller stops at once (the process exits non-zero and the kubelet restarts it as a standby).
  ``renew_deadline < duration``, so a leader stops acting before any standby may take over.
* **Release.** On a graceful shutdown the leader clears ``holderIdentity``, so a standby takes over at its
  next try instead of waiting out the lease duration.

:func:`decide` is the pure part (tested by tables); :class:`LeaderElector` does the I/O.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eft_operator import children
from eft_operator.config import LeaseSettings

logger = logging.getLogger("eft_operator.leader")
#: Exit status of a process that lost the Lease (the kubelet restarts it; it comes back as a standby).
EXIT_LEADERSHIP_LOST = 1


def lease_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def micro_time(now: datetime.datetime | None = None) -> str:
    """A Kubernetes ``MicroTime``."""
    return (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Decision:
    """What a replica does with the Lease it read: take (or keep) it with ``spec``, or wait for ``holder``."""

    take: bool
    holder: str
    spec: Mapping[str, Any] | None = None


def decide(
    current: Mapping[str, Any] | None,
    identity: str,
    *,
    unchanged_for: float,
    duration: float,
    now: str,
) -> Decision:
    """Whether ``identity`` may hold the Lease whose spec is ``current`` (None: no Lease yet).

    ``unchanged_for`` is how long this replica has seen the record unchanged. A holder's own
    ``leaseDurationSeconds`` counts when it is shorter (a released Lease says 1 s).
    """
    spec = dict(current or {})
    holder = str(spec.get("holderIdentity") or "")
    held_for = min(float(spec.get("leaseDurationSeconds") or duration), duration)
    if holder and holder != identity and unchanged_for < held_for:
        return Decision(False, holder)
    ours = holder == identity
    taken = {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(duration)),
        "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else now,
        "renewTime": now,
        "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours or current is None else 1),
    }
    return Decision(True, identity, taken)


class LeaderElector:
    """Acquires, renews and releases the Lease named by ``settings`` for ``settings.identity``."""

    def __init__(
        self, client: children.Client, settings: LeaseSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self.leading = False
        #: The holder this replica last saw ("" when none or not read yet).
        self.holder = ""
        self._seen: tuple[str, float] = ("", 0.0)  # (record fingerprint, when this replica first saw it)

    @property
    def identity(self) -> str:
        return self.settings.identity

    def state(self) -> dict[str, Any]:
        """What the probes report: this replica, whether it leads, who does."""
        s = self.settings
        return {
            "identity": self.identity,
            "leader": self.leading,
            "holder": self.holder,
            "lease": f"{s.namespace}/{s.name}",
        }

    def _unchanged_for(self, lease: Mapping[str, Any]) -> float:
        spec = lease.get("spec") or {}
        fingerprint = f"{spec.get('holderIdentity')}|{spec.get('renewTime')}|{spec.get('leaseTransitions')}"
        now = self.clock()
        if fingerprint != self._seen[0]:
            self._seen = (fingerprint, now)
        return now - self._seen[1]

    async def try_acquire_or_renew(self) -> bool:
        """One try; True when this replica holds the Lease afterwards. API errors propagate."""
        s = self.settings
        path = lease_path(s.namespace, s.name)
        try:
            lease: dict[str, Any] | None = await self.client.request("GET", path)
        except children.NotFound:
            lease = None
        unchanged = self._unchanged_for(lease) if lease is not None else 0.0
        current = (lease or {}).get("spec") if lease is not None else None
        decision = decide(current, self.identity, unchanged_for=unchanged, duration=s.duration, now=micro_time())
        self.holder = str((current or {}).get("holderIdentity") or "")
        if not decision.take:
            self.leading = False
            return False
        try:
            if lease is None:
                body = {"metadata": {"name": s.name, "namespace": s.namespace}, "spec": decision.spec}
                await self.client.request("POST", lease_path(s.namespace), body)
            else:
                body = {"metadata": {**lease["metadata"]}, "spec": decision.spec}
                await self.client.request("PUT", path, body)  # resourceVersion: one winner
        except children.Conflict:  # another replica wrote first: read again at the next try
            return False
        self.holder = self.identity
        if not self.leading:
            logger.info(f"Became the leader: {self.identity} holds Lease {s.namespace}/{s.name}.")
        self.leading = True
        return True

    async def acquire(self) -> None:
        """Wait (as a standby) until this replica holds the Lease."""
        while True:
            try:
                if await asyncio.wait_for(self.try_acquire_or_renew(), self.settings.renew_deadline):
                    return
            except (children.APIError, TimeoutError) as exc:
                logger.warning(f"Could not read Lease {self.settings.namespace}/{self.settings.name}: {exc}")
            await asyncio.sleep(self.settings.retry_period * (1 + 0.2 * random.random()))

    async def hold(self) -> str:
        """Renew until leadership is lost; return why (the caller must stop acting at once)."""
        s = self.settings
        renewed = self.clock()
        while True:
            await asyncio.sleep(s.retry_period)
            left = s.renew_deadline - (self.clock() - renewed)
            try:
                if await asyncio.wait_for(self.try_acquire_or_renew(), max(left, 0.1)):
                    renewed = self.clock()
                    continue
                if self.holder != self.identity:
                    return f"Lease {s.namespace}/{s.name} is now held by {self.holder}"
            except (children.APIError, TimeoutError) as exc:
                logger.warning(f"Could not renew Lease {s.namespace}/{s.name}: {exc or type(exc).__name__}")
            if self.clock() - renewed >= s.renew_deadline:
                self.leading = False
                return f"could not renew Lease {s.namespace}/{s.name} within {s.renew_deadline:g} s"

    async def release(self) -> None:
        """Give the Lease up (graceful shutdown), so that a standby takes over at its next try."""
        if not self.leading:
            return
        self.leading = False
        s = self.settings
        path = lease_path(s.namespace, s.name)
        try:
            lease = await self.client.request("GET", path)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time())
            await self.client.request("PUT", path, {"metadata": lease["metadata"], "spec": spec})
            logger.info(f"Released Lease {s.namespace}/{s.name}.")
        except children.APIError as exc:
            logger.warning(f"Could not release Lease {s.namespace}/{s.name} ({exc}); a standby takes over later.")
