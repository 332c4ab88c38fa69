"""An example CloudEvents receiver that re-indexes documents when a fine-tuned model is published.

The EmbeddingFinetune operator sends a CloudEvent (HTTP binary mode) to each ``spec.notify`` URL when a run
ends. This receiver turns ``dev.eft.finetune.RunSucceeded`` events that say ``reindexRequired: true`` into a
re-index Job (your image; it gets the model's S3 URI, the run id and the registry version as environment
variables). A model that leaves document embeddings valid (``reindexRequired: false``, a query adapter) needs
no Job: only the query side changes.

Delivery is at least once: the same event (same ``id``) may come again, after an operator restart or a lost
answer. The Job's name is derived from the event id, so a repeat finds the Job already there (409) and
changes nothing; that is the dedupe.

Run it in the cluster with a ServiceAccount that may create Jobs in its namespace (manifests.yaml beside this
file)::

    REINDEX_IMAGE=registry.example.com/search/reindex:1.4 python receiver.py --port 8080
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event

log = logging.getLogger("reindex-receiver")

SUCCEEDED = "dev.eft.finetune.RunSucceeded"

#: Creates a Job; returns False when a Job of that name exists already (a repeated event).
CreateJob = Callable[[dict[str, Any]], bool]


def job_for(event_id: str, event_type: str, data: dict[str, Any], namespace: str, image: str) -> dict[str, Any] | None:
    """The re-index Job an event asks for, or None (another event type, or document embeddings stay valid)."""
    if event_type != SUCCEEDED or not data.get("reindexRequired"):
        return None
    name = "reindex-" + hashlib.sha256(event_id.encode()).hexdigest()[:16]
    env = {
        "MODEL_URI": (data.get("artifacts") or {}).get("model", ""),
        "RUN_ID": data.get("runId", ""),
        "REGISTERED_VERSION": data.get("registeredVersion", ""),
        "EMBEDDING_DIMENSION": str((data.get("results") or {}).get("dimension", "")),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "reindex"}},
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "reindex", "image": image, "env": [{"name": k, "value": v} for k, v in env.items()]}
                    ],
                }
            },
        },
    }


def make_app(create_job: CreateJob, namespace: str, image: str) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        message = HTTPMessage(headers=dict(request.headers), body=await request.read())
        try:
            event = from_binary_event(message)
        except Exception as exc:  # not a CloudEvent in binary mode: a client error, never retried
            return web.Response(status=400, text=f"not a CloudEvent: {exc}")
        data = event.get_data()
        job = job_for(event.get_id(), event.get_type(), data if isinstance(data, dict) else {}, namespace, image)
        if job is None:
            log.info("event %s (%s): nothing to re-index", event.get_id(), event.get_type())
        elif create_job(job):
            log.info(
                "event %s: created Job %s for model %s", event.get_id(), job["metadata"]["name"], data.get("runId")
            )
        else:
            log.info("event %s: Job %s exists already (a repeated event)", event.get_id(), job["metadata"]["name"])
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/events", receive)
    return app


def kubernetes_job_creator() -> CreateJob:
    """Creates Jobs with the pod's ServiceAccount (in the cluster) or the kubeconfig."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    batch = client.BatchV1Api()

    def create(job: dict[str, Any]) -> bool:
        try:
            batch.create_namespaced_job(job["metadata"]["namespace"], job)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    return create


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    namespace = os.environ.get("POD_NAMESPACE", "default")
    web.run_app(make_app(kubernetes_job_creator(), namespace, os.environ["REINDEX_IMAGE"]), port=args.port)


if __name__ == "__main__":
    main()
