"""Leader election, retries and resync, release of finalizers: the pure parts, by tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eft_operator.children import APIError
from eft_operator.config import LeaseSettings, Settings, SettingsError
from eft_operator.leader import decide
from eft_operator.reconciler import InvalidSpecError
from eft_operator.release import dropped_namespaces, ours
from eft_operator.render import OUTCOME_FINALIZER
from eft_operator.resync import RETRY_CEILING, Backoffs, needs_pass, retry_delay
from eft_operator.status import RECONCILE_FAILED

NOW = "2026-12-05T01:00:00.000000Z"


@pytest.mark.parametrize(
    ("current", "unchanged_for", "take", "transitions"),
    [
        (None, 0.0, True, 0),  # no Lease yet: create it
        ({"holderIdentity": "me", "leaseTransitions": 3, "acquireTime": "t0"}, 0.0, True, 3),  # renew
        ({"holderIdentity": "", "leaseTransitions": 3}, 0.0, True, 4),  # released: take at once
        ({"holderIdentity": "other", "leaseDurationSeconds": 15}, 14.9, False, None),  # held
        ({"holderIdentity": "other", "leaseDurationSeconds": 15, "leaseTransitions": 1}, 15.0, True, 2),  # expired
        ({"holderIdentity": "other", "leaseDurationSeconds": 600}, 15.0, True, 1),  # our duration caps theirs
        ({"holderIdentity": "other", "leaseDurationSeconds": 1}, 1.0, True, 1),  # a short lease expires sooner
    ],
)
def test_decide(current: dict[str, Any] | None, unchanged_for: float, take: bool, transitions: int | None) -> None:
    d = decide(current, "me", unchanged_for=unchanged_for, duration=15.0, now=NOW)
    assert d.take is take
    if not take:
        assert d.holder == "other" and d.spec is None
        return
    assert d.spec is not None
    assert d.spec["holderIdentity"] == "me" and d.spec["renewTime"] == NOW
    assert d.spec["leaseDurationSeconds"] == 15 and d.spec["leaseTransitions"] == transitions
    renewing = bool(current) and (current or {}).get("holderIdentity") == "me"
    assert d.spec["acquireTime"] == ("t0" if renewing else NOW)


def test_lease_settings_defaults_are_controller_runtimes(tmp_path: Path) -> None:
    s = LeaseSettings.from_env({}, sa_namespace=tmp_path / "none")
    assert (s.enabled, s.name, s.namespace, s.duration, s.renew_deadline, s.retry_period) == (
        True, "eft-operator", "default", 15.0, 10.0, 2.0,
    )  # fmt: skip
    assert s.identity and s.identity != LeaseSettings.from_env({}).identity  # unique per process
    sa = tmp_path / "ns"
    sa.write_text("eft-system\n")
    assert LeaseSettings.from_env({}, sa_namespace=sa).namespace == "eft-system"
    assert LeaseSettings.from_env({"POD_NAMESPACE": "ops"}, sa_namespace=sa).namespace == "ops"
    env = {"EFT_LEASE_NAMESPACE": "x", "EFT_LEASE_DURATION": "30", "EFT_LEADER_IDENTITY": "pod-a"}
    s = LeaseSettings.from_env(env, sa_namespace=sa)
    assert (s.namespace, s.duration, s.identity) == ("x", 30.0, "pod-a")
    assert Settings.from_env({"EFT_LEADER_ELECTION": "false"}).lease.enabled is False


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"EFT_LEADER_ELECTION": "maybe"}, "EFT_LEADER_ELECTION"),
        ({"EFT_LEASE_NAME": "Not_A_Name"}, "EFT_LEASE_NAME"),
        ({"EFT_LEASE_DURATION": "abc"}, "EFT_LEASE_DURATION"),
        ({"EFT_RETRY_PERIOD": "0"}, "EFT_RETRY_PERIOD"),
        ({"EFT_RENEW_DEADLINE": "20"}, "EFT_RENEW_DEADLINE"),  # not below the lease duration
        ({"EFT_RETRY_PERIOD": "10"}, "EFT_RETRY_PERIOD"),  # not below the renew deadline
    ],
)
def test_lease_settings_refuse_what_cannot_work(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_retries_back_off_to_a_ceiling_and_never_end() -> None:
    assert [retry_delay(r) for r in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert retry_delay(10_000) == RETRY_CEILING
    first = [d for d, _ in zip(Backoffs(), range(50), strict=False)]
    assert len(first) == 50 and first[-1] == RETRY_CEILING
    assert next(iter(Backoffs())) == 1.0  # re-iterable: every kopf request starts from the beginning


def _eft(generation: int = 2, observed: int | None = 2, reason: str = "JobCreated", **meta: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Reconciling", "reason": reason}]}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"namespace": "ns", "name": "a", "generation": generation, **meta}, "status": status}


@pytest.mark.parametrize(
    ("body", "failed", "expected"),
    [
        (_eft(), set(), False),  # up to date: the watch takes care of it
        (_eft(observed=None), set(), True),  # never passed (created during an outage)
        (_eft(observed=1), set(), True),  # the spec changed and no pass finished
        (_eft(reason=RECONCILE_FAILED), set(), True),  # status says it waits for the API
        (_eft(), {("ns", "a")}, True),  # its last pass failed here
        (_eft(observed=None, deletionTimestamp="t"), {("ns", "a")}, False),  # going away
    ],
)
def test_needs_pass(body: dict[str, Any], failed: set[tuple[str, str]], expected: bool) -> None:
    assert needs_pass(body, failed) is expected


def _obj(uid: str, owner: dict[str, Any] | None, finalizer: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": uid, "namespace": "ns"}
    if owner:
        meta["ownerReferences"] = [{"controller": True, **owner}]
    if finalizer:
        meta["finalizers"] = ["other/keep", OUTCOME_FINALIZER]
    return {"metadata": meta}


EFT_OWNER = {"apiVersion": "finetune.eft.dev/v1alpha1", "kind": "EmbeddingFinetune", "uid": "e1"}


def test_ours_finds_the_operators_jobs_and_their_pods_by_owner() -> None:
    jobs = [
        _obj("j1", EFT_OWNER),
        _obj("j2", EFT_OWNER, finalizer=False),  # released already, but its pods are ours
        _obj("j3", {"apiVersion": "other.io/v1", "kind": "EmbeddingFinetune", "uid": "x"}),  # another group
        _obj("j4", {"apiVersion": "apps/v1", "kind": "CronJob", "uid": "c"}),
    ]
    pods = [
        _obj("p1", {"apiVersion": "batch/v1", "kind": "Job", "uid": "j1"}),
        _obj("p2", {"apiVersion": "batch/v1", "kind": "Job", "uid": "j2"}),
        _obj("p3", {"apiVersion": "batch/v1", "kind": "Job", "uid": "gone"}),  # its Job went first
        _obj("p4", {"apiVersion": "batch/v1", "kind": "Job", "uid": "j4"}),  # someone else's Job
        _obj("p5", {"apiVersion": "batch/v1", "kind": "Job", "uid": "j1"}, finalizer=False),
        _obj("p6", None),
    ]
    found = ours(jobs, pods)
    assert [(o["kind"], o["metadata"]["uid"]) for o in found] == [
        ("Job", "j1"), ("Pod", "p1"), ("Pod", "p2"), ("Pod", "p3"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, ("a",), ([], False)),  # first start: nothing recorded
        ("a,b", ("a",), (["b"], False)),
        ("a,b", ("a", "b", "c"), ([], False)),
        ("a,b", (), ([], False)),  # now cluster-wide: still watched
        ("*", ("a",), ([], True)),  # was cluster-wide: everything else is released
        ("*", (), ([], False)),
    ],
)
def test_dropped_namespaces(previous: str | None, current: tuple[str, ...], expected: tuple[list[str], bool]) -> None:
    assert dropped_namespaces(previous, current) == expected


def test_resource_handlers_retry_without_a_cap_or_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    from eft_operator.handlers import register

    options: dict[str, dict[str, Any]] = {}

    def recorder(kind: str) -> Any:
        def decorator_factory(*_: Any, **kw: Any) -> Any:
            options[kind] = kw
            return lambda fn: fn

        return decorator_factory

    for kind in ("create", "resume", "update"):
        monkeypatch.setattr(kopf.on, kind, recorder(kind))
    register(kopf.OperatorRegistry())
    assert set(options) == {"create", "resume", "update"}
    for kind, kw in options.items():
        assert kw["retries"] is None and kw["timeout"] is None, kind


class _Failing:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def reconcile(self, *_: Any, **__: Any) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "retry", "kind", "delay"),
    [
        (APIError(0, "ClientConnectorError", "connection refused"), 0, "temporary", 1.0),
        (APIError(503, "ServiceUnavailable", "down"), 3, "temporary", 8.0),
        (APIError(500, "InternalError", "etcd"), 40, "temporary", RETRY_CEILING),  # retry 40: still retried
        (RuntimeError("a bug"), 2, "temporary", 4.0),  # unexpected: retried too, with the same backoff
        (InvalidSpecError("spec.model: required"), 0, "permanent", None),
    ],
)
async def test_a_failed_pass_is_retried_with_backoff_to_the_ceiling(
    exc: Exception, retry: int, kind: str, delay: float | None
) -> None:
    import kopf

    from eft_operator.handlers import reconcile_resource

    memo = kopf.Memo(reconciler=_Failing(exc))
    with pytest.raises((kopf.TemporaryError, kopf.PermanentError)) as caught:
        await reconcile_resource("ns", "a", memo, None, retry=retry)
    if kind == "permanent":
        assert isinstance(caught.value, kopf.PermanentError)
    else:
        assert isinstance(caught.value, kopf.TemporaryError) and caught.value.delay == delay
        assert f"retrying in {delay:g} s" in str(caught.value)


class _PagedCluster:
    """A client whose list answers in pages (limit/continue, as the API server does) and a reconciler that
    records its passes in the same log, so the order of lists and passes shows."""

    def __init__(self, bodies: list[dict[str, Any]], page: int) -> None:
        self.bodies, self.page = bodies, page
        self.log: list[tuple[str, Any]] = []
        self.client, self.failed = self, {("ns", "r3")}
        self.settings = Settings(trainer_image="img:1", watch_namespaces=("ns",))

    async def request(self, method: str, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        q = dict(query)
        start = int(q.get("continue", "0"))
        assert int(q["limit"]) >= self.page
        self.log.append(("list", start))
        end = start + self.page
        return {"items": self.bodies[start:end], "metadata": {"continue": str(end) if end < len(self.bodies) else ""}}

    async def reconcile(self, namespace: str, name: str, **_: Any) -> None:
        self.log.append(("pass", name))


async def test_the_resync_pages_through_the_list_and_passes_each_page_before_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eft_operator import release
    from eft_operator.resync import resync_once

    def body(i: int, generation: int, observed: int) -> dict[str, Any]:
        meta = {"namespace": "ns", "name": f"r{i}", "generation": generation}
        return {"metadata": meta, "status": {"observedGeneration": observed}}

    monkeypatch.setattr(release, "PAGE", 2)
    # r1 and r4 have news the status does not show yet, r3 failed in this process; r0, r2 are up to date.
    bodies = [body(0, 1, 1), body(1, 2, 1), body(2, 1, 1), body(3, 1, 1), body(4, 3, 2)]
    cluster = _PagedCluster(bodies, 2)
    assert await resync_once(cluster) == 3  # type: ignore[arg-type]
    assert cluster.log == [("list", 0), ("pass", "r1"), ("list", 2), ("pass", "r3"), ("list", 4), ("pass", "r4")]
