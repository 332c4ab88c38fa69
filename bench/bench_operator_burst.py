"""Burst benchmark: N EmbeddingFinetune resources created at once against kmock, the real kopf loop.

Reports the time from each resource's create to its Job's appearance (p50, p99), the time until every
Job exists, duplicate Jobs (must be 0: one per resource), and the process's peak RSS (operator and
kmock share the process, so the kmock-only RSS is printed as the baseline). The baseline for time is
the same burst of creates with no operator (what the API emulator alone costs), printed as a ratio.

    python bench/bench_operator_burst.py [--count 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import kmock
import kopf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from eft_api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from eft_operator.config import Settings
from eft_operator.handlers import register
from eft_operator.reconciler import Reconciler

NS = "bench"
CONSISTENCY_TIMEOUT = 0.2


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def doc(i: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": f"r{i:04d}", "namespace": NS, "uid": str(uuid.uuid4()), "generation": 1},
        "spec": {
            "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
            "data": {"train": {"uri": "s3://bucket/pairs.jsonl", "format": "pairs"}},
            "output": {"uri": "s3://bucket/runs/"},
            "resources": {"gpus": 0},
        },
    }


async def burst(km: Any, count: int, offset: int) -> dict[str, float]:
    url = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{NS}/{PLURAL}"
    created: dict[str, float] = {}

    async def one(i: int) -> None:
        d = doc(offset + i)
        async with km.request("POST", url, json=d) as resp:
            assert resp.status < 300, resp.status
        created[d["metadata"]["name"]] = time.monotonic()

    await asyncio.gather(*(one(i) for i in range(count)))
    return created


def jobs(km: Any) -> list[dict[str, Any]]:
    return [o.raw for (r, _, _), o in list(km.objects.items()) if r.plural == "jobs" and not o.deleted]


async def main(count: int) -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kopf").setLevel(logging.ERROR)
    async with kmock.KubernetesEmulator() as km, kmock.Server(km):
        km.resources.load_bundled()
        km.resources[f"{API_GROUP}/{API_VERSION}/{PLURAL}"] = kmock.ResourceInfo(
            kind=KIND,
            namespaced=True,
            verbs={"get", "list", "watch", "create", "patch", "delete"},
            subresources={"status"},
        )
        # Baseline: the same burst with no operator (the API emulator alone).
        t0 = time.monotonic()
        await burst(km, count, 10_000)
        baseline = time.monotonic() - t0
        rss_base = current_rss_mb()

        stop = threading.Event()
        url = str(km.url)

        async def run_operator() -> None:
            registry = register(kopf.OperatorRegistry())
            kopf.on.login(id="kmock", registry=registry)(lambda **_: kopf.ConnectionInfo(server=url, insecure=True))

            def quiet(settings: kopf.OperatorSettings, **_: Any) -> None:
                # kmock assigns no resourceVersion, so kopf would wait its consistency timeout after
                # each own patch; a real API server answers with one at once.
                settings.persistence.consistency_timeout = CONSISTENCY_TIMEOUT
                settings.posting.enabled = False  # kmock keeps one Event per generateName anyway

            kopf.on.startup(id="bench", registry=registry)(quiet)
            task = asyncio.create_task(
                kopf.operator(
                    registry=registry,
                    memo=kopf.Memo(reconciler=Reconciler(Settings(log_level="ERROR")), metrics_port=None),
                    clusterwide=True,
                    standalone=True,
                )
            )
            while not stop.is_set():
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

        thread = threading.Thread(target=asyncio.run, args=(run_operator(),), daemon=True)
        thread.start()
        # Wait for the operator to settle the baseline resources (their Jobs), then burst.
        deadline = time.monotonic() + 120
        while len(jobs(km)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        before = {j["metadata"]["name"] for j in jobs(km)}
        t_start = time.monotonic()
        created = await burst(km, count, 0)
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while len(seen) < count and time.monotonic() < deadline:
            now = time.monotonic()
            for j in jobs(km):
                owner = j["metadata"]["labels"]["finetune.eft.dev/name"]
                if j["metadata"]["name"] not in before and owner in created and owner not in seen:
                    seen[owner] = now
            await asyncio.sleep(0.01)
        all_done = max(seen.values()) - t_start if seen else float("nan")
        stop.set()
        thread.join(10)
        per_owner: dict[str, int] = {}
        for j in jobs(km):
            owner = j["metadata"]["labels"]["finetune.eft.dev/name"]
            per_owner[owner] = per_owner.get(owner, 0) + 1
        duplicates = sum(n - 1 for n in per_owner.values() if n > 1)
        lat = sorted(seen[n] - created[n] for n in seen)
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        peak = rss_mb()
        print(f"resources: {count} (+{count} baseline resources reconciled first), Jobs seen: {len(seen)}/{count}")
        print(f"create -> Job: p50 {p50:.3f} s, p99 {p99:.3f} s (target p99 < 2 s)")
        print(
            f"time until every Job exists: {all_done:.2f} s; API-only burst of the same creates: {baseline:.2f} s "
            f"(ratio {all_done / baseline:.1f}x)"
        )
        print(f"duplicate Jobs: {duplicates}")
        print(
            f"peak RSS of the process (operator + kmock): {peak:.0f} MB; kmock alone before the operator: "
            f"{rss_base:.0f} MB (target < 250 MB)"
        )
        return 0 if len(seen) == count and duplicates == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    sys.exit(asyncio.run(main(parser.parse_args().count)))
