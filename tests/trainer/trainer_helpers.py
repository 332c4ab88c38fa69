"""Helpers of the trainer tests: a real-text corpus (stdlib docstrings), run configs, S3 helpers."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

from eft_api.contract import RunConfig, TrainerSettings, build_run_config
from eft_api.spec import parse_spec
from eft_cli.run import environ
from eft_devtools.local_s3 import LocalS3

MODULES = [
    "json",
    "os",
    "re",
    "collections",
    "itertools",
    "functools",
    "pathlib",
    "string",
    "textwrap",
    "shutil",
    "subprocess",
    "random",
    "statistics",
    "math",
    "datetime",
    "heapq",
    "bisect",
    "csv",
    "argparse",
    "logging",
    "inspect",
    "dataclasses",
    "enum",
    "tempfile",
    "glob",
    "fnmatch",
    "zipfile",
    "tarfile",
    "gzip",
    "base64",
    "hashlib",
    "secrets",
    "uuid",
    "copy",
    "pprint",
    "operator",
    "contextlib",
    "io",
    "struct",
    "socket",
    "urllib.parse",
    "difflib",
    "decimal",
    "fractions",
    "calendar",
    "time",
    "threading",
    "queue",
    "asyncio",
    "sqlite3",
    "email.utils",
    "html",
    "xml.etree.ElementTree",
    "zlib",
    "pickle",
]
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def stdlib_pairs(limit: int) -> list[dict[str, str]]:
    """(name, first docstring paragraph) pairs of the standard library: real text that ships with Python."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for mod_name in MODULES:
        mod = importlib.import_module(mod_name)
        for name, obj in sorted(vars(mod).items()):
            if (
                name.startswith("_")
                or not callable(obj)
                or (getattr(obj, "__module__", None) or "").split(".")[0] != mod_name.split(".")[0]
            ):
                continue
            doc = inspect.getdoc(obj) or ""
            para = " ".join(doc.split("\n\n")[0].split())
            if len(para) < 50 or para in seen:
                continue
            seen.add(para)
            out.append({"question": f"{mod_name}.{name}", "answer": para})
    return out[:limit] if len(out) >= limit else out


def spec_dict(bucket: str, endpoint: str, **training: Any) -> dict[str, Any]:
    return {
        "model": {"base": HUB_ID, "maxSeqLength": 64},
        "data": {
            "train": {
                "uri": f"s3://{bucket}/corpus/pairs.jsonl",
                "format": "pairs",
                "columns": {"anchor": "question", "positive": "answer"},
            },
            "eval": {"heldOutFraction": 0.15, "maxDistractors": 1000},
        },
        "training": {
            "loss": "MultipleNegativesRanking",
            "matryoshkaDims": [384, 128],
            "epochs": 1,
            "batchSize": 16,
            "learningRate": 1e-4,
            "checkpointSteps": 10,
            **training,
        },
        "evaluation": {"kValues": [1, 10], "primaryMetric": "ndcg@10", "batchSize": 64},
        "output": {"uri": f"s3://{bucket}/runs/"},
        "storage": {"endpoint": endpoint, "pathStyle": True},
        "resources": {"gpus": 0},
    }


def tiny_spec(bucket: str, endpoint: str, **training: Any) -> dict[str, Any]:
    """A quick run for the tests of resuming and of several processes: batch 8, 32 tokens, no Matryoshka."""
    spec = spec_dict(bucket, endpoint, **{"batchSize": 8, **training})
    spec["model"]["maxSeqLength"] = 32
    spec["training"]["matryoshkaDims"] = []
    return spec


def make_cfg(spec: dict[str, Any], work: Path, model_dir: Path, name: str = "t", uid: str = "uid-1") -> RunConfig:
    return build_run_config(
        namespace="ns",
        name=name,
        uid=uid,
        generation=1,
        spec=parse_spec(spec),
        settings=TrainerSettings(work_dir=str(work), metrics_port=0, model_cache_dir=str(model_dir)),
    )


env = environ  # the same helper `eft run` uses


def upload_pairs(s3: LocalS3, bucket: str, pairs: list[dict[str, str]], key: str = "corpus/pairs.jsonl") -> None:
    body = "".join(json.dumps(p) + "\n" for p in pairs).encode()
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def s3_json(s3: LocalS3, bucket: str, key: str) -> Any:
    """A JSON object the trainer wrote to S3 (a report, a manifest, a checkpoint marker)."""
    return json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(s3: LocalS3, bucket: str, prefix: str) -> list[str]:
    resp = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in resp.get("Contents", [])]


def download_prefix(s3: LocalS3, bucket: str, prefix: str, dest: Path) -> Path:
    """Every object under ``prefix`` into ``dest`` (keys relative to the prefix): a published run, locally."""
    for k in keys(s3, bucket, prefix):
        out = dest / k[len(prefix) :]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(s3.client().get_object(Bucket=bucket, Key=k)["Body"].read())
    return dest
