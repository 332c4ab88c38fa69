"""The table of EmbeddingFinetune cases that a real API server and ``eft validate`` must judge alike.

Each case is ``(id, document, expect)``: ``expect`` is None for a resource the API must accept, else the
field path the refusal must name. The table is built from four sources:

* the examples (all valid) and the hand-written files in ``invalid/`` (their ``# expect:`` line);
* every CEL rule, with passing and failing cases (which loss fits which format, Matryoshka order, ...);
* a walk over the CRD's schema: for every field a value outside its enum, below its minimum, above its
  maximum, over its maxLength or maxItems, against its pattern, and an unknown field in every object;
* what a real cluster showed: leading zeros, integers written as 32.0, negative and malformed quantities,
  generateName, names too long for a label value, toleration and nodeSelector rules of Pod validation.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from eft_api.schema import iter_fields

HERE = Path(__file__).parent
INVALID_DIR = HERE / "invalid"
EXAMPLES_DIR = HERE.parents[1] / "examples"

Case = tuple[str, dict[str, Any], str | None]


def resource(name: str = "t", **spec_changes: Any) -> dict[str, Any]:
    """A minimal valid resource; keyword ``a__b__c=value`` sets ``spec.a.b.c``."""
    spec: dict[str, Any] = {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": {"uri": "s3://bucket/train/", "format": "pairs"}},
        "output": {"uri": "s3://bucket/out/"},
        "resources": {"gpus": 0},
    }
    for dotted, value in spec_changes.items():
        node = spec
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = copy.deepcopy(value)
    return {
        "apiVersion": "finetune.eft.dev/v1alpha1",
        "kind": "EmbeddingFinetune",
        "metadata": {"name": name},
        "spec": spec,
    }


def _file_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(INVALID_DIR.glob("*.yaml")):
        m = re.search(r"^# expect: (.+)$", path.read_text(), re.M)
        assert m, f"{path.name} lacks a '# expect:' line"
        cases.append((f"file-{path.stem}", yaml.safe_load(path.read_text()), m.group(1).strip()))
    return cases


FITTING = {
    "pairs": ["MultipleNegativesRanking", "CachedMultipleNegativesRanking", "MultipleNegativesSymmetricRanking"],
    "triplets": ["MultipleNegativesRanking", "CachedMultipleNegativesRanking", "Triplet"],
    "scored-pairs": ["CoSENT", "AnglE", "CosineSimilarity"],
    "labeled-texts": ["BatchAllTriplet", "BatchHardTriplet", "BatchSemiHardTriplet"],
    "beir": ["MultipleNegativesRanking", "CachedMultipleNegativesRanking", "MultipleNegativesSymmetricRanking"],
}
ALL_LOSSES = sorted({loss for losses in FITTING.values() for loss in losses})


def _rule_cases() -> list[Case]:
    cases: list[Case] = [
        (
            f"loss-{fmt}-{loss}",
            resource(data__train__format=fmt, training__loss=loss),
            None if loss in FITTING[fmt] else "spec.training.loss",
        )
        for fmt in FITTING
        for loss in ALL_LOSSES
    ]
    r = resource
    cases += [
        ("dims-empty", r(training__matryoshkaDims=[]), None),
        ("dims-one", r(training__matryoshkaDims=[384]), None),
        ("dims-decreasing", r(training__matryoshkaDims=[768, 512, 64]), None),
        ("dims-increasing", r(training__matryoshkaDims=[64, 128]), "spec.training.matryoshkaDims"),
        ("dims-equal", r(training__matryoshkaDims=[128, 128]), "spec.training.matryoshkaDims"),
        ("dims-dip", r(training__matryoshkaDims=[384, 64, 128]), "spec.training.matryoshkaDims"),
        ("mining-pairs", r(training__hardNegatives={"enabled": True}), None),
        (
            "mining-labeled",
            r(
                data__train__format="labeled-texts",
                training__loss="BatchAllTriplet",
                training__hardNegatives={"enabled": True},
            ),
            "spec.training.hardNegatives.enabled",
        ),
        ("metric-k-listed", r(evaluation={"kValues": [1, 100], "primaryMetric": "recall@100"}), None),
        (
            "metric-k-unlisted",
            r(evaluation={"kValues": [1, 5], "primaryMetric": "mrr@10"}),
            "spec.evaluation.primaryMetric",
        ),
        (
            "metric-k-suffix-trap",
            r(evaluation={"kValues": [1, 10], "primaryMetric": "ndcg@100"}),
            "spec.evaluation.primaryMetric",
        ),
        ("metric-leading-zero", r(evaluation={"primaryMetric": "ndcg@010"}), "spec.evaluation.primaryMetric"),
        ("metric-k-zero", r(evaluation={"primaryMetric": "ndcg@0"}), "spec.evaluation.primaryMetric"),
        ("metric-no-k", r(evaluation={"primaryMetric": "ndcg"}), "spec.evaluation.primaryMetric"),
        ("gate-no-dimension", r(evaluation={"gate": {"minGain": 0.02}}), None),
        (
            "gate-dim-listed",
            r(training__matryoshkaDims=[384, 128], evaluation={"gate": {"minGain": 0, "dimension": 128}}),
            None,
        ),
        ("gate-dim-no-dims", r(evaluation={"gate": {"minGain": 0, "dimension": 768}}), None),
        (
            "gate-dim-unlisted",
            r(training__matryoshkaDims=[384, 128], evaluation={"gate": {"minGain": 0, "dimension": 256}}),
            "spec.evaluation.gate.dimension",
        ),
        ("method-full-default", r(training__method="full"), None),
        ("adapter-pairs", r(training__method="queryAdapter"), None),
        (
            "adapter-mlp-triplets",
            r(
                data__train__format="triplets",
                training__method="queryAdapter",
                training__adapter={"kind": "mlp", "hiddenDim": 512},
            ),
            None,
        ),
        (
            "adapter-beir-symmetric",
            r(
                data__train__format="beir",
                data__train__uri="s3://bkt/beir/",
                training__method="queryAdapter",
                training__loss="MultipleNegativesSymmetricRanking",
            ),
            None,
        ),
        (
            "adapter-unknown-kind",
            r(training__method="queryAdapter", training__adapter={"kind": "lora"}),
            "spec.training.adapter.kind",
        ),
        ("encoder-pairs", r(training__method="queryEncoder"), None),
        (
            "encoder-triplets-hard-negatives",
            r(
                data__train__format="triplets",
                training__method="queryEncoder",
                training__hardNegatives={"enabled": True, "count": 2},
                training__earlyStopping={"validationSplit": 0.2, "patience": 3},
            ),
            None,
        ),
        (
            "encoder-documents",
            documents(training__method="queryEncoder"),
            "spec.training.method",
        ),
        ("encoder-pretrain", r(training__method="queryEncoder", training__pretrain={}), "spec.training.pretrain"),
        (
            "adapter-low-rank-no-search",
            r(training__method="queryAdapter", training__adapter={"rank": 16, "learningRateSearch": False}),
            None,
        ),
        (
            "adapter-rank-zero",
            r(training__method="queryAdapter", training__adapter={"rank": 0}),
            "spec.training.adapter.rank",
        ),
        (
            "early-stopping-split-too-big",
            r(training__method="queryAdapter", training__earlyStopping={"validationSplit": 0.6}),
            "spec.training.earlyStopping.validationSplit",
        ),
        (
            "early-stopping-patience-zero",
            r(training__earlyStopping={"patience": 0}),
            "spec.training.earlyStopping.patience",
        ),
        ("method-unknown", r(training__method="lora"), "spec.training.method"),
        ("pretrain-defaults", r(training__pretrain={}), None),
        ("pretrain-one-gpu", r(training__pretrain={"method": "tsdae"}, resources={"gpus": 1}), None),
        (
            "pretrain-own-data",
            r(
                training__pretrain={
                    "epochs": 2,
                    "learningRate": 5e-5,
                    "batchSize": 16,
                    "maxSentences": 5000,
                    "deletionRatio": 0.5,
                    "data": {"uri": "s3://bucket/sentences/", "fileType": "csv", "columns": {"text": "body"}},
                }
            ),
            None,
        ),
        (
            "pretrain-scored-pairs",
            r(data__train__format="scored-pairs", training__loss="CoSENT", training__pretrain={}),
            None,
        ),
        ("pretrain-query-adapter", r(training__method="queryAdapter", training__pretrain={}), "spec.training.pretrain"),
        ("pretrain-two-gpus", r(training__pretrain={}, resources={"gpus": 2}), "spec.training.pretrain"),
        ("pretrain-two-nodes", r(training__pretrain={}, resources={"gpus": 1, "nodes": 2}), "spec.training.pretrain"),
        (
            "pretrain-data-no-uri",
            r(training__pretrain={"data": {"fileType": "csv"}}),
            "spec.training.pretrain.data.uri",
        ),
        ("beir-prefix", r(data__train__format="beir", data__train__uri="s3://bkt/beir/"), None),
        (
            "beir-file",
            r(data__train__format="beir", data__train__uri="s3://bkt/beir/corpus.jsonl"),
            "spec.data.train.uri",
        ),
    ]
    # What neither query-side method (queryAdapter, queryEncoder) trains on: the same refusal for both.
    cases += [
        (f"{tag}-{what}", r(**changes, training__method=method), field)
        for tag, method in (("adapter", "queryAdapter"), ("encoder", "queryEncoder"))
        for what, changes, field in [
            (
                "scored-pairs",
                {"data__train__format": "scored-pairs", "training__loss": "CoSENT"},
                "spec.training.method",
            ),
            (
                "labeled-texts",
                {"data__train__format": "labeled-texts", "training__loss": "BatchHardTriplet"},
                "spec.training.method",
            ),
            ("triplet-loss", {"data__train__format": "triplets", "training__loss": "Triplet"}, "spec.training.loss"),
        ]
    ]
    return cases + _documents_cases() + _distillation_cases() + _cross_encoder_cases()


TEACHER = {"base": "s3://bucket/models/teacher/"}


def distill(fmt: str = "pairs", **spec_changes: Any) -> dict[str, Any]:
    """A valid resource of method distillation (loss MSE, a teacher from S3) with changes."""
    changes: dict[str, Any] = {
        "data__train__format": fmt,
        "training__method": "distillation",
        "training__loss": "MSE",
        "training__teacher": TEACHER,
    }
    return resource(**{**changes, **spec_changes})


def _distillation_cases() -> list[Case]:
    """method distillation, its teacher, loss MSE and format parallel: what goes with what."""
    d, loss, teacher = distill, "spec.training.loss", "spec.training.teacher"
    cases: list[Case] = [(f"distill-{fmt}", distill(fmt), None) for fmt in [*FITTING, "parallel"]]
    cases += [
        ("distill-documents", documents(training__method="distillation", training__loss="MSE",
                                        training__teacher=TEACHER), None),
        ("distill-parallel-columns", d("parallel", data__train__columns={"source": "en", "translation": "de"}), None),
        ("distill-projection-pca", d(training__teacher={**TEACHER, "projection": "pca"}), None),
        ("distill-hub-teacher", d(training__teacher={"base": "sentence-transformers/all-mpnet-base-v2",
                                                     "revision": "main", "maxSeqLength": 256}), None),
        ("distill-matryoshka", d(training__matryoshkaDims=[384, 128]), None),
        ("distill-default-loss", d(training__loss="MultipleNegativesRanking"), loss),
        ("distill-ranking-loss-parallel", d("parallel", training__loss="CoSENT"), loss),
        ("distill-no-teacher", resource(training__method="distillation", training__loss="MSE"), teacher),
        ("teacher-without-distillation", resource(training__teacher=TEACHER), teacher),
        ("mse-without-distillation", resource(training__loss="MSE"), loss),
        ("mse-scored-pairs-full", resource(data__train__format="scored-pairs", training__loss="MSE"), loss),
        ("mse-query-adapter", resource(training__method="queryAdapter", training__loss="MSE"), loss),
        ("parallel-full", resource(data__train__format="parallel"), "spec.data.train.format"),
        ("parallel-full-mse", resource(data__train__format="parallel", training__loss="MSE"), "spec.data.train.format"),
        ("parallel-adapter", resource(data__train__format="parallel", training__method="queryAdapter"),
         "spec.data.train.format"),
        ("parallel-mining", d("parallel", training__hardNegatives={"enabled": True}),
         "spec.training.hardNegatives.enabled"),
        ("teacher-no-base", d(training__teacher={"projection": "pca"}), "spec.training.teacher.base"),
        ("teacher-bad-projection", d(training__teacher={**TEACHER, "projection": "dense"}),
         "spec.training.teacher.projection"),
    ]  # fmt: skip
    return cases


CE = {"model": "cross-encoder/ms-marco-MiniLM-L6-v2"}


def _cross_encoder_cases() -> list[Case]:
    """training.method gpl, training.silverLabels and the cross-encoder both need."""
    r, d = resource, documents
    gpl = {"training__method": "gpl", "training__loss": "MarginMSE", "training__crossEncoder": CE}
    silver = {"training__silverLabels": {}, "training__loss": "CoSENT", "training__crossEncoder": CE}
    method, loss, ce, sl = (
        "spec.training.method",
        "spec.training.loss",
        "spec.training.crossEncoder",
        "spec.training.silverLabels",
    )
    return [
        ("gpl-pairs", r(**gpl), None),
        ("gpl-documents", d(**gpl), None),
        (
            "gpl-s3-cross-encoder-mining",
            r(
                **{**gpl, "training__crossEncoder": {"model": "s3://models/ce/", "maxLength": 256, "batchSize": 64}},
                training__hardNegatives={"count": 1, "rangeMax": 20},
            ),
            None,
        ),
        ("gpl-triplets", r(data__train__format="triplets", **gpl), method),
        ("gpl-scored-pairs", r(data__train__format="scored-pairs", **gpl), method),
        ("gpl-beir", r(data__train__format="beir", data__train__uri="s3://bkt/beir/", **gpl), method),
        ("gpl-mnrl", r(**{**gpl, "training__loss": "MultipleNegativesRanking"}), loss),
        ("gpl-no-cross-encoder", r(training__method="gpl", training__loss="MarginMSE"), ce),
        ("margin-mse-full", r(training__loss="MarginMSE"), loss),
        ("margin-mse-adapter", r(training__method="queryAdapter", training__loss="MarginMSE"), loss),
        ("cross-encoder-full", r(training__crossEncoder=CE), ce),
        (
            "cross-encoder-no-model",
            r(**{**gpl, "training__crossEncoder": {"revision": "main"}}),
            "spec.training.crossEncoder.model",
        ),
        ("silver-pairs-cosent", r(**silver), None),
        ("silver-documents-angle", d(**{**silver, "training__loss": "AnglE"}), None),
        (
            "silver-mined-cosine",
            r(
                **{**silver, "training__loss": "CosineSimilarity", "training__silverLabels": {"negativesPerPair": 3}},
                training__hardNegatives={"enabled": True},
            ),
            None,
        ),
        ("silver-mnrl", r(**{**silver, "training__loss": "MultipleNegativesRanking"}), loss),
        ("silver-scored-pairs", r(data__train__format="scored-pairs", **silver), sl),
        ("silver-triplets", r(data__train__format="triplets", **silver), sl),
        ("silver-gpl", r(**{**silver, **gpl}), sl),
        ("silver-no-cross-encoder", r(training__silverLabels={}, training__loss="CoSENT"), ce),
    ]


OFFLINE = {"inverseCloze": {}, "titles": {}}
LLM = {"endpoint": "http://vllm.llm.svc:8000/v1", "model": "qwen2.5-7b-instruct"}


def documents(generate: dict[str, Any] | None = None, **spec_changes: Any) -> dict[str, Any]:
    """A valid resource of format documents (offline generators) with changes."""
    gen = {"generator": OFFLINE} if generate is None else generate
    return resource(
        data__train__format="documents", data__train__uri="s3://bucket/docs/", data__generate=gen, **spec_changes
    )


def _documents_cases() -> list[Case]:
    """spec.data.generate and format documents: what depends on what."""
    d, g = documents, "spec.data.generate"
    llm_full = {
        **LLM,
        "apiKeySecret": {"name": "llm-key", "key": "token"},
        "promptConfigMap": {"name": "prompts"},
        "temperature": 0,
        "maxConcurrency": 32,
    }
    cases: list[Case] = [
        (f"loss-documents-{loss}", d(training__loss=loss), None if loss in FITTING["pairs"] else "spec.training.loss")
        for loss in ALL_LOSSES
    ]
    cases += [
        ("docs-offline", d(), None),
        ("docs-titles-only", d({"generator": {"titles": {"withDocumentTitle": False}}}), None),
        ("docs-llm", d({"generator": {"llm": llm_full}, "queriesPerChunk": 3, "maxChunks": 500}), None),
        ("docs-seq2seq", d({"generator": {"seq2seq": {"model": "doc2query/msmarco-t5-base-v1"}}}), None),
        ("docs-eval-uri", d(data__eval={"uri": "s3://bucket/faq/pairs.jsonl"}), None),
        ("docs-mining", d(training__hardNegatives={"enabled": True}), None),
        ("docs-pretrain", d(training__pretrain={"maxSentences": 1000}), None),
        ("docs-document-type", d(data__train__documentType="pdf"), None),
        ("storage-endpoint-user-info", resource(storage={"endpoint": "http://key:secret@minio:9000"}),
         "spec.storage.endpoint"),
        ("docs-document-type-pairs", r_pairs_with(documentType="html"), "spec.data.train.documentType"),
        ("docs-no-generate", resource(data__train__format="documents"), g),
        ("pairs-with-generate", resource(data__generate={"generator": OFFLINE}), g),
        ("docs-empty-generator", d({"generator": {}}), f"{g}.generator"),
        ("docs-no-generator", d({}), f"{g}.generator"),
        ("docs-overlap-equals-size", d({"generator": OFFLINE, "chunking": {"size": 64, "overlap": 64}}),
         f"{g}.chunking.overlap"),
        ("docs-default-overlap-over-size", d({"generator": OFFLINE, "chunking": {"size": 16}}), f"{g}.chunking.overlap"),
        ("docs-chunk-fits-model", d({"generator": OFFLINE, "chunking": {"size": 128}}, model__maxSeqLength=128), None),
        ("docs-chunk-over-model", d({"generator": OFFLINE, "chunking": {"size": 256}}, model__maxSeqLength=128),
         f"{g}.chunking.size"),
        ("docs-limits", d({"generator": OFFLINE, "limits": {"maxFileBytes": 1 << 30, "maxTotalBytes": 1 << 40}}), None),
        ("docs-limits-file-only", d({"generator": OFFLINE, "limits": {"maxFileBytes": 65536}}), None),
        ("docs-limits-file-over-total", d({"generator": OFFLINE, "limits": {"maxFileBytes": 1 << 20, "maxTotalBytes": 4096}}),
         f"{g}.limits.maxFileBytes"),
        ("docs-limits-file-over-default-total", d({"generator": OFFLINE, "limits": {"maxFileBytes": 1 << 30}}), None),
        ("docs-limits-file-too-small", d({"generator": OFFLINE, "limits": {"maxFileBytes": 10}}), f"{g}.limits.maxFileBytes"),
        ("docs-limits-file-too-large", d({"generator": OFFLINE, "limits": {"maxFileBytes": (1 << 30) + 1}}),
         f"{g}.limits.maxFileBytes"),
        ("docs-limits-total-too-large", d({"generator": OFFLINE, "limits": {"maxTotalBytes": (1 << 40) + 1}}),
         f"{g}.limits.maxTotalBytes"),
        ("docs-limits-string", d({"generator": OFFLINE, "limits": {"maxFileBytes": "8Mi"}}), f"{g}.limits.maxFileBytes"),
        ("docs-llm-no-model", d({"generator": {"llm": {"endpoint": LLM["endpoint"]}}}), f"{g}.generator.llm.model"),
        ("docs-llm-bad-endpoint", d({"generator": {"llm": {**LLM, "endpoint": "vllm:8000"}}}),
         f"{g}.generator.llm.endpoint"),
        ("docs-llm-user-info", d({"generator": {"llm": {**LLM, "endpoint": "https://user:pass@api.example.com/v1"}}}),
         f"{g}.generator.llm.endpoint"),
        ("docs-llm-secret-other-namespace", d({"generator": {"llm": {**LLM, "apiKeySecret": {"name": "ns/key"}}}}),
         f"{g}.generator.llm.apiKeySecret.name"),
        ("docs-llm-secret-namespace-field",
         d({"generator": {"llm": {**LLM, "apiKeySecret": {"name": "k", "namespace": "other"}}}}),
         f"{g}.generator.llm.apiKeySecret.namespace"),
        ("docs-round-trip", d({"generator": OFFLINE, "filter": {"roundTrip": {"enabled": True, "topK": 3}}}), None),
        ("docs-easiness", d({"generator": OFFLINE, "filter": {"easiness": {"dropFraction": 0.1}}}), None),
        ("docs-easiness-all", d({"generator": OFFLINE, "filter": {"easiness": {"dropFraction": 1}}}),
         f"{g}.filter.easiness.dropFraction"),
        ("docs-round-trip-top-k-zero", d({"generator": OFFLINE, "filter": {"roundTrip": {"enabled": True, "topK": 0}}}),
         f"{g}.filter.roundTrip.topK"),
        ("docs-round-trip-enabled-string", d({"generator": OFFLINE, "filter": {"roundTrip": {"enabled": "yes"}}}),
         f"{g}.filter.roundTrip.enabled"),
    ]  # fmt: skip
    return cases


def r_pairs_with(**train: Any) -> dict[str, Any]:
    doc = resource()
    doc["spec"]["data"]["train"].update(train)
    return doc


# Parents that need required fields before a child can be set (keyed by the schema path).
SEEDS: dict[str, Any] = {
    "spec.evaluation.gate": {"minGain": 0},
    "spec.evaluation.guards[]": {"name": "faq", "uri": "s3://bucket/faq.jsonl"},
    "spec.storage.credentialsSecret": {"name": "s3"},
    "spec.scheduling.tolerations[]": {"key": "gpu", "operator": "Exists"},
    "spec.data.generate": {"generator": {"titles": {}}},
    "spec.data.generate.generator.llm": {"endpoint": "http://llm:8000/v1", "model": "m"},
    "spec.data.generate.generator.llm.apiKeySecret": {"name": "llm-key"},
    "spec.data.generate.generator.llm.promptConfigMap": {"name": "prompts"},
    "spec.data.generate.generator.seq2seq": {"model": "doc2query/t5"},
    "spec.training.teacher": {"base": "s3://bucket/models/teacher/"},
    "spec.training.crossEncoder": {"model": "cross-encoder/ms-marco-MiniLM-L6-v2"},
    "spec.training.pretrain.data": {"uri": "s3://bucket/sentences.jsonl"},
    "spec.evaluation.baselines[]": {"name": "b", "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"}},
    "spec.evaluation.baselines[].endpoint": {"url": "http://emb:8000/v1", "model": "m"},
    "spec.evaluation.baselines[].endpoint.apiKeySecret": {"name": "emb-key"},
    "spec.output.registry": {"mlflow": {"trackingUri": "http://mlflow:5000", "modelName": "search"}},
    "spec.output.registry.mlflow": {"trackingUri": "http://mlflow:5000", "modelName": "search"},
    "spec.output.registry.mlflow.credentialsSecret": {"name": "mlflow"},
    "spec.notify[]": {"url": "http://hooks:8080/eft"},
}


def _retrain_cases() -> list[Case]:
    """spec.retrain (cron, time zone, interval), spec.notify and spec.output.registry (issue 22)."""
    r, s, i = resource, "spec.retrain.schedule", "spec.retrain.onDataChange.checkInterval"
    mlflow = {"trackingUri": "http://mlflow:5000", "modelName": "search"}
    return [
        ("retrain-nightly", r(retrain={"schedule": "0 2 * * *", "timeZone": "Europe/Berlin"}), None),
        ("retrain-steps-lists", r(retrain={"schedule": "*/15 8-18 1,15 jan-jun MON-FRI"}), None),
        ("retrain-macro", r(retrain={"schedule": "@daily", "concurrencyPolicy": "Replace"}), None),
        ("retrain-deadline", r(retrain={"schedule": "@hourly", "startingDeadlineSeconds": 300}), None),
        ("retrain-cron-words", r(retrain={"schedule": "every night"}), s),
        ("retrain-cron-minute-60", r(retrain={"schedule": "60 2 * * *"}), s),
        ("retrain-cron-hour-24", r(retrain={"schedule": "0 24 * * *"}), s),
        ("retrain-cron-four-fields", r(retrain={"schedule": "0 2 * *"}), s),
        ("retrain-cron-six-fields", r(retrain={"schedule": "0 0 2 * * *"}), s),
        ("retrain-cron-bad-macro", r(retrain={"schedule": "@fortnightly"}), s),
        ("retrain-tz-spaces", r(retrain={"schedule": "@daily", "timeZone": "Europe Berlin"}), "spec.retrain.timeZone"),
        ("retrain-data-15m", r(retrain={"onDataChange": {"enabled": True, "checkInterval": "15m"}}), None),
        ("retrain-data-1h30m", r(retrain={"onDataChange": {"enabled": True, "checkInterval": "1h30m"}}), None),
        ("retrain-data-30s", r(retrain={"onDataChange": {"enabled": True, "checkInterval": "30s"}}), i),
        ("retrain-data-too-long", r(retrain={"onDataChange": {"checkInterval": "721h"}}), i),
        ("retrain-data-days", r(retrain={"onDataChange": {"checkInterval": "1d"}}), i),
        ("notify-ok", r(notify=[{"url": "https://hooks.example.com/eft", "events": ["RunSucceeded"]}]), None),
        ("notify-no-url", r(notify=[{"events": ["RunFailed"]}]), "spec.notify[0].url"),
        ("notify-empty-events", r(notify=[{"url": "http://h/", "events": []}]), "spec.notify[0].events"),
        ("registry-ok", r(output={"uri": "s3://bucket/out/", "registry": {"mlflow": {**mlflow, "alias": "prod"}}}), None),
        ("registry-alias-latest", r(output={"uri": "s3://bucket/out/", "registry": {"mlflow": {**mlflow, "alias": "latest"}}}),
         "spec.output.registry.mlflow.alias"),
        ("registry-alias-v3", r(output={"uri": "s3://bucket/out/", "registry": {"mlflow": {**mlflow, "alias": "v3"}}}),
         "spec.output.registry.mlflow.alias"),
        ("registry-no-name", r(output={"uri": "s3://bucket/out/", "registry": {"mlflow": {"trackingUri": "http://m/"}}}),
         "spec.output.registry.mlflow.modelName"),
    ]  # fmt: skip


def _set(doc: dict[str, Any], path: str, value: Any) -> str:
    """Set the field at a schema path (``spec.a.b[].c``) in ``doc``; returns the concrete path (``[0]``)."""
    parts = path.split(".")
    node: Any = doc[parts[0]]
    concrete = [parts[0]]
    for depth, part in enumerate(parts[1:], start=1):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if part.endswith("[]"):
            key = part[:-2]
            if last:
                node[key] = value
                concrete.append(key)
                break
            items = node.setdefault(key, [])
            if not items:
                items.append(copy.deepcopy(SEEDS.get(here, {})))
            node = items[0]
            concrete.append(f"{key}[0]")
        elif last:
            node[part] = value
            concrete.append(part)
        else:
            if part not in node:
                node[part] = copy.deepcopy(SEEDS.get(here, {}))
            node = node[part]
            concrete.append(part)
    return ".".join(concrete).replace(".[", "[")


def _schema_cases() -> list[Case]:
    cases: list[Case] = []

    def case(tag: str, path: str, value: Any) -> None:
        doc = resource()
        where = _set(doc, path, value)
        cases.append((f"{tag}-{path.removeprefix('spec.')}", doc, where))

    for path, node in iter_fields():
        if "enum" in node:
            case("enum", path, "NotInTheEnum")
        if node.get("type") in ("integer", "number"):
            if "minimum" in node:
                below = node["minimum"] if node.get("exclusiveMinimum") else node["minimum"] - 1
                case("below-min", path, below)
            if "maximum" in node:
                case("above-max", path, node["maximum"] + 1)
            case("wrong-type", path, "12")
        if node.get("type") == "integer":
            case("fraction", path, 2.5)
        if node.get("type") == "string" and "enum" not in node:
            if "pattern" in node:
                case("pattern", path, "Not Valid!")
            if "maxLength" in node:
                case("max-length", path, "a" * (node["maxLength"] + 1))
            if node.get("minLength"):
                case("empty", path, "")
            case("wrong-type", path, 7)
        if node.get("type") == "boolean":
            case("wrong-type", path, "true")
        if node.get("type") == "array" and "maxItems" in node:
            item = node["items"]
            sample = SEEDS.get(f"{path}[]") or (8 if item.get("type") == "integer" else "x")
            case("max-items", path, [sample] * (node["maxItems"] + 1))
        if node.get("type") == "array" and "properties" in node.get("items", {}):
            doc = resource()
            where = _set(doc, f"{path}[].bogusField", 1)
            cases.append((f"unknown-field-{path.removeprefix('spec.')}-item", doc, where))
        if node.get("type") == "object" and "properties" in node:
            doc = resource()
            where = _set(doc, f"{path}.bogusField", 1)
            cases.append((f"unknown-field-{path.removeprefix('spec.')}", doc, where))
    return cases


def _cluster_cases() -> list[Case]:
    """What a real cluster showed, and what Pod validation refuses in the children."""
    r = resource
    quantity_ok = ["4", "500m", "1.5", "512Ki", "16Gi", "1e3", "100M", 4]
    quantity_bad = ["-1", "16ki", "1.2.3", "", "0", "0.0", "4 cores", -1, 0, 1.5]
    cases: list[Case] = []
    for field in ("cpu", "memory", "workDirSize"):
        cases += [(f"quantity-{field}-{v!r}", r(**{f"resources__{field}": v}), None) for v in quantity_ok]
        cases += [
            (f"quantity-{field}-bad-{v!r}", r(**{f"resources__{field}": v}), f"spec.resources.{field}")
            for v in quantity_bad
        ]
    cases += [
        ("integral-float-batch", r(training__batchSize=32.0), None),
        ("integral-float-gpus", r(resources__gpus=0.0), None),
        ("integral-float-nodes", r(resources__nodes=2.0), None),
        ("multi-gpu", r(resources__gpus=8), None),
        ("multi-node-cpu", r(resources__nodes=4), None),
        ("multi-node-gpus", r(resources__gpus=8, resources__nodes=64), None),
        ("multi-node-name-63", r(name="a" * 63, resources__nodes=64), None),  # the Job name leaves room for -63
        ("multi-node-dotted-name", r(name="team.v2.run", resources__nodes=2), None),  # the Service is a DNS label
        ("nodes-zero", r(resources__nodes=0), "spec.resources.nodes"),
        ("nodes-too-many", r(resources__nodes=65), "spec.resources.nodes"),
        ("nodes-fraction", r(resources__nodes=1.5), "spec.resources.nodes"),
        ("int-for-number-epochs", r(training__epochs=2), None),
        ("fraction-batch", r(training__batchSize=32.5), "spec.training.batchSize"),
        ("name-63", r(name="a" * 63), None),
        ("name-64", r(name="a" * 64), "metadata.name"),
        ("name-dots", r(name="team.v2.run"), None),
        ("name-upper", r(name="Demo"), "metadata.name"),
        ("metadata-unknown", {**r(), "metadata": {"name": "t", "nickname": "x"}}, "metadata.nickname"),
        ("label-bad-value", {**r(), "metadata": {"name": "t", "labels": {"team": "a b"}}}, "metadata.labels"),
        ("label-ok", {**r(), "metadata": {"name": "t", "labels": {"app.kubernetes.io/part-of": "search"}}}, None),
        ("top-level-unknown", {**r(), "extra": 1}, "extra"),
        ("generate-name", {**r(), "metadata": {"generateName": "nightly-"}}, None),
        ("generate-name-long", {**r(), "metadata": {"generateName": "a" * 100}}, None),  # the server keeps 58
        ("generate-name-upper", {**r(), "metadata": {"generateName": "Nightly-"}}, "metadata.generateName"),
    ]
    tol = "spec.scheduling.tolerations[0]"
    tolerations: list[tuple[str, dict[str, Any], str | None]] = [
        ("exists-no-key", {"operator": "Exists"}, None),
        ("equal-value", {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}, None),
        ("no-operator", {"key": "gpu", "value": "a"}, None),
        ("exists-with-value", {"key": "gpu", "operator": "Exists", "value": "true"}, f"{tol}.value"),
        ("no-key-equal", {"operator": "Equal", "value": "x"}, f"{tol}.operator"),
        ("no-key-no-operator", {"effect": "NoSchedule"}, f"{tol}.operator"),
        ("seconds-noexecute", {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}, None),
        ("seconds-noschedule", {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60},
         f"{tol}.tolerationSeconds"),
        ("bad-key", {"key": "bad key!", "operator": "Exists"}, f"{tol}.key"),
        ("bad-value", {"key": "k", "operator": "Equal", "value": "a b"}, f"{tol}.value"),
        ("long-value", {"key": "k", "operator": "Equal", "value": "v" * 64}, f"{tol}.value"),
    ]  # fmt: skip
    cases += [(f"toleration-{n}", r(scheduling__tolerations=[t]), e) for n, t, e in tolerations]
    ns = "spec.scheduling.nodeSelector"
    selectors: list[tuple[str, dict[str, str], str | None]] = [
        ("ok", {"kubernetes.io/arch": "amd64", "gpu": "a100", "empty": ""}, None),
        ("bad-key", {"bad key!": "x"}, ns),
        ("two-slashes", {"a/b/c": "x"}, ns),
        ("long-name", {"n" * 64: "x"}, ns),
        ("long-prefix", {"p" * 254 + "/n": "x"}, ns),
        ("bad-value", {"gpu": "a b"}, f"{ns}.gpu"),
        ("long-value", {"gpu": "v" * 64}, f"{ns}.gpu"),
    ]
    cases += [(f"node-selector-{n}", r(scheduling__nodeSelector=s), e) for n, s, e in selectors]
    g = "spec.evaluation.guards"
    guard = {"name": "faq", "uri": "s3://bucket/faq.jsonl", "maxDrop": 0.01}
    cases += [
        ("guard-ok", r(evaluation={"guards": [guard]}), None),
        ("guard-beir", r(evaluation={"guards": [{"name": "b", "uri": "s3://bkt/beir/", "format": "beir"}]}), None),
        ("guard-beir-file", r(evaluation={"guards": [{"name": "b", "uri": "s3://bkt/c.jsonl", "format": "beir"}]}),
         f"{g}[0].uri"),
        ("guard-duplicate", r(evaluation={"guards": [guard, {**guard, "uri": "s3://bucket/other.jsonl"}]}), f"{g}[1]"),
        ("guard-no-uri", r(evaluation={"guards": [{"name": "faq"}]}), f"{g}[0].uri"),
        ("guard-format-triplets", r(evaluation={"guards": [{**guard, "format": "triplets"}]}), f"{g}[0].format"),
    ]  # fmt: skip
    return cases + _evidence_cases()


def _evidence_cases() -> list[Case]:
    """Baselines, gate.mustBeat and decideBy, training.merge."""
    r = resource
    b = "spec.evaluation.baselines"
    model = {"name": "mini", "model": {"base": "sentence-transformers/all-MiniLM-L6-v2", "maxSeqLength": 64}}
    endpoint = {
        "name": "api",
        "endpoint": {
            "url": "https://emb.example/v1",
            "model": "text-embedding-3-small",
            "apiKeySecret": {"name": "emb-key"},
            "dimensions": 256,
        },
    }
    gate = {"minGain": 0, "mustBeat": ["mini", "api"], "decideBy": "ciLower"}
    return [
        ("baselines-ok", r(evaluation={"baselines": [model, endpoint], "gate": gate}), None),
        ("baselines-neither", r(evaluation={"baselines": [{"name": "x"}]}), f"{b}[0]"),
        ("baselines-both", r(evaluation={"baselines": [{**model, "endpoint": endpoint["endpoint"]}]}), f"{b}[0]"),
        ("baselines-duplicate", r(evaluation={"baselines": [model, {**endpoint, "name": "mini"}]}), f"{b}[1]"),
        ("baselines-user-info",
         r(evaluation={"baselines": [{"name": "x", "endpoint": {"url": "https://u:p@emb.example/v1", "model": "m"}}]}),
         f"{b}[0].endpoint.url"),
        ("baselines-user-only",
         r(evaluation={"baselines": [{"name": "x", "endpoint": {"url": "http://key@emb/v1", "model": "m"}}]}),
         f"{b}[0].endpoint.url"),
        ("baselines-at-in-path",  # no @ anywhere, as for every endpoint of the spec (the platform policy's rule)
         r(evaluation={"baselines": [{"name": "x", "endpoint": {"url": "http://emb/v1/a@b", "model": "m"}}]}),
         f"{b}[0].endpoint.url"),
        ("must-beat-unknown", r(evaluation={"baselines": [model], "gate": {"minGain": 0, "mustBeat": ["api"]}}),
         "spec.evaluation.gate.mustBeat"),
        ("must-beat-no-baselines", r(evaluation={"gate": {"minGain": 0, "mustBeat": ["api"]}}),
         "spec.evaluation.gate.mustBeat"),
        ("merge-ok", r(training={"merge": {"enabled": True, "ratios": [0.25, 0.5, 1]}}), None),
        ("merge-search", r(training={"merge": {"enabled": True}}), None),
        ("merge-ratio-zero", r(training={"merge": {"enabled": True, "ratios": [0]}}), "spec.training.merge.ratios[0]"),
    ]  # fmt: skip


def _example_cases() -> list[Case]:
    return [(f"example-{p.stem}", yaml.safe_load(p.read_text()), None) for p in sorted(EXAMPLES_DIR.glob("*.yaml"))]


def all_cases() -> list[Case]:
    cases = _example_cases() + _file_cases() + _rule_cases() + _schema_cases() + _cluster_cases() + _retrain_cases()
    ids = [c[0] for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, duplicates
    return cases


CASES = all_cases()
